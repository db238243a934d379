"""fastada's learners side by side (adagrad, ftrl, ffm: rows/s and test logloss by epoch, 1 thread
and every thread), next to libffm built from source, on the same rows and the same hashed features.

Vowpal Wabbit (the `vowpalwabbit` package, when installed) runs from its cache for the same epochs
with --ftrl, its defaults, and --lrqfa (field-aware low-rank interactions, k 4, every column a
namespace); its test logloss is after the last pass only.

Usage:
    python benchmarks/bench_learners.py --libffm /path/to/libffm [--rows 500000] [--test-rows 100000]
        [--epochs 3] [--factor-bits 18] [--out bench-out] [--repeat 1]

Data: generated Criteo-like rows, zstd, every string column at Zipf 1.05 (``--zipf``: flatter
values touch more distinct factor slots a row, which FFM reads and writes whole). libffm reads
its own text format, written from fastada's featurizer (each feature's field, its slot masked to
2^factor-bits, its value), so both learn the same features; libffm's model is pairs only (no
linear term, no bias), fastada's FFM is its Adagrad linear model plus pairs. libffm runs with its
defaults as the issue names them (k 4, eta 0.2, lambda 2e-5, instance normalisation) for
--epochs iterations. Two rates: *learning*, libffm's own timer (its epochs, reading its binary
blocks; not its parsing of the text or its validation) and fastada's epochs (reading Parquet and
hashing on other threads included; a second run at the raced rates without the test set, so
neither the races nor the evaluations); *whole run*, libffm's process (parsing its text included)
and fastada's train call (the race and an evaluation on the test set after each epoch included).
With ``--repeat N`` fastada's learning run and libffm's run are repeated N times, one after the
other, and the table gives the medians (each run's rate is printed as it ends): libffm's own rate
moved by up to 13% between runs with nothing changed.
``--learners`` may name ``crosses`` too (generated data only): the Adagrad linear learner given the
generated data's planted pairs as crosses (C1 x C2, C3 x C8), the exact tables FFM learns a low-rank
picture of, with no other pair: what a learner that is told the pairs takes from these rows, a
reference for FFM's gain over ``adagrad`` on them (printed after the table as FFM's share).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe as describe_machine  # noqa: E402

import fastada  # noqa: E402
from fastada.features import Featurizer  # noqa: E402
from fastada.roles import resolve_spec  # noqa: E402
from fastada.reader import DataSet  # noqa: E402


def write_libffm(parquet: str, out: str, spec, factor_bits: int) -> None:
    """``parquet``'s rows as libffm lines: label field:index:value ..., fastada's features."""
    featurizer = Featurizer(spec)
    fields = featurizer.fields()
    fmask = (1 << factor_bits) - 1
    with open(out, "w") as f:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 16):
            block = featurizer(batch, out)
            index = np.concatenate([block.cat, block.num], axis=1).astype(np.int64) & fmask
            values = np.concatenate([np.ones(block.cat.shape, np.float32), block.num_values], axis=1)
            lines = []
            for r in range(block.rows):
                lines.append(f"{int(block.labels[r])} " + " ".join(
                    f"{fields[j]}:{index[r, j]}:{values[r, j]:.6g}" for j in range(index.shape[1])))
            f.write("\n".join(lines) + "\n")


def write_vw(parquet: str, out: str, spec) -> str:
    """``parquet``'s rows as VW lines, each column in a namespace of its own (one letter a
    column: what --lrqfa pairs), categorical as ``name=value``, numeric as ``name:log1p(max(x,0))``
    as fastada's value feature sees them; returns the namespace letters."""
    import string

    import pyarrow.compute as pc
    columns = list(spec.categorical) + list(spec.numeric)
    letters = (string.ascii_lowercase + string.ascii_uppercase)[:len(columns)]
    with open(out, "w") as f:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 16):
            y = pc.cast(batch.column(spec.label), "float64")
            parts = [pc.if_else(pc.greater(y, 0), "1", "-1")]
            for letter, name in zip(letters, columns):
                col = batch.column(name)
                if name in spec.categorical:
                    text = pc.replace_substring_regex(pc.cast(col, "string"), r"[\s:|]", "_")
                    parts.append(pc.binary_join_element_wise(f"|{letter} {name}=", pc.fill_null(text, "NULL"), ""))
                else:
                    x = pc.fill_null(pc.cast(col, "float64"), 0.0)
                    v = pc.round(pc.log1p(pc.max_element_wise(x, 0.0)), 5)
                    parts.append(pc.binary_join_element_wise(f"|{letter} {name}:", pc.cast(v, "string"), ""))
            f.write("\n".join(pc.binary_join_element_wise(*parts, " ").to_pylist()) + "\n")
    return letters


