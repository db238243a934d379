"""How fastada scales with cores: readers by workers, the kernel and its ceiling by threads, and
``fastada.train`` end to end with its test logloss by threads, on the same data in one process.

Usage:
  PYTHONPATH=. python benchmarks/bench_threads.py [--data DIR ...] [--threads 1,2,4,...]
      [--workers 1,2,4,...] [--kernel-rows 2000000] [--repeat 3] [--json OUT]

``--data``: folders from ``fastada gen`` (train.parquet, test.parquet). Without it, two data sets
of ``--rows`` rows are generated into ``--out``: the generator's default (snappy, Zipf exponents
1.05-1.5) and the hardest it makes (zstd, every string column at Zipf 1.05, cardinalities up to a
million). Every measure is taken on each data set; the summary is the worst case.

Needs only numba, numpy and pyarrow (no network, no install): run it from a checkout with
``PYTHONPATH=.``. Writes, per data set and for the worst case,
``{"readers": {W: rows/s}, "kernel": {T: rows/s}, "ceiling": {T: rows/s}, "arithmetic": {T: steps/s},
"end_to_end": {T: rows/s}, "logloss": {T: value}, "scaling": {stage: {T: lowest ratio to 1 thread on one
data set}}}`` (keys are strings; "auto" is the default
split of the cores between readers and learners).

Stages: *readers* decode Parquet and hash (``read_ahead`` with W workers over the training
file, nothing learned); *kernel* is ``kernels.train_chunk`` over hashed chunks in memory, with
hot slots chosen as training chooses them; *ceiling* a bare gather/scatter over the same slots on
one shared table (read every feature's slot, write it back changed): the memory-access limit of
a shared-table learner; *arithmetic* (with the kernel) one xorshift chain a thread, sharing
nothing: how much more a second core gives on this machine at this moment, to read the others'
ratios against; *end to end* ``fastada.train`` from the file, one pass.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe as describe_machine  # noqa: E402

import fastada  # noqa: E402
from fastada import kernels  # noqa: E402
from fastada.features import Featurizer  # noqa: E402
from fastada.reader import DataSet  # noqa: E402
from fastada.roles import resolve_spec  # noqa: E402
from fastada.stream import _string_columns, read_ahead, set_threads  # noqa: E402


@njit(cache=True, parallel=True, nogil=True)
def gather_scatter(cat, num, table, mask, blocks):
    """Touch every feature's slot like a learner must (read, then write), and nothing more; the
    slots of the row :data:`kernels.PREFETCH_ROWS` ahead asked for first, as the kernel does."""
    rows = cat.shape[0]
    ahead = kernels.PREFETCH_ROWS
    for b in prange(blocks):
        hi = rows * (b + 1) // blocks
        for r in range(rows * b // blocks, hi):
            if r + ahead < hi:
                for j in range(cat.shape[1]):
                    kernels._prefetch(table, np.int64(cat[r + ahead, j] & mask) * 4)
                for j in range(num.shape[1]):
                    kernels._prefetch(table, np.int64(num[r + ahead, j] & mask) * 4)
            z = 0.0
            for j in range(cat.shape[1]):
                z += table[np.int64(cat[r, j] & mask), 0]
            for j in range(num.shape[1]):
                z += table[np.int64(num[r, j] & mask), 0]
            g = np.float32(1e-9 * z)
            for j in range(cat.shape[1]):
                table[np.int64(cat[r, j] & mask), 1] += g
            for j in range(num.shape[1]):
                table[np.int64(num[r, j] & mask), 1] += g


@njit(cache=True, parallel=True, nogil=True)
def arithmetic(steps, out):
    """Each of ``out``'s threads runs its own xorshift chain: work that shares nothing, the most a
    second core can add on this machine now (a virtual machine's cores may share one physical
    core, or a busy host)."""
    for t in prange(out.shape[0]):
        x = np.uint64(88172645463325252 + t)
        for _ in range(steps):
            x ^= x << np.uint64(13)
            x ^= x >> np.uint64(7)
            x ^= x << np.uint64(17)
        out[t] = x


ARITHMETIC_STEPS = 50_000_000


def arithmetic_rate(t, repeat):
    """Steps a second of :func:`arithmetic` on ``t`` threads (median of ``repeat``)."""
    set_threads(t)
    out = np.zeros(t, np.uint64)
    arithmetic(10, out)
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        arithmetic(ARITHMETIC_STEPS, out)
        rates.append(t * ARITHMETIC_STEPS / (time.perf_counter() - start))
    return statistics.median(rates)


def median_rate(fn, rows, repeat, setup=None):
    """rows / the median time of ``fn()`` over ``repeat`` runs (``setup()`` before each, untimed)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return rows / statistics.median(times)


