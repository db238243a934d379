"""How much of reading and hashing holds the GIL: the share of one reader's time spent in Python
code (everything but Parquet decoding and fastada's compiled calls, which release it). By
Amdahl's law, reader threads cannot scale past about 1 / that share.

Usage:  python benchmarks/bench_gil.py [--data FOLDER] [--rows 2000000]
(FOLDER from `fastada gen`; without it, zstd Zipf-1.05 rows are generated into bench-out/.)
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

import numpy as np

from fastada import kernels
from fastada.features import Featurizer
from fastada.reader import DataSet
from fastada.roles import resolve_spec
from fastada.stream import _string_columns

# functions that run without the GIL: Parquet decoding (pyarrow releases it) and compiled kernels
RELEASED = ("_file_chunks", "hash_chunk", "dictionary_hashes", "locate", "hash_strings")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--rows", type=int, default=2_000_000)
    args = ap.parse_args()
    data = args.data or os.path.join("bench-out", f"gil-{args.rows}")
    if not os.path.exists(os.path.join(data, "train.parquet")):
        from fastada.synth import generate
        generate(data, rows=args.rows, test_rows=1000, seed=2, zipf=(1.05, 1.05), compression="zstd")
    dataset = DataSet(os.path.join(data, "train.parquet"))
    spec = resolve_spec(dataset, label="label", bits=24)
    featurizer, dictionary = Featurizer(spec), _string_columns(dataset, spec)
    mask, hot = np.uint32(spec.slots - 1), kernels.hot_slots(spec.slots + 1)

    def read_all():  # what a reader thread does for each chunk: decode, hash, locate
        for chunk in dataset.chunks(featurizer.columns, 65536, None, dictionary):
            block = featurizer(chunk.batch, chunk.where)
            slots = np.empty((block.rows, block.cat.shape[1] + block.num.shape[1]), np.int32)
            kernels.locate(block.cat, block.num, mask, hot.lookup, slots, np.zeros((0, 0), np.int16))

    read_all()  # compiled code loaded
    start = time.perf_counter()
    read_all()
    seconds = time.perf_counter() - start
    profile = cProfile.Profile()
    profile.enable()
    read_all()
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(tottime for (_, _, name), (_, _, tottime, _, _) in stats.items())
    released = sum(tottime for (_, _, name), (_, _, tottime, _, _) in stats.items() if name in RELEASED)
    held = (total - released) / total
    print(f"{dataset.num_rows:,} rows read and hashed in {seconds:.2f} s ({dataset.num_rows / seconds:,.0f} rows/s, "
          f"one thread); {held:.1%} of the time holds the GIL: reader threads scale to at most ~{1 / held:.0f}x")


if __name__ == "__main__":
    main()
