#!/usr/bin/env bash
# Set up .venv, install fastada with its test extras and run the whole test suite.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "test"
exec .venv/bin/python -m pytest "$@"
