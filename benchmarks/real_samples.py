"""Make public real click logs into samples for ``bench_quality.py``: logs fastada's development
never tuned on, kept out of the repository (research data; fetched, not redistributed).

Usage:
  python benchmarks/real_samples.py OUT_DIR [--only NAME ...] [--from DIR]

Each log is published in libFM format (``label index:1 ...``, one index per field, in field
order); each row's indices become string columns ``f0`` .. ``fN`` (the field is the position),
the label ``click`` (1 / 0). Writes ``OUT_DIR/NAME/NAME_train.parquet`` and ``NAME_test.parquet``
for each; then ``FASTADA_SAMPLES=OUT_DIR python benchmarks/bench_quality.py``.

* ``frappe`` (Baltrunas et al., arXiv:1505.03014): app usage in context, 10 fields (user, item,
  daytime, weekday, weekend, home/work, cost, weather, country, city), two sampled negatives for
  each positive (33% clicks), split as published with Neural Factorization Machines (He and Chua,
  SIGIR 2017): its validation file (57,722 rows) trains here, its test file (28,860 rows) tests.
* ``ipinyou`` (iPinYou RTB logs, Zhang et al., arXiv:1407.7073): display-ad impressions of one
  advertiser, 16 fields (weekday, hour, user agent, region, city, ad exchange, domain, URL, slot
  id, size, visibility, format, creative, ...), 0.95% clicks in training (26,773 rows) and 0.24% in
  the later test days (21,150 rows), as published with "Deep Learning over Multi-field Categorical
  Data" (Zhang, Du, Wang, ECIR 2016).
* ``talkingdata`` (TalkingData AdTracking Fraud Detection, Kaggle 2018): its public 100,000-row
  ``train_sample.csv``, 0.23% downloads (``is_attributed``); integer-coded ``ip``, ``app``,
  ``device``, ``os``, ``channel`` and the ``click_time`` timestamp as the file has them (roles
  are fastada's to find), ``attributed_time`` dropped (it is set exactly when the label is 1).
  The first 80,000 rows train, the last 20,000 test. Kaggle data: fetched from a public copy,
  not redistributed here.

``--from DIR``: the libFM files already downloaded (as named in :data:`SAMPLES`), no network.
"""

from __future__ import annotations

import argparse
import os
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq

# name: (where its files are, {file: the sample's split})
SAMPLES = {
    "frappe": ("https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine/master/data/frappe/",
               {"frappe.validation.libfm": "train", "frappe.test.libfm": "test"}),
    "ipinyou": ("https://raw.githubusercontent.com/wnzhang/deep-ctr/master/data/",
                {"train.fm.txt": "train", "test.fm.txt": "test"}),
    "talkingdata": ("https://raw.githubusercontent.com/yxjsxy/app_download_prediction/master/",
                    {"train_sample.csv": "train+test"}),
}
TALKINGDATA_TRAIN_ROWS = 80_000


def libfm_table(lines: list[str]) -> pa.Table:
    """``label index:value ...`` rows (label 1, or 0 / -1, one index per field) as a table."""
    rows = [line.split() for line in lines if line.strip()]
    width = max(len(r) - 1 for r in rows)
    columns = {"click": pa.array([1 if float(r[0]) > 0 else 0 for r in rows], pa.int64())}
    for j in range(width):
        columns[f"f{j}"] = pa.array([r[1 + j].split(":")[0] if len(r) > 1 + j else None for r in rows], pa.string())
    return pa.table(columns)


def talkingdata_tables(text: str) -> dict[str, pa.Table]:
    """TalkingData's ``train_sample.csv`` as its train and test tables (see the module's notes).
    The public copy has two stray bytes before the header; anything before ``ip,`` is skipped."""
    import io

    import pyarrow.csv as pcsv
    text = text[text.index("ip,"):]
    table = pcsv.read_csv(io.BytesIO(text.encode()), convert_options=pcsv.ConvertOptions(
        column_types={"click_time": pa.timestamp("s"), "is_attributed": pa.int64()},
        include_columns=["ip", "app", "device", "os", "channel", "click_time", "is_attributed"]))
    return {"train": table.slice(0, TALKINGDATA_TRAIN_ROWS), "test": table.slice(TALKINGDATA_TRAIN_ROWS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--only", nargs="+", choices=sorted(SAMPLES), help="these samples (default: all)")
    ap.add_argument("--from", dest="source", help="folder holding the libFM files (else downloaded)")
    args = ap.parse_args()
    for name in args.only or sorted(SAMPLES):
        url, files = SAMPLES[name]
        target = os.path.join(args.out, name)
        os.makedirs(target, exist_ok=True)
        for file, split in files.items():
            if args.source:
                with open(os.path.join(args.source, file)) as f:
                    text = f.read()
            else:
                with urllib.request.urlopen(url + file, timeout=60) as response:
                    text = response.read().decode()
            tables = talkingdata_tables(text) if name == "talkingdata" else {split: libfm_table(text.splitlines())}
            for part, table in tables.items():
                pq.write_table(table, os.path.join(target, f"{name}_{part}.parquet"))
                label = "click" if "click" in table.column_names else "is_attributed"
                clicks = sum(table.column(label).to_pylist())
                print(f"{name}_{part}: {table.num_rows:,} rows, {clicks / table.num_rows:.2%} clicks")


if __name__ == "__main__":
    main()