def counts(text: str, cores: int) -> list[int]:
    if text:
        return sorted({int(x) for x in text.split(",")})
    return sorted({1 << k for k in range(cores.bit_length()) if 1 << k <= cores} | {cores})


def measure(data: str, threads: list[int], workers: list[int], kernel_rows: int, bits: int,
            repeat: int, log, stages=("readers", "kernel", "end_to_end"), reader_cap: int = 1 << 62,
            io_repeat: int | None = None, simulate_threads=(1, 2, 4, 8, 16)) -> dict:
    """Every stage on one data set (a folder with train.parquet or train/, and test.parquet)."""
    io_repeat = io_repeat or repeat
    train_path = os.path.join(data, "train.parquet")
    if not os.path.exists(train_path):
        train_path = os.path.join(data, "train")  # a folder of parts
    test_path = os.path.join(data, "test.parquet")
    dataset = DataSet(train_path)
    spec = resolve_spec(dataset, label="label", bits=bits, new_values=True)  # (as training's default learns)
    dictionary = _string_columns(dataset, spec)
    chunk_rows = fastada.LearnConfig.chunk_rows
    columns = Featurizer(spec).columns
    result = {"readers": {}, "kernel": {}, "ceiling": {}, "end_to_end": {}, "logloss": {}}

    reader_units, reader_rows = [], 0
    for unit in dataset.units:
        if reader_rows >= reader_cap:
            break
        reader_units.append(unit)
        reader_rows += unit.rows

    def read_all(w):
        featurizers = [Featurizer(spec) for _ in range(w)]

        def work(unit, worker):
            for chunk in dataset.unit_chunks(unit, columns, chunk_rows, dictionary):
                yield featurizers[worker](chunk.batch, chunk.where).rows

        return sum(read_ahead(reader_units, work, w))

    if "readers" in stages:
        read_all(max(workers))  # warm: page cache, compiled hashing
    for w in workers if "readers" in stages else ():
        result["readers"][str(w)] = median_rate(lambda w=w: read_all(w), reader_rows, io_repeat)
        log(f"  readers {w:>2}: {result['readers'][str(w)]:,.0f} rows/s")

    if "kernel" in stages or "contention" in stages:
        kernel_stage(dataset, spec, columns, dictionary, chunk_rows, threads, kernel_rows, repeat, result, log,
                     stages, simulate_threads)
    if "end_to_end" not in stages:
        return result
    try:
        auto = fastada.LearnConfig(threads="auto").threads  # (fastada before 2026-11-27 has no auto)
    except fastada.FastadaError:
        auto = None
    fastada.train(train_path, bits=bits, threads=1, chunk_rows=chunk_rows)  # warm
    for t in [*threads] + ([auto] if auto else []):
        rates, model = [], None
        for _ in range(io_repeat):
            model = fastada.train(train_path, bits=bits, threads=t)
            rates.append(model.summary["rows"] / model.summary["seconds"])
        result["end_to_end"][str(t)] = statistics.median(rates)
        result["logloss"][str(t)] = model.evaluate(test_path)["logloss"]
        chosen = model.summary.get("split") or ""
        if chosen:
            result.setdefault("auto_split", chosen)
        log(f"  end to end {t:>4}: {result['end_to_end'][str(t)]:,.0f} rows/s, test logloss "
            f"{result['logloss'][str(t)]:.5f} {chosen}")
    return result


