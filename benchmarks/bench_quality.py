"""Test logloss on real click logs: fastada's defaults against Vowpal Wabbit's, 1 pass and 5.

Usage (after `pip install -e .[bench]`):

    python benchmarks/bench_quality.py                      # every sample in ../shared/data
    FASTADA_SAMPLES=/data/a:/data/b python benchmarks/bench_quality.py --out bench-quality
    python benchmarks/bench_quality.py --generated 0.001,0.01,0.25 --generated-rows 2000000

A sample is a folder with one `*train*.parquet` and one `*test*.parquet`; its label is the first
of label, click, clicked, is_attributed, is_click, target, y that it has. For each sample and
each of 1 and 5 passes:

* fastada with its defaults (`fastada.train(train, label=...)`: lr auto, roles from the data;
  `--bits` slots, one thread so runs repeat exactly);
* fastada at every fixed rate of a grid (what the best rate in hindsight would reach);
* Vowpal Wabbit with its defaults (`--loss_function logistic -b BITS`; 5 passes add `-c
  --passes 5`, with VW's own holdout and early termination), each column that fastada makes
  categorical given as `name=value` (nulls as `name=NULL`), each numeric one as
  `name:log1p(max(x, 0))`, the features fastada's numeric value feature sees.

Writes OUT/results.json and OUT/results.md (with the machine and date); ratios are fastada's
logloss over VW's (below 1 = fastada better) and over the best fixed rate, each with a 90%
interval from a paired bootstrap over the test rows (the samples' test sets are small: 432 rows,
or 45 clicks, move a ratio by several percent).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import sys
import tempfile

import numpy as np
from machine import describe as describe_machine

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

LABELS = ("label", "click", "clicked", "is_attributed", "is_click", "target", "y")
GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def find_samples(roots):
    found = []
    for root in roots:
        for folder in sorted({os.path.dirname(p) for p in glob.glob(os.path.join(root, "**", "*.parquet"),
                                                                     recursive=True)}):
            train = sorted(glob.glob(os.path.join(folder, "*train*.parquet")))
            test = sorted(glob.glob(os.path.join(folder, "*test*.parquet")))
            if len(train) == 1 and len(test) == 1:
                found.append((os.path.basename(folder), train[0], test[0]))
    return found


def generated_samples(out, rates, rows):
    """(name, train, test) of a generated sample at each click rate in ``rates`` (comma-separated),
    written under ``out`` if not there yet."""
    from fastada.synth import generate
    found = []
    for rate in (float(r) for r in rates.split(",") if r.strip()):
        folder = os.path.join(out, "generated", f"gen-{rate:g}-{rows}")
        train, test = os.path.join(folder, "train.parquet"), os.path.join(folder, "test.parquet")
        if not os.path.exists(test):
            generate(folder, rows=rows, test_rows=200_000, seed=12, zipf=(1.05, 1.05), compression="zstd",
                     click_rate=rate)
        found.append((os.path.basename(folder), train, test))
    return found


def vw_text(path, spec, out):
    """The rows of ``path`` as VW lines, features as fastada's spec takes them."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    with open(out, "w") as f:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 16):
            y = pc.cast(batch.column(spec.label), "float64")
            parts = [pc.if_else(pc.greater(y, 0), "1 |f", "-1 |f")]
            for name in spec.categorical:
                col = batch.column(name)
                text = pc.replace_substring_regex(pc.cast(col, "string"), r"[\s:|]", "_")
                parts.append(pc.binary_join_element_wise(f"{_clean(name)}=", pc.fill_null(text, "NULL"), ""))
            for name in spec.numeric:
                x = pc.fill_null(pc.cast(batch.column(name), "float64"), 0.0)
                v = pc.round(pc.log1p(pc.max_element_wise(x, 0.0)), 5)
                parts.append(pc.binary_join_element_wise(f"{_clean(name)}:", pc.cast(v, "string"), ""))
            f.write("\n".join(pc.binary_join_element_wise(*parts, " ").to_pylist()) + "\n")


def _interval(pair):
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


def _clean(name):
    return "".join("_" if c in " :|" else c for c in name)


