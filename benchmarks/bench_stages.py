"""Each stage of fastada's pipeline alone, against its ceiling, on the same data in one process.

Usage:  python benchmarks/bench_stages.py [--data FOLDER] [--rows 1000000] [--repeat 5]

Stages, medians over --repeat runs (rows/s):
  decode      Parquet -> Arrow batches (projected columns, strings dictionary-read), nothing else
  hash        Arrow batches (in memory) -> hashed feature blocks (fastada.features.Featurizer)
  learn       the Hogwild Adagrad kernel over in-memory blocks, 1 thread and every thread
  ceiling     a bare gather/scatter over the same slots in the same order (read the weight of
              every feature, write it back changed): the memory-access limit of any learner
  end to end  fastada.train from the Parquet file (decode and hash overlap learning)
Writes OUT/stages.json and prints a Markdown table with each stage as a share of its ceiling.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import numba
from bench_threads import kernel_runners
from machine import describe as describe_machine

import fastada
from fastada.features import Featurizer
from fastada.reader import DataSet
from fastada.roles import resolve_spec
from fastada.stream import _string_columns


def median_rate(fn, rows, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return rows / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a folder from `fastada gen` (default: generate into OUT/data)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = args.data or os.path.join(args.out, f"data-{args.rows}")
    if not os.path.exists(os.path.join(data, "train.parquet")):
        from fastada.synth import generate
        generate(data, rows=args.rows, test_rows=1000, seed=0)
    path = os.path.join(data, "train.parquet")
    dataset = DataSet(path)
    spec = resolve_spec(dataset, label="label", bits=args.bits, new_values=True)  # (as training's default learns)
    learn = fastada.LearnConfig(threads=1)
    featurizer = Featurizer(spec)
    dictionary = _string_columns(dataset, spec)
    rows = dataset.num_rows
    cores = numba.config.NUMBA_NUM_THREADS

    def decode():
        return [c.batch for c in dataset.chunks(featurizer.columns, learn.chunk_rows, None, dictionary)]

    batches = decode()

    def hash_all():
        f = Featurizer(spec)  # a fresh cache each time: dictionaries are hashed as in a real run
        return [f(b, "bench") for b in batches]

    blocks = hash_all()
    learn_all, ceiling, fresh_table, _ = kernel_runners(blocks, spec)

    def end_to_end(threads):
        fastada.train(path, bits=args.bits, threads=threads)

    for warm in (lambda: learn_all(1), lambda: ceiling(1), lambda: end_to_end(1)):
        warm()  # compile / load caches
    results = {"decode": median_rate(decode, rows, args.repeat), "hash": median_rate(hash_all, rows, args.repeat)}
    for t in sorted({1, 2, cores}):
        if t > cores:
            continue
        fresh_table()
        results[f"learn_{t}"] = median_rate(lambda t=t: learn_all(t), rows, args.repeat)
        fresh_table()
        results[f"ceiling_{t}"] = median_rate(lambda t=t: ceiling(t), rows, args.repeat)
        results[f"end_to_end_{t}"] = median_rate(lambda t=t: end_to_end(t), rows, args.repeat)
    machine = describe_machine()
    report = {"date": datetime.date.today().isoformat(), "machine": machine, "rows": rows,
              "bits": args.bits, "features_per_row": int(blocks[0].cat.shape[1] + blocks[0].num.shape[1]),
              "rows_per_second": {k: round(v) for k, v in results.items()}}
    with open(os.path.join(args.out, "stages.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"{report['date']}, {machine}, {rows:,} rows, 2^{args.bits} slots, "
          f"{report['features_per_row']} features a row; medians of {args.repeat}")
    print("| stage | threads | rows/s | share of the ceiling |\n|---|---|---|---|")
    print(f"| Parquet decode | - | {results['decode']:,.0f} | |")
    print(f"| hashing | 1 | {results['hash']:,.0f} | |")
    for t in sorted({1, 2, cores}):
        if f"learn_{t}" not in results:
            continue
        share = results[f"learn_{t}"] / results[f"ceiling_{t}"]
        print(f"| learning kernel | {t} | {results[f'learn_{t}']:,.0f} | {share:.0%} of {results[f'ceiling_{t}']:,.0f} |")
    for t in sorted({1, 2, cores}):
        if f"end_to_end_{t}" in results:
            print(f"| end to end (fastada.train) | {t} | {results[f'end_to_end_{t}']:,.0f} | |")
    if "learn_2" in results:
        print(f"learning kernel, 2 threads / 1 thread: {results['learn_2'] / results['learn_1']:.2f}x; "
              f"ceiling: {results['ceiling_2'] / results['ceiling_1']:.2f}x")


if __name__ == "__main__":
    main()