KERNEL_LR = 0.05  # a fixed rate: the kernel's speed does not depend on it, and lr auto is a race, not a rate


def kernel_runners(blocks, spec):
    """(learn_all(t), ceiling(t), fresh_table(), hot_and_slots) over hashed ``blocks`` in memory:
    the learning kernel with ``t`` threads as training runs it (one thread learns every slot in the
    table, several keep the hot ones in views), and the bare shared-table gather/scatter."""
    mask = np.uint32(spec.slots - 1)
    learn = fastada.LearnConfig(threads=1, lr=KERNEL_LR)

    table = kernels.new_table(spec.slots)
    clock = table.view(np.int64)

    def fresh_table():
        table.fill(0.0)  # untimed: every run starts from zero weights, its pages already mapped

    def learn_all(t):
        loss = np.zeros((t, 4))
        hot, located = hot_and_slots[t > 1]
        private, taken = kernels.private_state(t, hot)
        new_where = (kernels.new_value_places(new_hashes, np.int64(mask), hot.lookup) if new_hashes.size
                     else np.zeros(0, np.int64))
        set_threads(t)
        step = 0
        for blk, (slots, origin) in zip(blocks, located):
            n = blk.rows
            kernels.train_chunk(slots, blk.num_values, blk.labels, np.ones(n, np.float32), np.zeros(0, np.uint8),
                                table, clock, np.int64(step), learn.lr, 0.0, 0.0, learn.eps, t, loss, hot.slots,
                                private, taken, t > 1, hot.fold_ends, kernels.FOLD_ROWS,
                                kernels.REFRESH_ROWS, origin, new_where)
            step += n

    def ceiling(t):
        set_threads(t)
        for blk in blocks:
            gather_scatter(blk.cat, blk.num, table, mask, t)

    def locate_all(hot):
        out = []
        for blk in blocks:
            slots = np.empty((blk.rows, blk.cat.shape[1] + blk.num.shape[1]), dtype=np.int32)
            origin = np.empty((blk.rows, blk.cat.shape[1]) if new_hashes.size and hot.lookup.size else (0, 0),
                              dtype=np.int16)
            kernels.locate(blk.cat, blk.num, mask, hot.lookup, slots, origin)
            out.append((slots, origin))
        return hot, out

    table_rows = spec.slots + 1
    new_hashes = Featurizer(spec).new_hashes  # new-value features, as training learns them
    forced = new_hashes[new_hashes >= 0] & np.int64(mask)
    # as training does: one thread learns every slot in the table, several keep the hot ones apart
    hot_and_slots = [locate_all(kernels.hot_slots(table_rows)),
                     locate_all(kernels.choose_hot_slots(blocks[0].cat, blocks[0].num, int(mask), table_rows,
                                                          share=HOT_SHARE[0], cap=HOT_CAP[0], forced=forced))]
    return learn_all, ceiling, fresh_table, hot_and_slots


