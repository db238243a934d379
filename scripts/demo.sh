#!/usr/bin/env bash
# Set up .venv, install fastada and run the main job: generate data, train, evaluate, print metrics.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" ""
exec .venv/bin/fastada demo "$@"
