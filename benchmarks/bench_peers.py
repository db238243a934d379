"""fastada against its peers on the same Criteo-like data, in one run, on this machine.

Usage (after `pip install -e .[bench]`):

    python benchmarks/bench_peers.py                 # generate 2M + 200k rows, run every peer installed
    python benchmarks/bench_peers.py --rows 200000 --peers vw   # smaller, VW only

Each system trains one pass (2^bits slots) in a process of its own; the table reports train rows/s
(read its input, hash, learn) and rows/s of the whole process (plus start-up and imports, minus
scoring the test set; fastada's Numba cache is warmed first), test logloss and AUC (fastada's streaming metrics on every system's predictions), and the
process's peak RSS. Systems: fastada (from Parquet, 1 and all threads), Vowpal Wabbit through the
`vowpalwabbit` package with its own file parser (text, and its cache file), scikit-learn
FeatureHasher + SGDClassifier(log_loss) with partial_fit per chunk, and (``--peers ...,torch``,
with `pip install torch`) PyTorch's EmbeddingBag + Adagrad in mini-batches on fastada's hashed
features made before its clock starts (learning alone, as VW's cache). Writes OUT/results.json
and OUT/results.md; ratios from the same run are the headline.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from machine import describe as describe_machine

HERE = os.path.dirname(os.path.abspath(__file__))


# -- workers: each runs in its own process and prints one JSON line -----------------------------

def worker_fastada(args):
    import fastada
    start = time.perf_counter()
    threads = args.threads if args.threads == "auto" else int(args.threads)
    model = fastada.train(os.path.join(args.data, "train.parquet"), bits=args.bits, threads=threads)
    seconds = time.perf_counter() - start
    p = model.predict(os.path.join(args.data, "test.parquet"))
    return seconds, p


def _vw_text(data_dir, split):
    """VW's input (made once, not timed): label |c C1=v ... |n I1:log1p(x) ..."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    path = os.path.join(data_dir, f"{split}.vw")
    if os.path.exists(path):
        return path
    pf = pq.ParquetFile(os.path.join(data_dir, f"{split}.parquet"))
    with open(path + ".tmp", "w") as f:
        for batch in pf.iter_batches(batch_size=1 << 17):
            parts = [pc.if_else(pc.equal(batch.column("label"), 1), "1 |c", "-1 |c")]
            for name in batch.schema.names:
                col = batch.column(name)
                if name.startswith("C"):
                    parts.append(pc.binary_join_element_wise(f"{name}=", pc.fill_null(col.cast("string"), "NULL"), ""))
            parts.append("|n")
            for name in batch.schema.names:
                if name.startswith("I"):
                    x = pc.cast(batch.column(name), "float64")
                    v = pc.round(pc.log1p(pc.max_element_wise(pc.fill_null(x, 0.0), 0.0)), 4)
                    parts.append(pc.binary_join_element_wise(f"{name}:", pc.cast(v, "string"), ""))
            lines = pc.binary_join_element_wise(*parts, " ")
            f.write("\n".join(lines.to_pylist()) + "\n")
    os.replace(path + ".tmp", path)
    return path


def worker_vw(args, cache: bool):
    import vowpalwabbit
    train = _vw_text(args.data, "train")
    test = _vw_text(args.data, "test")
    model = os.path.join(args.out, "vw.model")
    opts = f"--loss_function logistic -b {args.bits} --quiet -f {model}"
    cache_file = os.path.join(args.out, "train.vwcache")
    if cache and not os.path.exists(cache_file):  # build the cache (not timed)
        ws = vowpalwabbit.Workspace(f"-d {train} --cache_file {cache_file} {opts}")
        ws.run_parser()
        ws.finish()
    start = time.perf_counter()
    source = f"--cache_file {cache_file}" if cache else f"-d {train}"
    ws = vowpalwabbit.Workspace(f"{source} {opts}")
    ws.run_parser()
    ws.finish()
    seconds = time.perf_counter() - start
    preds = os.path.join(args.out, "vw.preds")
    ws = vowpalwabbit.Workspace(f"-d {test} -t -i {model} --link logistic -p {preds} --quiet")
    ws.run_parser()
    ws.finish()
    return seconds, np.loadtxt(preds)


