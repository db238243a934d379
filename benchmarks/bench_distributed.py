"""Distributed training on Dask: one machine vs N local workers on the same data (rows/s, test
logloss, bytes and seconds per sync), and what the measured sync costs say about 10 and 100
machines.

Usage:
    python benchmarks/bench_distributed.py [--rows 4000000] [--test-rows 500000] [--workers 1,2]
        [--sync-every-rows 1000000] [--bits 24] [--estimate-rows 1000000,10000000] [--out bench-out]
        [--json OUT]

Data: generated Criteo-like rows, zstd, every string column at Zipf 1.05 (the flattest the
generator makes: the most distinct slots per sync). Each worker is one process with one learner
thread (LocalCluster, threads_per_worker=1); the single-machine run uses every core
(``threads="auto"``). Times are the ``fastada.train`` call (the cluster is started before, its
start-up reported apart).

The estimate for K machines (star topology: every worker sends its changed slots to the
coordinator, which combines them and sends the combined slots back; rounds are synchronous):

    round = R / r  +  K * changed(R) * c  +  K * (changed(R) + union(K R)) * 12 B / bandwidth

R: rows per worker per round (--sync-every-rows); r: one machine's learning rate (rows/s,
measured here end to end on all its cores); changed(R): slots one worker changes in R rows and
union(K R): distinct slots in K R rows, both counted on the data (past its end, a power law fitted
to the counts); c: the coordinator's combining time per changed slot (measured). The coordinator's
network: --bandwidth bytes/s (default 1.25e9, 10 Gbit/s). Scaling stops where the sync terms
reach the compute term.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe as describe_machine  # noqa: E402

import fastada  # noqa: E402
from fastada.features import Featurizer  # noqa: E402
from fastada.reader import DataSet  # noqa: E402
from fastada.roles import resolve_roles  # noqa: E402

SLOT_BYTES = 12  # index, weight, accumulator: one changed slot in a sync, each way


def distinct_slots(train: str, bits: int, step: int, limit: int) -> list[tuple[int, int]]:
    """(rows, distinct slots in the first ``rows``) every ``step`` rows, up to ``limit`` rows."""
    dataset = DataSet(train)
    spec, _ = resolve_roles(dataset, label="label", bits=bits)
    featurizer = Featurizer(spec)
    seen = np.zeros(spec.slots, dtype=bool)
    out, rows = [], 0
    for chunk in dataset.chunks(featurizer.columns, step):
        block = featurizer(chunk.batch, chunk.where)
        seen[block.cat.ravel() & (spec.slots - 1)] = True
        seen[block.num.ravel() & (spec.slots - 1)] = True
        rows += block.rows
        out.append((rows, int(seen.sum())))
        if rows >= limit:
            break
    return out


def union_at(counts: list[tuple[int, int]], rows: float, slots: int) -> float:
    """Distinct slots in ``rows`` rows: counted, or past the data a power law through the counts."""
    xs = np.array([c[0] for c in counts], float)
    ys = np.array([c[1] for c in counts], float)
    if rows <= xs[-1]:
        return float(np.interp(rows, xs, ys))
    slope, intercept = np.polyfit(np.log(xs[len(xs) // 2:]), np.log(ys[len(ys) // 2:]), 1)
    return float(min(slots, np.exp(intercept) * rows ** slope))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--test-rows", type=int, default=500_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--sync-every-rows", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--bandwidth", type=float, default=1.25e9, help="the coordinator's network, bytes/s")
    ap.add_argument("--estimate-rows", default="1000000,10000000",
                    help="rows a worker a round for the estimate (past the data, distinct slots extrapolated)")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import distributed

    data = os.path.join(args.out, f"dist-{args.rows}")
    train, test = os.path.join(data, "train.parquet"), os.path.join(data, "test.parquet")
    if not os.path.exists(test):
        from fastada.synth import generate
        generate(data, rows=args.rows, test_rows=args.test_rows, seed=21, zipf=(1.05, 1.05), compression="zstd")
    print(f"# machine: {describe_machine()}; {datetime.date.today()}; {args.rows:,} train rows, zstd, Zipf 1.05, "
          f"2^{args.bits} slots, sync every {args.sync_every_rows:,} rows per worker", flush=True)

    results = {}
    start = time.perf_counter()
    model = fastada.train(train, bits=args.bits)
    seconds = time.perf_counter() - start
    lr = model.summary["lr"]  # every run learns at this rate (the race is not what is measured)
    results["1 machine"] = {"seconds": seconds, "rows_per_second": args.rows / seconds,
                            "logloss": model.evaluate(test)["logloss"], "threads": model.summary["threads"]}
    print(f"1 machine, {model.summary['threads']} learner threads: {args.rows / seconds:,.0f} rows/s, "
          f"test logloss {results['1 machine']['logloss']:.5f}", flush=True)
    for n in [int(x) for x in args.workers.split(",")]:
        begun = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = distributed.Client(cluster)
        started = time.perf_counter() - begun
        try:
            start = time.perf_counter()
            model = fastada.train(train, bits=args.bits, lr=lr, client=client, sync_every_rows=args.sync_every_rows)
            seconds = time.perf_counter() - start
        finally:
            client.close()
            cluster.close()
        d = model.summary["distributed"]
        r = {"seconds": seconds, "rows_per_second": args.rows / seconds, "logloss": model.evaluate(test)["logloss"],
             "cluster_start_seconds": started, **d}
        results[f"{n} workers"] = r
        print(f"{n} workers: {r['rows_per_second']:,.0f} rows/s, test logloss {r['logloss']:.5f}, {d['rounds']} rounds, "
              f"{d['slots_per_sync']:,} slots and {d['bytes_per_sync'] / 1e6:.1f} MB a sync, combining "
              f"{d['combine_seconds']:.2f} s of {seconds:.2f} s (cluster start {started:.1f} s)", flush=True)

    # the estimate for 10 and 100 machines, from the measured costs
    counts = distinct_slots(train, args.bits, 250_000, args.rows)
    multi = [v for k, v in results.items() if k.endswith("workers") and v["rounds"]]
    entries = sum(v["slots_per_sync"] * v["rounds"] * int(k.split()[0]) for k, v in results.items()
                  if k.endswith("workers"))
    combine_per_slot = sum(v["combine_seconds"] for v in multi) / max(1, entries)
    rate = results["1 machine"]["rows_per_second"]
    results["estimate"] = {"combine_seconds_per_changed_slot": combine_per_slot, "bandwidth": args.bandwidth,
                           "one_machine_rows_per_second": rate, "rounds": {}}
    print(f"\nestimate (combining {combine_per_slot * 1e9:.0f} ns a changed slot, as measured; "
          f"{args.bandwidth / 1e9:.2f} GB/s at the coordinator; each machine learning at {rate / 1e6:.2f}M rows/s):")
    print("| rows a worker a round | machines | slots a worker changes | distinct slots a round | compute s | "
          "combine s | transfer s | rows/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for per_worker in [int(x) for x in args.estimate_rows.split(",")]:
        changed = union_at(counts, per_worker, 2 ** args.bits)
        estimate = {}
        for k in (1, 2, 10, 100):
            union = union_at(counts, k * per_worker, 2 ** args.bits)
            compute = per_worker / rate
            combine = k * changed * combine_per_slot
            transfer = k * (changed + union) * SLOT_BYTES / args.bandwidth
            round_seconds = compute + combine + transfer
            estimate[k] = {"changed_slots": round(changed), "union_slots": round(union), "compute_s": compute,
                           "combine_s": combine, "transfer_s": transfer,
                           "rows_per_second": k * per_worker / round_seconds, "speedup": k * compute / round_seconds}
            e = estimate[k]
            print(f"| {per_worker:,} | {k} | {e['changed_slots']:,} | {e['union_slots']:,} | {compute:.2f} | "
                  f"{combine:.2f} | {transfer:.2f} | {e['rows_per_second'] / 1e6:.1f}M | {e['speedup']:.1f}x |")
        results["estimate"]["rounds"][per_worker] = estimate
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
