#!/usr/bin/env bash
# The many-core measurement behind the README's scaling table: generate the two benchmark data
# sets in parallel, run benchmarks/bench_threads.py on them, and (where bench-before/ holds an
# older fastada, e.g. `git archive 6774ea7 fastada | tar -x -C bench-before`) the same readers and
# end-to-end measures with it, side by side on the same machine and data.
# Needs only numba, numpy and pyarrow: runs from a checkout with no install and no network.
#   ROWS=12000000 benchmarks/bench_threads_device.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-out}
rows=${ROWS:-12000000}
procs=${PROCESSES:-$(nproc)}
py=${PYTHON:-python3}
mkdir -p "$out" "${DATA:-/tmp/fastada-bench}"
export PYTHONPATH=. NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/fastada-numba-cache}
{
  echo "== machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; $(lscpu | grep 'Model name' | sed 's/  */ /g')"
  "$py" -c "import numba, numpy, pyarrow, sys; print('python', sys.version.split()[0], 'numba', numba.__version__, 'numpy', numpy.__version__, 'pyarrow', pyarrow.__version__)"
  start=$(date +%s)
  "$py" benchmarks/bench_threads.py --out "${DATA:-/tmp/fastada-bench}" --rows "$rows" --processes "$procs" \
      --stages none --json "$out/generate.json" >/dev/null
  echo "== generated 2 x $rows rows in $(( $(date +%s) - start )) s"
  data=$(ls -d "${DATA:-/tmp/fastada-bench}"/threads-*-"$rows")
  "$py" benchmarks/bench_threads.py --data $data --workers "${WORKERS:-1,2,4,8,12,16}" \
      --kernel-rows "${KERNEL_ROWS:-2000000}" --reader-rows "${READER_ROWS:-8000000}" --repeat 3 --io-repeat 1 \
      --json "$out/threads.json"
  if [ -d bench-before/fastada ]; then
    echo "== the same with fastada before this work (bench-before/)"
    PYTHONPATH=bench-before "$py" benchmarks/bench_threads.py --data $(echo $data | tr ' ' '\n' | grep zstd) \
        --stages readers,end_to_end --threads "${BEFORE_THREADS:-1,16}" --workers "${BEFORE_WORKERS:-1,4,16}" \
        --reader-rows "${READER_ROWS:-8000000}" --io-repeat 1 --json "$out/threads-before.json"
  fi
} 2>&1 | grep --line-buffered -v "NumbaPerformanceWarning\|^  *warn\|^$" | tee "$out/log.txt"
