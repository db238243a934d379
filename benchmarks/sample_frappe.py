"""Make the frappe app-usage sample for ``bench_quality.py``: a real log fastada's development
never tuned on, kept out of the repository (research data; fetched, not redistributed).

Usage:
  python benchmarks/sample_frappe.py OUT_DIR [--from DIR]

Frappe (Baltrunas et al., arXiv:1505.03014): app usage in context, 10 fields (user, item,
daytime, weekday, weekend, home/work, cost, weather, country, city), two sampled negatives for each
positive (33% clicks). The split is the one published with Neural Factorization Machines (He and
Chua, SIGIR 2017) in libFM format: its validation file (57,722 rows) is the training set here and
its test file (28,860 rows) the test set. Each row's ten ``index:1`` pairs become string columns
``f0`` .. ``f9`` (the field is the position), the label ``click`` (1 / 0).

Writes ``OUT_DIR/frappe/frappe_train.parquet`` and ``frappe_test.parquet``; then
``FASTADA_SAMPLES=OUT_DIR python benchmarks/bench_quality.py``. ``--from DIR``: the two libFM files
already downloaded (``frappe.validation.libfm``, ``frappe.test.libfm``), no network.
"""

from __future__ import annotations

import argparse
import os
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq

SOURCE = "https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine/master/data/frappe/"
SPLITS = {"validation": "frappe_train", "test": "frappe_test"}  # libFM file -> sample file


def libfm_table(lines: list[str]) -> pa.Table:
    """``label index:value ...`` rows (label 1 or -1, one index per field) as a table."""
    rows = [line.split() for line in lines if line.strip()]
    width = max(len(r) - 1 for r in rows)
    columns = {"click": pa.array([1 if float(r[0]) > 0 else 0 for r in rows], pa.int64())}
    for j in range(width):
        columns[f"f{j}"] = pa.array([r[1 + j].split(":")[0] if len(r) > 1 + j else None for r in rows], pa.string())
    return pa.table(columns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--from", dest="source", help="folder holding the two libFM files (else downloaded)")
    args = ap.parse_args()
    target = os.path.join(args.out, "frappe")
    os.makedirs(target, exist_ok=True)
    for split, name in SPLITS.items():
        file = f"frappe.{split}.libfm"
        if args.source:
            with open(os.path.join(args.source, file)) as f:
                lines = f.read().splitlines()
        else:
            with urllib.request.urlopen(SOURCE + file, timeout=60) as response:
                lines = response.read().decode().splitlines()
        table = libfm_table(lines)
        pq.write_table(table, os.path.join(target, f"{name}.parquet"))
        clicks = sum(table.column("click").to_pylist())
        print(f"{name}: {table.num_rows:,} rows, {clicks / table.num_rows:.1%} clicks")


if __name__ == "__main__":
    main()