def kernel_stage(dataset, spec, columns, dictionary, chunk_rows, threads, kernel_rows, repeat, result, log,
                 stages=("kernel",), simulate_threads=(1, 2, 4, 8, 16)):
    """The learning kernel and the shared-table ceiling by threads, over chunks held in memory;
    and the simulated cache-line traffic between threads (``contention``)."""
    featurizer = Featurizer(spec)
    blocks, rows = [], 0
    for chunk in dataset.chunks(columns, chunk_rows, None, dictionary):
        blocks.append(featurizer(chunk.batch, chunk.where))
        rows += blocks[-1].rows
        if rows >= kernel_rows:
            break
    learn_all, ceiling, fresh_table, hot_and_slots = kernel_runners(blocks, spec)
    log(f"  {hot_and_slots[1][0].count:,} hot slots")
    if "contention" in stages:
        hot, located = hot_and_slots[1]
        located = [slots for slots, _ in located]
        plain = [slots for slots, _ in hot_and_slots[0][1]]
        result["contention"] = {}
        for t in simulate_threads:
            shared = line_transfers(plain, hot.slots, t, 0)
            views = line_transfers(located, hot.slots, t, 1, hot.fold_ends, kernels.FOLD_ROWS,
                                   kernels.REFRESH_ROWS)
            result["contention"][str(t)] = {"shared": shared, "views": views}
            log(f"  simulated cache-line moves a row at {t:>2} threads: shared table {shared:.2f}, "
                f"hot slots in views {views:.3f}")
    if "kernel" not in stages:
        return
    learn_all(1)
    ceiling(1)
    result.setdefault("arithmetic", {})
    for t in threads:
        result["kernel"][str(t)] = median_rate(lambda t=t: learn_all(t), rows, repeat, fresh_table)
        result["ceiling"][str(t)] = median_rate(lambda t=t: ceiling(t), rows, repeat, fresh_table)
        result["arithmetic"][str(t)] = arithmetic_rate(t, repeat)
        log(f"  kernel {t:>2}: {result['kernel'][str(t)]:,.0f} rows/s; "
            f"ceiling {result['ceiling'][str(t)]:,.0f}; arithmetic (shares nothing) "
            f"{result['arithmetic'][str(t)] / 1e6:,.0f}M steps/s")
    del blocks


# A line written by another core within this many lock-step rows is taken to be still in that
# core's cache (a 2 MiB L2 holds 32k lines; each row writes ~52): writing it moves it between
# cores. Older lines are long evicted and come from L3 or memory for any learner.
RECENT_ROWS = 512
# --hot-share / --hot-cap: to explore other choices than training's (getattr: an older fastada runs
# this file for the readers and end-to-end stages, side by side)
HOT_SHARE = [getattr(kernels, "HOT_SHARE", 0.0)]
HOT_CAP = [getattr(kernels, "HOT_CAP", 0)]


def line_transfers(located, hot, threads, views, fold_ends=None, fold_rows=0, refresh_longest=0):
    """Simulated cache-line moves between cores per row learned, for ``threads`` threads.

    Every chunk's rows are split into one block a thread, as the kernel splits them, and the
    threads take their blocks' rows in lock step. A thread's access to a 64-byte line (4 slots of
    16 bytes) that another thread wrote last, within :data:`RECENT_ROWS` steps, moves the line;
    the bias is each thread's own (as in every fastada kernel). ``views``: hot positions (negative
    in ``located``) are learned in a thread's view and reach the table on the kernel's own
    schedule (``kernels.train_chunk``): the first ``fold_ends[c]`` hot slots are handed back and
    taken again every ``fold_rows * 2^c`` of a thread's rows (one move for each changed slot whose
    line another thread wrote last), and every hot slot at a refresh, every
    ``kernels.refresh_period`` rows; else every hot position is written in the table like any slot.
    """
    fold_ends = np.zeros(1, np.int64) if fold_ends is None else np.asarray(fold_ends, np.int64)
    return _line_transfers(located, np.asarray(hot, np.int64), threads, views, fold_ends, fold_rows,
                           refresh_longest, sum(s.shape[0] for s in located))


@njit(cache=True, inline="always")
def _touch(line, t, now, last_writer, last_step, window):
    """Thread ``t`` writes ``line`` at lock step ``now``: 1 if the line moves between cores."""
    moved = 1 if last_writer[line] != t and last_writer[line] >= 0 and now - last_step[line] < window else 0
    last_writer[line] = t
    last_step[line] = now
    return moved


