"""Negative downsampling at a 2% click rate: rows learned, test logloss and calibration of
--negative-rate 0.1 against training on everything, on three draws of the planted data the test
suite uses (tests/test_defaults.py: two id columns, 600k train + 200k test rows).

Usage:  python benchmarks/bench_downsampling.py
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import fastada  # noqa: E402
from test_defaults import _rare_clicks  # noqa: E402

print("| draw | rows kept | logloss, everything | logloss, R = 0.1 | calibration, everything | calibration, R = 0.1 | bias shift |")
print("|---|---|---|---|---|---|---|")
for seed in (12345, 7, 99):
    rng = np.random.default_rng(seed)
    train, test = _rare_clicks(rng, 600_000), _rare_clicks(np.random.default_rng(seed + 1000), 200_000)
    full = fastada.train(train, label="label", bits=16, threads=1)
    sampled = fastada.train(train, label="label", bits=16, threads=1, negative_rate=0.1)
    f, s = full.evaluate(test), sampled.evaluate(test)
    print(f"| {seed} | {sampled.summary['rows'] / full.summary['rows']:.3f} | {f['logloss']:.5f} | {s['logloss']:.5f} | "
          f"{f['calibration']:.4f} | {s['calibration']:.4f} | {sampled.summary['calibration_shift']:+.4f} |")