def worker_sklearn(args):
    import pyarrow.parquet as pq
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import SGDClassifier

    hasher = FeatureHasher(n_features=1 << args.bits, input_type="pair", alternate_sign=False)

    def rows(batch):
        cols = batch.to_pydict()
        cats = [n for n in cols if n.startswith("C")]
        nums = [n for n in cols if n.startswith("I")]
        for i in range(batch.num_rows):
            feats = [(f"{c}={cols[c][i]}", 1.0) for c in cats]
            feats += [(n, float(np.log1p(max(cols[n][i], 0))) if cols[n][i] is not None else 0.0) for n in nums]
            yield feats

    clf = SGDClassifier(loss="log_loss", alpha=1e-5)
    start = time.perf_counter()
    for batch in pq.ParquetFile(os.path.join(args.data, "train.parquet")).iter_batches(batch_size=1 << 16):
        x = hasher.transform(rows(batch))
        clf.partial_fit(x, batch.column("label").to_numpy(), classes=[0, 1])
    seconds = time.perf_counter() - start
    preds = []
    for batch in pq.ParquetFile(os.path.join(args.data, "test.parquet")).iter_batches(batch_size=1 << 16):
        preds.append(clf.predict_proba(hasher.transform(rows(batch)))[:, 1])
    return seconds, np.concatenate(preds)


def _hashed(path: str, bits: int):
    """Every row of ``path`` as fastada's featurizer hashes it (the same features fastada learns):
    slot indices (rows x features, int64) and their values (1 for categorical ones)."""
    import pyarrow.parquet as pq

    from fastada.features import Featurizer
    from fastada.reader import DataSet
    from fastada.roles import resolve_spec
    spec = resolve_spec(DataSet(path), label="label", bits=bits)
    featurizer = Featurizer(spec)
    slots, values, labels = [], [], []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 16):
        block = featurizer(batch, path)
        slots.append(np.concatenate([block.cat, block.num], axis=1).astype(np.int64) & ((1 << bits) - 1))
        values.append(np.concatenate([np.ones(block.cat.shape, np.float32), block.num_values], axis=1))
        labels.append(block.labels.astype(np.float32))
    return np.concatenate(slots), np.concatenate(values), np.concatenate(labels)


def worker_torch(args):
    """PyTorch as a CTR user writes it: an EmbeddingBag of 2^bits one-number weights (sparse
    gradients) plus a bias, logistic loss summed over mini-batches of ``--torch-batch`` rows, and
    torch.optim.Adagrad at ``--torch-lr``, on every core. Its input is fastada's hashed features,
    made before the clock starts (as VW's cache is): the time is learning alone."""
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    slots, values, labels = _hashed(os.path.join(args.data, "train.parquet"), args.bits)
    test_slots, test_values, _ = _hashed(os.path.join(args.data, "test.parquet"), args.bits)
    embedding = torch.nn.EmbeddingBag(1 << args.bits, 1, mode="sum", sparse=True)
    torch.nn.init.zeros_(embedding.weight)
    bias = torch.nn.Parameter(torch.zeros(1))
    optimizers = [torch.optim.Adagrad(embedding.parameters(), lr=args.torch_lr),
                  torch.optim.Adagrad([bias], lr=args.torch_lr)]
    loss_function = torch.nn.BCEWithLogitsLoss(reduction="sum")
    x, v, y = torch.from_numpy(slots), torch.from_numpy(values), torch.from_numpy(labels)
    batch = args.torch_batch
    start = time.perf_counter()
    for lo in range(0, len(labels), batch):
        logits = embedding(x[lo:lo + batch], per_sample_weights=v[lo:lo + batch]).squeeze(1) + bias
        loss = loss_function(logits, y[lo:lo + batch])
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = embedding(torch.from_numpy(test_slots), per_sample_weights=torch.from_numpy(test_values)).squeeze(1)
        return seconds, torch.sigmoid(logits + bias).numpy().astype(np.float64)


WORKERS = {
    "fastada": worker_fastada,
    "vw-text": lambda a: worker_vw(a, cache=False),
    "vw-cache": lambda a: worker_vw(a, cache=True),
    "sklearn": worker_sklearn,
    "torch": worker_torch,
}