@njit(cache=True)
def _line_transfers_chunk(slots, step0, hot, threads, views, fold_ends, fold_rows, refresh_longest,
                          last_writer, last_step, changed, state, clock, window):
    rows = slots.shape[0]
    moves = 0
    longest = (rows + threads - 1) // threads
    for k in range(longest):
        clock[0] += 1
        now = clock[0]
        for t in range(threads):
            lo = rows * t // threads
            r = lo + k
            if r >= rows * (t + 1) // threads:
                continue
            if views:  # the kernel's countdown: state[t] = age, period, rows to the event, folds
                if state[t, 2] <= 0:
                    if state[t, 0] >= state[t, 1]:  # refresh: hand back what changed, take all
                        end = hot.shape[0]
                        state[t, 0] = 0
                        state[t, 1] = kernels.refresh_period(step0 + r, threads, refresh_longest)
                        state[t, 3] = 0
                    else:
                        state[t, 3] += 1
                        end = kernels.fold_end(state[t, 3], fold_ends)
                    for h in range(1, end):
                        if changed[t, h]:
                            moves += _touch(hot[h] >> 2, t, now, last_writer, last_step, window)
                            changed[t, h] = False
                    state[t, 2] = min(fold_rows, state[t, 1] - state[t, 0])
                    state[t, 0] += state[t, 2]
                state[t, 2] -= 1
            for j in range(slots.shape[1]):
                s = np.int64(slots[r, j])
                if s < 0:
                    changed[t, -1 - s] = True
                    continue
                moves += _touch(s >> 2, t, now, last_writer, last_step, window)
    return moves


def _line_transfers(located, hot, threads, views, fold_ends, fold_rows, refresh_longest, rows):
    lines = (int(hot[0]) >> 2) + 2  # hot[0]: the bias, the table's last row
    last_writer = np.full(lines, -1, dtype=np.int8)
    last_step = np.zeros(lines, dtype=np.int64)
    changed = np.zeros((threads, hot.shape[0]), dtype=np.bool_)
    state = np.zeros((threads, 4), dtype=np.int64)
    clock = np.zeros(1, dtype=np.int64)
    moves, step = 0, 0
    for slots in located:
        moves += _line_transfers_chunk(slots, np.int64(step), hot, threads, views, fold_ends, fold_rows,
                                       refresh_longest, last_writer, last_step, changed, state, clock, RECENT_ROWS)
        step += slots.shape[0]
    return moves / rows


def worst(results: list[dict]) -> dict:
    out = {}
    for key in ("readers", "kernel", "ceiling", "arithmetic", "end_to_end"):
        out[key] = {k: min(r[key][k] for r in results if k in r.get(key, {})) for k in results[0].get(key, {})}
    out["logloss"] = {k: max(r["logloss"][k] for r in results if k in r["logloss"]) for k in results[0]["logloss"]}
    # the ratio to 1 thread on each data set, the lowest: the worst rates may come from different data
    out["scaling"] = {key: {k: min((r[key][k] / r[key]["1"] for r in results if k in r.get(key, {}) and r[key].get("1")),
                                   default=None) for k in results[0].get(key, {})}
                      for key in ("readers", "kernel", "ceiling", "arithmetic", "end_to_end") if results[0].get(key)}
    first = out["logloss"].get("1")
    out["logloss_gap"] = max((abs(r["logloss"][k] - r["logloss"]["1"]) for r in results for k in r["logloss"]),
                             default=None) if first is not None else None
    return out