def run_vw(train: str, test: str, options: str, epochs: int, out: str) -> tuple[float, np.ndarray]:
    """Seconds VW takes to learn ``epochs`` passes over ``train`` (its cache made first, untimed),
    and its probabilities on ``test``."""
    import vowpalwabbit
    model, cache, preds = (os.path.join(out, name) for name in ("vw.model", "vw.cache", "vw.preds"))
    for path in (model, cache):
        if os.path.exists(path):
            os.remove(path)
    common = f"--loss_function logistic -b 24 --quiet --cache_file {cache} {options}"
    ws = vowpalwabbit.Workspace(f"-d {train} {common} -f {model}.tmp")  # the cache, untimed
    ws.run_parser()
    ws.finish()
    start = time.perf_counter()
    ws = vowpalwabbit.Workspace(f"{common} --passes {epochs} --holdout_off -f {model}")
    ws.run_parser()
    ws.finish()
    seconds = time.perf_counter() - start
    ws = vowpalwabbit.Workspace(f"-d {test} -t -i {model} --link logistic -p {preds} --quiet")
    ws.run_parser()
    ws.finish()
    return seconds, np.loadtxt(preds)


def run_libffm(libffm: str, train: str, test: str, epochs: int, threads: int, out: str) -> dict:
    command = [os.path.join(libffm, "ffm-train"), "-k", "4", "-t", str(epochs), "-r", "0.2", "-l", "0.00002",
               "-s", str(threads), "-p", test, train, os.path.join(out, "libffm.model")]
    start = time.perf_counter()
    # (cwd: libffm writes its binary cache, hundreds of MB, as <train file name>.bin in the
    # working folder; it must not land in a checkout)
    text = subprocess.run(command, capture_output=True, text=True, check=True, cwd=out).stdout
    wall = time.perf_counter() - start
    by_epoch, seconds = [], 0.0
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            by_epoch.append(float(m.group(3)))
            seconds = float(m.group(4))  # libffm's cumulative learning time
    return {"logloss_by_epoch": by_epoch, "seconds": seconds, "wall": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libffm", default=None, help="a folder with libffm's ffm-train, built from source")
    ap.add_argument("--data", default=None)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--test-rows", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--factor-bits", type=int, default=18)
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--pairs", default="table", choices=("table", "latent"),
                    help="the generated data's planted interactions (fastada gen --pairs)")
    ap.add_argument("--zipf", type=float, default=1.05,
                    help="every string column's Zipf exponent (fastada gen --zipf: lower is flatter; 0.8 is "
                         "the README's worst case for speed)")
    ap.add_argument("--learners", default="adagrad,ftrl,fm,ffm",
                    help="fastada's learners, and 'crosses': adagrad told the planted pairs (generated data only)")
    ap.add_argument("--no-vw", action="store_true", help="leave Vowpal Wabbit out")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of fastada's learning and of libffm, the table giving their medians")
    args = ap.parse_args()
    if "crosses" in args.learners.split(",") and args.data is not None:
        raise SystemExit("--learners crosses: only on generated data (--data's planted pairs are not known)")
    os.makedirs(args.out, exist_ok=True)
    data = args.data or os.path.join(args.out, f"learners-{args.rows}" + ("-latent" if args.pairs == "latent" else "")
                                     + ("" if args.zipf == 1.05 else f"-zipf{args.zipf:g}"))
    if not os.path.exists(os.path.join(data, "train.parquet")):
        from fastada.synth import generate
        generate(data, rows=args.rows, test_rows=args.test_rows, seed=11, zipf=(args.zipf, args.zipf), compression="zstd",
                 pairs=args.pairs)
    train, test = os.path.join(data, "train.parquet"), os.path.join(data, "test.parquet")
    rows = pq.ParquetFile(train).metadata.num_rows
    cores = os.cpu_count() or 1
    results = []
    for name in args.learners.split(","):
        learner, crosses = name, ()
        if name == "crosses":
            from fastada.synth import INTERACTIONS
            learner, crosses = "adagrad", [(f"C{a + 1}", f"C{b + 1}") for a, b in INTERACTIONS]
        for threads in sorted({1, cores}):
            evaluations = []
            start = time.perf_counter()
            model = fastada.train(train, learner=learner, epochs=args.epochs, threads=threads, valid=test,
                                  crosses=crosses, factor_bits=args.factor_bits, on_evaluation=evaluations.append)
            seconds = time.perf_counter() - start
            by_epoch = [e["valid_logloss"] for e in evaluations if e["kind"] == "epoch"]
            # learning alone, as libffm's timer counts it: again without the test set scored after
            # each epoch, the epochs' time without the race's (the clock starts before the race)
            learnings = []
            for _ in range(args.repeat):
                epochs = []
                again = fastada.train(train, learner=learner, epochs=args.epochs, threads=threads, crosses=crosses,
                                      lr=model.summary["lr"], factor_lr=model.summary.get("factor_lr") or "auto",
                                      factor_bits=args.factor_bits, all_epochs=True, on_evaluation=epochs.append)
                seconds_learning = epochs[-1]["seconds"] - ((again.summary.get("lr_race") or {}).get("seconds") or 0.0)
                learnings.append(rows * len(epochs) / seconds_learning)
                print(f"fastada {name}, {threads} thread(s), learning: {learnings[-1]:,.0f} rows/s", flush=True)
            rate = f"{model.summary.get('lr'):.3g}" + (f" (factors {model.summary['factor_lr']:.3g})"
                                                       if model.summary.get("factor_lr") else "")
            results.append((f"fastada {name}", threads, rows * len(by_epoch) / seconds, by_epoch, rate,
                            statistics.median(learnings)))
            print(results[-1], flush=True)
    spec = resolve_spec(DataSet(train), label="label", bits=24)
    try:
        import vowpalwabbit  # noqa: F401
        have_vw = True
    except ImportError:
        have_vw = False
    if have_vw and not args.no_vw:
        from fastada.metrics import evaluate
        vw_train, vw_test = os.path.join(args.out, "vw-train.txt"), os.path.join(args.out, "vw-test.txt")
        letters = write_vw(train, vw_train, spec)
        write_vw(test, vw_test, spec)
        y = pq.read_table(test, columns=["label"])["label"].to_numpy()
        for name, options in (("Vowpal Wabbit --ftrl", "--ftrl"), ("Vowpal Wabbit, default", ""),
                              ("Vowpal Wabbit -q :: (every pair of columns crossed)", "-q ::"),
                              (f"Vowpal Wabbit --lrqfa {len(letters)} fields 4", f"--lrqfa {letters}4")):
            seconds, p = run_vw(vw_train, vw_test, options, args.epochs, args.out)
            results.append((name + " (from its cache)", 1, None, [evaluate(p, y)["logloss"]], "",
                            rows * args.epochs / seconds))
            print(results[-1], flush=True)
    if args.libffm:
        # (named by data set: another data set in the same --out must not reuse them)
        texts = {split: os.path.join(args.out, f"libffm-{os.path.basename(data)}-{split}.txt")
                 for split in ("train", "test")}
        for split, path in (("train", train), ("test", test)):
            if not os.path.exists(texts[split]):
                write_libffm(path, texts[split], spec, args.factor_bits)
        for threads in sorted({1, cores}):
            runs = []
            for _ in range(args.repeat):
                runs.append(run_libffm(args.libffm, texts["train"], texts["test"], args.epochs, threads, args.out))
                print(f"libffm, {threads} thread(s), learning: {rows * args.epochs / runs[-1]['seconds']:,.0f} rows/s",
                      flush=True)
            results.append(("libffm", threads, statistics.median(rows * args.epochs / r["wall"] for r in runs),
                            runs[0]["logloss_by_epoch"], "eta 0.2",
                            statistics.median(rows * args.epochs / r["seconds"] for r in runs)))
            print(results[-1], flush=True)
    if args.data is None:  # (generated here: its truth is known)
        from fastada.synth import pair_gap
        gap = pair_gap(seed=11, zipf=(args.zipf, args.zipf), pairs=args.pairs)
        print(f"\nthe planted pairs are worth {gap['without_pairs']:.5f} of test logloss, of which additive "
              f"per-value effects take all but {gap['linear_best']:.5f}: the most a learner of pairs can gain over "
              f"a linear one with unlimited rows")
    print(f"\n{datetime.date.today().isoformat()}, {describe_machine()}, {rows:,} train + {args.test_rows:,} "
          f"test rows (zstd, Zipf {args.zipf:g}, {args.pairs} pairs), {args.epochs} epochs, "
          f"FFM k 4 over 2^{args.factor_bits} factor slots"
          + (f"; fastada's learning and libffm: medians of {args.repeat} runs" if args.repeat > 1 else "") + "\n")
    print("| learner | threads | rows/s, learning | rows/s, whole run | test logloss by epoch | rate |\n"
          "|---|---|---|---|---|---|")
    for name, threads, rate, by_epoch, lr, learning in results:
        shown = " / ".join(f"{x:.5f}" for x in by_epoch) + (" (after the last)" if len(by_epoch) == 1 else "")
        whole = "-" if rate is None else f"{rate:,.0f}"
        print(f"| {name} | {threads} | {learning:,.0f} | {whole} | {shown} | {lr} |")
    for line in ffm_shares(results):
        print(line)


def ffm_shares(results: list) -> list[str]:
    """FFM's gain after the last epoch over the linear learner's best epoch, as a share of the
    gain the planted pairs' exact crosses make (both as the runs of the same threads learned them)."""
    found = {(name, threads): by_epoch for name, threads, _, by_epoch, _, _ in results}
    lines = []
    for threads in sorted({t for _, t in found}):
        linear, ffm, told = (found.get((f"fastada {n}", threads)) for n in ("adagrad", "ffm", "crosses"))
        if linear and ffm and told:
            gain, possible = min(linear) - ffm[-1], min(linear) - min(told)
            share = f": FFM takes {gain / possible:.0%} of it" if possible > 0 else ""
            lines.append(f"\n{threads} thread(s): FFM's gain over the linear learner's best epoch {gain:.4f}; "
                         f"the planted pairs' exact crosses gain {possible:.4f}{share}")
    return lines


if __name__ == "__main__":
    main()
