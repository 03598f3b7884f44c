#!/usr/bin/env bash
# Install bnlab and run the main job: the circles study over 10 seeds.
source "$(dirname "$0")/env.sh"
pip_install -e .
"$VENV/bin/bnlab" run circles --seeds 10 --out runs/circles "$@"