def generate_data(out: str, name: str, rows: int, processes: int, **kwargs) -> str:
    """``out``/threads-NAME-ROWS: ``rows`` training rows (in ``processes`` files written at once)
    and a test set, all from one planted truth (fastada.synth)."""
    from concurrent.futures import ProcessPoolExecutor

    from fastada.synth import generate, generate_part
    folder = os.path.join(out, f"threads-{name}-{rows}")
    if os.path.exists(os.path.join(folder, "test.parquet")):
        return folder
    if processes <= 1:
        generate(folder, rows=rows, test_rows=min(200_000, rows // 10), seed=1, **kwargs)
        return folder
    os.makedirs(os.path.join(folder, "train"), exist_ok=True)
    with ProcessPoolExecutor(processes) as pool:
        test = pool.submit(generate, folder, rows=0, test_rows=min(200_000, rows // 10), seed=1, **kwargs)
        parts = [pool.submit(generate_part, os.path.join(folder, "train", f"part-{k:03d}.parquet"), k,
                             rows // processes, seed=1, **kwargs) for k in range(processes)]
        for f in [test, *parts]:
            f.result()
    os.remove(os.path.join(folder, "train.parquet"))  # the empty one generate() wrote beside the test set
    return folder


def main():
    cores = numba.config.NUMBA_NUM_THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=None, help="folders from `fastada gen` (default: generate two)")
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of each generated data set")
    ap.add_argument("--processes", type=int, default=1,
                    help="generate each data set as this many files, by as many processes at once")
    ap.add_argument("--reader-rows", type=int, default=1 << 62, help="rows read for the readers stage (at most)")
    ap.add_argument("--threads", default="", help="learner thread counts (default: powers of two up to the cores)")
    ap.add_argument("--workers", default="", help="reader worker counts (default: as --threads)")
    ap.add_argument("--kernel-rows", type=int, default=2_000_000, help="rows held in memory for the kernel")
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measure (the median is kept)")
    ap.add_argument("--io-repeat", type=int, default=None,
                    help="runs of each readers / end-to-end measure (default: --repeat)")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--stages", default="readers,kernel,contention,end_to_end",
                    help="which to measure (contention: simulated cache-line moves between threads)")
    ap.add_argument("--hot-share", type=float, default=HOT_SHARE[0])
    ap.add_argument("--hot-cap", type=int, default=HOT_CAP[0])
    ap.add_argument("--simulate-threads", default="1,2,4,8,16", help="thread counts for the contention stage")
    ap.add_argument("--json", default=None, help="write the results here (default OUT/threads.json)")
    args = ap.parse_args()
    threads = counts(args.threads, cores)
    HOT_SHARE[0], HOT_CAP[0] = args.hot_share, args.hot_cap
    workers = counts(args.workers, cores) if args.workers else threads
    os.makedirs(args.out, exist_ok=True)
    data = args.data
    if not data:
        data = [generate_data(args.out, name, args.rows, args.processes, **kwargs)
                for name, kwargs in (("zstd-zipf1.05", {"zipf": (1.05, 1.05), "compression": "zstd"}),
                                     ("snappy", {}))]

    def log(text):
        print(text, flush=True)

    machine = describe_machine()
    log(f"{datetime.date.today().isoformat()}, {machine}, numba {numba.__version__} "
        f"({numba.config.THREADING_LAYER} threading layer), 2^{args.bits} slots")
    per_data = {}
    if args.stages == "none":  # generate only
        with open(args.json or os.path.join(args.out, "threads.json"), "w") as f:
            json.dump({"data": data}, f)
        return
    for folder in data:
        log(f"{folder}:")
        per_data[folder] = measure(folder, threads, workers, args.kernel_rows, args.bits, args.repeat, log,
                                  args.stages.split(","), args.reader_rows, args.io_repeat,
                                  [int(x) for x in args.simulate_threads.split(",")])
    report = {"date": datetime.date.today().isoformat(), "machine": machine, "bits": args.bits,
              "data": per_data, **worst(list(per_data.values()))}
    path = args.json or os.path.join(args.out, "threads.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    log(f"worst case over {len(data)} data sets (rows/s; in brackets the lowest ratio to 1 thread on one data set; "
        f"logloss: the highest):")
    for key in ("readers", "kernel", "ceiling", "arithmetic", "end_to_end", "logloss"):
        if not report[key]:
            continue
        ratios = report["scaling"].get(key, {})
        cells = ", ".join(f"{k}: {v:,.0f}" + (f" ({ratios[k]:.2f}x)" if ratios.get(k) else "")
                          if key != "logloss" else f"{k}: {v:.5f}" for k, v in report[key].items())
        log(f"  {key}: {cells}")
    if report.get("logloss_gap") is not None:
        log(f"  largest test logloss gap to 1 thread: {report['logloss_gap']:.5f}")
    log(f"written to {path}")


if __name__ == "__main__":
    main()