def row_losses(p, y):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def bootstrap_ratio(a, b, draws=2000, seed=0):
    """90% interval of sum(a) / sum(b) over test rows drawn with replacement (paired)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (draws, len(a)))
    ratios = a[idx].sum(axis=1) / b[idx].sum(axis=1)
    return [float(x) for x in np.percentile(ratios, [5, 95])]


def run_vw(train_vw, test_vw, bits, passes, work):
    import vowpalwabbit
    model = os.path.join(work, "vw.model")
    preds = os.path.join(work, "vw.preds")
    extra = f"-c --cache_file {os.path.join(work, 'vw.cache')} --passes {passes} -k" if passes > 1 else ""
    ws = vowpalwabbit.Workspace(f"-d {train_vw} --loss_function logistic -b {bits} --quiet -f {model} {extra}")
    ws.run_parser()
    ws.finish()
    ws = vowpalwabbit.Workspace(f"-d {test_vw} -t -i {model} --link logistic -p {preds} --quiet")
    ws.run_parser()
    ws.finish()
    return np.loadtxt(preds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-quality")
    ap.add_argument("--bits", type=int, default=22)
    ap.add_argument("--passes", default="1,5")
    ap.add_argument("--generated", default="",
                    help="click rates (e.g. 0.001,0.01,0.25): also generated samples at each, made once in OUT "
                         "(`fastada gen --click-rate R --rows R_ROWS --test-rows 200000 --zipf 1.05 --compression "
                         "zstd --seed 12`), where lr auto's horizon shows (rare clicks, many rows)")
    ap.add_argument("--generated-rows", type=int, default=200_000, help="training rows of each generated sample")
    args = ap.parse_args()
    import pyarrow.parquet as pq

    import fastada
    from fastada.metrics import evaluate
    roots = [os.path.join(HERE, "..", "..", "shared", "data")] + [p for p in os.environ.get("FASTADA_SAMPLES", "").split(":") if p]
    samples = find_samples(roots) + generated_samples(args.out, args.generated, args.generated_rows)
    if not samples:
        sys.exit("no samples found (a folder with one *train*.parquet and one *test*.parquet)")
    try:
        import vowpalwabbit  # noqa: F401
        have_vw = True
    except ImportError:
        have_vw = False
        print("Vowpal Wabbit not installed (pip install -e .[bench]): fastada only", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, train, test in samples:
        names = pq.ParquetFile(train).schema_arrow.names
        label = next((c for c in LABELS if c in names), None)
        if label is None:
            print(f"{name}: no label column among {LABELS}: skipped", file=sys.stderr)
            continue
        y = pq.read_table(test, columns=[label]).column(label).to_numpy()
        y = (y > 0).astype(np.float64)
        rows = pq.ParquetFile(train).metadata.num_rows
        rate = float(pq.read_table(train, columns=[label]).column(label).to_numpy().clip(0).mean())
        with tempfile.TemporaryDirectory() as work:
            for passes in [int(p) for p in args.passes.split(",")]:
                r = {"sample": name, "train_rows": rows, "click_rate": rate, "passes": passes}
                model = fastada.train(train, label=label, bits=args.bits, threads=1, epochs=passes, shuffle=passes > 1)
                ours = model.predict(test)
                r["fastada"] = evaluate(ours, y)["logloss"]
                r["fastada_epochs"] = model.summary["epochs"]
                r["fastada_lr"] = model.summary["lr"]
                grid, predictions = {}, {}
                for lr in GRID:
                    m = fastada.train(train, label=label, bits=args.bits, threads=1, epochs=passes, lr=lr,
                                      shuffle=passes > 1)
                    predictions[lr] = m.predict(test)
                    grid[lr] = evaluate(predictions[lr], y)["logloss"]
                best = min(grid, key=grid.get)
                r["best_fixed_lr"], r["best_fixed"] = best, grid[best]
                r["best_fixed_interval"] = bootstrap_ratio(row_losses(ours, y), row_losses(predictions[best], y))
                r["fixed"] = {f"{k:g}": v for k, v in grid.items()}
                if have_vw:
                    train_vw, test_vw = os.path.join(work, "train.vw"), os.path.join(work, "test.vw")
                    if not os.path.exists(train_vw):
                        vw_text(train, model.spec, train_vw)
                        vw_text(test, model.spec, test_vw)
                    theirs = run_vw(train_vw, test_vw, args.bits, passes, work)
                    r["vw"] = evaluate(theirs, y)["logloss"]
                    r["vw_interval"] = bootstrap_ratio(row_losses(ours, y), row_losses(theirs, y))
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
    header = f"{datetime.date.today()}, {describe_machine()}, 2^{args.bits} slots, fastada 1 thread"
    lines = [header, "",
             "| sample (train rows, click rate) | passes | VW defaults | fastada defaults (lr picked, epochs) | "
             "fastada / VW (90% interval) | best fixed lr | fastada / best fixed (90% interval) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        vw = r.get("vw")
        lines.append(f"| {r['sample']} ({r['train_rows']:,}, {r['click_rate']:.1%}) | {r['passes']} | "
                     f"{vw:.5f} | " if vw is not None else f"| {r['sample']} | {r['passes']} | - | ")
        picked = f"{r['fastada']:.5f} ({r['fastada_lr']:.3g}, {r['fastada_epochs']})"
        lines[-1] += (f"{picked} | {r['fastada'] / vw:.3f} ({_interval(r['vw_interval'])}) | " if vw is not None
                      else f"{picked} | - | ")
        lines[-1] += (f"{r['best_fixed']:.5f} ({r['best_fixed_lr']:g}) | {r['fastada'] / r['best_fixed']:.3f} "
                      f"({_interval(r['best_fixed_interval'])}) |")
    worst_vw = max((r["fastada"] / r["vw"] for r in results if r.get("vw")), default=None)
    worst_best = max(r["fastada"] / r["best_fixed"] for r in results)
    lines += ["", f"worst case: fastada / VW {worst_vw:.3f}" if worst_vw else "", f"worst case: fastada / best fixed rate {worst_best:.3f}"]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"machine": describe_machine(), "date": str(datetime.date.today()), "bits": args.bits,
                   "results": results}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