def run_worker(args):
    # fastada first, as its command line does: imported before pyarrow, it picks Arrow's allocator
    from fastada.metrics import evaluate  # noqa: I001
    import pyarrow.parquet as pq
    started = time.perf_counter()
    seconds, p = WORKERS[args.worker](args)
    score_seconds = time.perf_counter() - started - seconds
    labels = pq.read_table(os.path.join(args.data, "test.parquet"), columns=["label"]).column("label").to_numpy()
    metrics = evaluate(p, labels)
    print(json.dumps({"train_seconds": seconds, "score_seconds": score_seconds, "logloss": metrics["logloss"], "auc": metrics["auc"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# -- the driver ---------------------------------------------------------------------------------

def available(peer):
    module = {"vw-text": "vowpalwabbit", "vw-cache": "vowpalwabbit", "sklearn": "sklearn", "torch": "torch"}.get(peer)
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--test-rows", type=int, default=200_000)
    ap.add_argument("--data", default=None, help="a folder from `fastada gen` (default: generate into OUT/data)")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--bits", type=int, default=24)
    ap.add_argument("--peers", default="fastada,vw-text,vw-cache,sklearn,torch")
    ap.add_argument("--threads", default=None, help="fastada's threads (default: auto, the default, then 1 and all)")
    # (PyTorch's best on 1M flat rows, 2026-12-06: rate 0.02 / 0.05 / 0.1 / 0.2 at 512 and 4096 rows
    # a batch gave logloss 0.4885 / 0.4822 / 0.4854 / 0.5052 and 0.4916 / 0.4825 / 0.4847 / 0.5038,
    # 180k rows/s at 512, 290k at 4096, 308k at 32,768 with logloss 0.4988)
    ap.add_argument("--torch-lr", type=float, default=0.05, help="PyTorch's Adagrad rate (peer torch)")
    ap.add_argument("--torch-batch", type=int, default=4096, help="PyTorch's mini-batch rows (peer torch)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        return run_worker(args)

    from fastada.synth import generate
    data = args.data or os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data, "train.parquet")):
        print(f"generating {args.rows:,} + {args.test_rows:,} rows into {data}", file=sys.stderr)
        generate(data, rows=args.rows, test_rows=args.test_rows)
    import pyarrow.parquet as pq
    rows = pq.ParquetFile(os.path.join(data, "train.parquet")).metadata.num_rows
    cores = os.cpu_count()
    runs = []
    for peer in args.peers.split(","):
        if not available(peer):
            print(f"skipping {peer}: not installed (pip install -e .[bench])", file=sys.stderr)
            continue
        thread_counts = (["auto", 1] + ([cores] if cores > 1 else []) if peer == "fastada" and args.threads is None
                         else [args.threads or 1])
        for threads in thread_counts:
            cmd = [sys.executable, __file__, "--worker", peer, "--data", data, "--out", args.out,
                   "--bits", str(args.bits), "--threads", str(threads),
                   "--torch-lr", str(args.torch_lr), "--torch-batch", str(args.torch_batch)]
            if peer == "fastada":  # warm Numba's cache so compiling is not counted
                warm = ("import fastada, pyarrow.parquet as pq, sys; t = pq.read_table(sys.argv[1]).slice(0, 2000); "
                        "fastada.train(t, bits=10, threads=2).predict(t)")
                subprocess.run([sys.executable, "-c", warm, os.path.join(data, "train.parquet")], check=True)
            start = time.perf_counter()
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            wall = time.perf_counter() - start
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = ("default: --threads auto" if threads == "auto"
                    else f"{threads} thread{'s' * (int(threads) > 1)}")
            r.update(system=peer if peer != "fastada" else f"fastada ({name})",
                     process_seconds=wall, train_rows_per_s=rows / r["train_seconds"])
            r["process_rows_per_s"] = rows / (wall - r.get("score_seconds", 0.0))
            runs.append(r)
            print(f"{r['system']:<22} {r['train_rows_per_s']:>12,.0f} rows/s  logloss {r['logloss']:.4f}  "
                  f"AUC {r['auc']:.4f}  peak RSS {r['peak_rss_mb']:,.0f} MB", file=sys.stderr)
    machine = describe_machine()
    result = {"date": datetime.date.today().isoformat(), "machine": machine, "rows": rows, "bits": args.bits, "runs": runs}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    # the headline is fastada as a user runs it (its defaults), not its best run
    fastada_runs = [r for r in runs if r["system"].startswith("fastada")]
    best = next((r for r in fastada_runs if "default" in r["system"]), fastada_runs[0] if fastada_runs else runs[0])
    lines = [f"{result['date']}, {machine}, {rows:,} train rows, 2^{args.bits} slots, one pass", "",
             "| system | train rows/s | fastada's speed-up | rows/s, whole process | test logloss | test AUC | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['system']} | {r['train_rows_per_s']:,.0f} | {best['train_rows_per_s'] / r['train_rows_per_s']:.2f}x"
                     f" | {r['process_rows_per_s']:,.0f} | {r['logloss']:.4f} | {r['auc']:.4f} | {r['peak_rss_mb']:,.0f} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    main()
