#!/usr/bin/env bash
# The whole benchmark suite, one command: peers, stages, memory/threads/cold start, then the plot.
# Usage: benchmarks/run_all.sh [DATA_FOLDER]   (default: generate 2M + 200k rows into bench-out/data)
# Needs the bench extra: .venv/bin/pip install -e ".[bench]"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ $# -ge 1 ]; then DATA=$1; "$PY" benchmarks/bench_peers.py --data "$DATA"
else DATA=bench-out/data; "$PY" benchmarks/bench_peers.py; fi  # generates into bench-out/data
"$PY" benchmarks/bench_stages.py --data "$DATA"
"$PY" benchmarks/bench_scale.py --data "$DATA"
"$PY" benchmarks/plot_results.py
echo "tables above; JSON in bench-out/, figure in benchmarks/results.png"
