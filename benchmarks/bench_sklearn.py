"""The scikit-learn drop-in: SGDClassifier(loss="log_loss") against fastada's AdagradClassifier
on the same hashed matrix, and AdagradClassifier on the DataFrame itself.

Usage (after `pip install -e .[bench]`):

    python benchmarks/bench_sklearn.py [--data FOLDER] [--rows 300000] [--test-rows 100000]

Without --data it generates Criteo-like rows (zstd, Zipf 1.05: the hardest the generator makes).
The matrix is sklearn's FeatureHasher over `C1=value` strings and log1p of each number (2^20
columns, no alternate signs): what a scikit-learn user would build. Test logloss, AUC and fit
seconds of each, one table; prints Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe as describe_machine  # noqa: E402

from fastada.metrics import evaluate  # noqa: E402
from fastada.sklearn import AdagradClassifier  # noqa: E402


def hashed(table, hasher):
    """FeatureHasher's matrix of ``table``: each string column as ``name=value``, each number as
    log1p of its value (0 when missing)."""
    cols = table.to_pydict()
    cats = [n for n in cols if n.startswith("C")]
    nums = [n for n in cols if n.startswith("I")]

    def rows():
        for i in range(table.num_rows):
            feats = [(f"{c}={cols[c][i]}", 1.0) for c in cats]
            feats += [(n, float(np.log1p(max(cols[n][i], 0))) if cols[n][i] is not None else 0.0) for n in nums]
            yield feats
    return hasher.transform(rows())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--test-rows", type=int, default=100_000)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import SGDClassifier

    data = args.data or os.path.join(args.out, f"sklearn-{args.rows}")
    if not os.path.exists(os.path.join(data, "train.parquet")):
        from fastada.synth import generate
        generate(data, rows=args.rows, test_rows=args.test_rows, seed=5, zipf=(1.05, 1.05), compression="zstd")
    train = pq.read_table(os.path.join(data, "train.parquet"))
    test = pq.read_table(os.path.join(data, "test.parquet"))
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    X_train_frame, X_test_frame = train.drop_columns(["label"]), test.drop_columns(["label"])
    hasher = FeatureHasher(n_features=1 << 20, input_type="pair", alternate_sign=False)
    X_train, X_test = hashed(train, hasher), hashed(test, hasher)

    runs = [
        ("SGDClassifier(loss='log_loss'), defaults", lambda: SGDClassifier(loss="log_loss", random_state=0), "matrix"),
        ("SGDClassifier(loss='log_loss', max_iter=1), 1 pass", lambda: SGDClassifier(loss="log_loss", max_iter=1, tol=None,
                                                                                      random_state=0), "matrix"),
        ("AdagradClassifier(), 1 pass", lambda: AdagradClassifier(), "matrix"),
        ("AdagradClassifier(epochs=3)", lambda: AdagradClassifier(epochs=3), "matrix"),
        ("AdagradClassifier() on the DataFrame, 1 pass", lambda: AdagradClassifier(), "frame"),
    ]
    results = []
    for name, make, kind in runs:
        X_fit, X_score = (X_train, X_test) if kind == "matrix" else (X_train_frame, X_test_frame)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SGD's ConvergenceWarning for 1 pass
            start = time.perf_counter()
            clf = make().fit(X_fit, y_train)
            seconds = time.perf_counter() - start
        p = clf.predict_proba(X_score)[:, 1]
        metrics = evaluate(p, y_test)
        results.append((name, seconds, metrics["logloss"], metrics["auc"], getattr(clf, "n_iter_", None)))
        print(f"{name:55s} {seconds:7.1f} s  logloss {metrics['logloss']:.4f}  AUC {metrics['auc']:.4f}", flush=True)
    print(f"\n{datetime.date.today().isoformat()}, {describe_machine()}, {args.rows:,} train + {args.test_rows:,} test "
          f"rows (zstd, Zipf 1.05), FeatureHasher 2^20 columns\n")
    print("| estimator | input | fit seconds | test logloss | test AUC |\n|---|---|---|---|---|")
    for (name, seconds, logloss, auc, iters), (_, _, kind) in zip(results, runs):
        shown = name + (f" ({iters} passes)" if iters and "defaults" in name else "")
        print(f"| {shown} | {'FeatureHasher matrix' if kind == 'matrix' else 'DataFrame'} | {seconds:.1f} | "
              f"{logloss:.4f} | {auc:.4f} |")


if __name__ == "__main__":
    main()
