"""Memory against rows, thread scaling, and cold start: each measured in fresh processes.

Usage:  python benchmarks/bench_scale.py [--data FOLDER] [--rows 2000000] [--repeat 3]

- Memory: peak RSS of `fastada train` on N rows and on 10 N rows (the same file listed ten times,
  so nothing but the row count changes). Streaming means the two are within 10%.
- Threads: end-to-end train rows/s for 1, 2, ... Hogwild threads up to the core count (the
  remaining cores read and hash), and test logloss, so Hogwild's quality is seen with its speed.
- Cold start: `fastada train` on a 1,000-row file with an empty Numba cache (every kernel
  compiles), then again (kernels load from the cache), and `python -c "import fastada"`.
Writes OUT/scale.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
from machine import describe as describe_machine


def run(argv, env=None) -> tuple[float, str]:
    """(seconds, stdout) of a child process."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return seconds, proc.stdout


def peak_rss(argv) -> float:
    """Peak RSS (MiB) of ``argv`` run alone, measured by a wrapper process of its own."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a folder from `fastada gen` (default: generate into OUT/data)")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = args.data or os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data, "train.parquet")):
        from fastada.synth import generate
        generate(data, rows=args.rows, test_rows=200_000, seed=0)
    train = os.path.join(data, "train.parquet")
    test = os.path.join(data, "test.parquet")
    rows = pq.ParquetFile(train).metadata.num_rows
    fastada = [sys.executable, "-m", "fastada.cli"]
    cores = os.cpu_count() or 1
    work = tempfile.mkdtemp(prefix="fastada-scale-")
    model = os.path.join(work, "m.fastada")
    report = {"date": datetime.date.today().isoformat(),
              "machine": describe_machine(), "rows": rows}

    # memory: N rows vs 10 N rows (the file ten times)
    ten = os.path.join(work, "ten")
    os.mkdir(ten)
    for i in range(10):
        os.symlink(os.path.abspath(train), os.path.join(ten, f"part-{i}.parquet"))
    base = ["--model", model, "--bits", str(args.bits), "--quiet"]
    report["peak_rss_mib"] = {str(rows): peak_rss(fastada + ["train", train] + base),
                              str(10 * rows): peak_rss(fastada + ["train", ten] + base)}

    # threads
    report["threads"] = {}
    for t in sorted({1, 2, 4, 8, 16, cores}):
        if t > cores:
            continue
        rates = []
        for _ in range(args.repeat):
            _, out = run(fastada + ["train", train, "--model", model, "--bits", str(args.bits),
                                       "--threads", str(t), "--quiet"])
            rates.append(int(out.split("(")[1].split(" rows/s")[0].replace(",", "")))
        _, out = run(fastada + ["eval", "--model", model, test, "--json"])
        report["threads"][t] = {"rows_per_second": statistics.median(rates),
                                "test_logloss": json.loads(out)["logloss"]}

    # cold start
    tiny = os.path.join(work, "tiny.parquet")
    pq.write_table(pq.read_table(train).slice(0, 1000), tiny)
    cache = os.path.join(work, "numba-cache")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    tiny_train = fastada + ["train", tiny, "--model", model, "--bits", "20", "--quiet"]
    first, _ = run(tiny_train, env)
    second = statistics.median(run(tiny_train, env)[0] for _ in range(args.repeat))
    imports = statistics.median(run([sys.executable, "-c", "import fastada"], env)[0] for _ in range(args.repeat))
    report["cold_start_seconds"] = {"first_train_compiling": round(first, 2),
                                    "second_train_cached": round(second, 2), "import_fastada": round(imports, 2)}

    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"{report['date']}, {report['machine']}, {rows:,} rows, 2^{args.bits} slots")
    mem = report["peak_rss_mib"]
    a, b = mem[str(rows)], mem[str(10 * rows)]
    print(f"\n| rows | peak RSS (MiB) |\n|---|---|\n| {rows:,} | {a:,.0f} |\n| {10 * rows:,} | {b:,.0f} |")
    print(f"ratio {b / a:.3f}")
    print("\n| Hogwild threads | train rows/s (end to end) | vs 1 thread | test logloss |\n|---|---|---|---|")
    one = report["threads"][1]["rows_per_second"]
    for t, r in report["threads"].items():
        print(f"| {t} | {r['rows_per_second']:,.0f} | {r['rows_per_second'] / one:.2f}x | {r['test_logloss']:.4f} |")
    c = report["cold_start_seconds"]
    print(f"\ncold start: first `fastada train` on 1,000 rows {c['first_train_compiling']} s (compiling), "
          f"second {c['second_train_cached']} s (cached); `import fastada` {c['import_fastada']} s")


if __name__ == "__main__":
    main()
