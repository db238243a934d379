"""From Arrow record batches to the arrays the learner reads: hashes, values, labels, weights.

For each row, a :class:`FeatureBlock` holds a fixed number of features:

* ``cat`` (uint32, rows x k): hashes of features whose value is 1 — one per categorical column,
  one bucket feature per numeric column (numeric_mode "bucket" or "both"), one per cross;
* ``num`` / ``num_values`` (uint32 / float32, rows x m): one value feature per numeric column
  (numeric_mode "value" or "both").

Nulls are features, not gaps: a null categorical value hashes to the column's null feature and a
missing numeric value (null, NaN, +-inf) to the column's missing feature with value 1. This keeps
every row the same width and lets the model learn what absence means (it often predicts clicks).

A dictionary-encoded column's dictionary is hashed once and gathered by index; the hashes are
cached by dictionary *content* (same dictionary: reuse; the previous one is a prefix: hash only
the tail), because Parquet hands every batch a fresh copy of its row group's dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import hashing
from .config import FastadaError, FeatureSpec

_NO_NULLS = np.zeros(0, dtype=np.uint8)


@dataclass
class FeatureBlock:
    cat: np.ndarray
    num: np.ndarray
    num_values: np.ndarray
    labels: np.ndarray | None
    weights: np.ndarray | None
    bad_rows: int = 0  # rows given weight 0 because their label or weight was bad (skip mode)
    held: np.ndarray = field(default_factory=lambda: _NO_NULLS)  # uint8 (rows,) or empty: rows held out of learning (set by the driver)

    @property
    def rows(self) -> int:
        return self.cat.shape[0]


class Featurizer:
    """Hashes batches for one :class:`FeatureSpec`; keeps the per-column dictionary caches.

    ``skip_bad_rows``: a row whose label is null or out of set, or whose weight is null, negative
    or not finite, gets weight 0 (learns nothing) and is counted in ``FeatureBlock.bad_rows``,
    instead of stopping with an error.
    """

    def __init__(self, spec: FeatureSpec, skip_bad_rows: bool = False):
        self.spec = spec
        self.skip_bad_rows = skip_bad_rows
        seeds = {c: hashing.column_seed(c, spec.hash_seed) for c in spec.feature_columns}
        self.seeds = seeds
        self.null_hash = {c: hashing.hash_bytes(hashing.NULL_TAG, s) for c, s in seeds.items()}
        self.value_hash = {c: hashing.hash_bytes(hashing.VALUE_TAG, s) for c, s in seeds.items()}
        mode = spec.numeric_mode
        n_cat = len(spec.categorical)
        bucketed = mode in ("bucket", "both")
        self.bucket_column = {c: (n_cat + i if bucketed else -1) for i, c in enumerate(spec.numeric)}
        self.bucket_tables = {c: _bucket_table(seeds[c] ^ 0x5BD1E995) for c in spec.numeric}
        self.value_column = {c: (i if mode in ("value", "both") else -1) for i, c in enumerate(spec.numeric)}
        n_cat_block = n_cat + (len(spec.numeric) if bucketed else 0)
        self.cross_columns = [
            (self._hash_column(a), self._hash_column(b), n_cat_block + i,
             hashing.column_seed(f"{a}*{b}", spec.hash_seed))
            for i, (a, b) in enumerate(spec.crosses)]
        self.k_cat = n_cat_block + len(spec.crosses)
        self.k_num = len(spec.numeric) if mode in ("value", "both") else 0
        self._dictionary_cache: dict[str, tuple[pa.Array, np.ndarray]] = {}
        self._label_kinds: set[str] = set()

    def _hash_column(self, name: str) -> int:
        """Where a column's hash lives in ``cat``, for crosses (numeric: its bucket feature)."""
        if name in self.spec.categorical:
            return self.spec.categorical.index(name)
        if self.bucket_column[name] < 0:
            raise FastadaError(f"cross with numeric column {name!r} needs numeric_mode 'bucket' or 'both'")
        return self.bucket_column[name]

    @property
    def columns(self) -> list[str]:
        """The columns a batch must carry (label and weight first, when set)."""
        extra = [self.spec.label] + ([self.spec.weight] if self.spec.weight else [])
        return extra + list(self.spec.feature_columns)

    def __call__(self, batch: pa.RecordBatch, where: str, with_labels: bool = True,
                 first_row: int = 0) -> FeatureBlock:
        """Features (and labels, weights) of ``batch``; errors name ``where`` and the row."""
        n = batch.num_rows
        spec = self.spec
        cat = np.empty((n, self.k_cat), dtype=np.uint32)
        num = np.empty((n, self.k_num), dtype=np.uint32)
        num_values = np.empty((n, self.k_num), dtype=np.float32)
        for j, name in enumerate(spec.categorical):
            self._categorical(_column(batch, name, where), name, where, cat, j)
        for name in spec.numeric:
            self._numeric(_column(batch, name, where), name, where, cat, num, num_values)
        for left, right, column, seed in self.cross_columns:
            hashing.cross_columns(cat, left, right, np.uint32(seed), column)
        labels = weights = None
        bad = None
        if with_labels:
            label = _column(batch, spec.label, where)
            weight = _column(batch, spec.weight, where) if spec.weight else None
            if self.skip_bad_rows:
                label, weight, bad = _without_bad_rows(label, weight)
            labels = labels_from_arrow(label, spec.label, where, self._label_kinds, first_row)
            if weight is not None:
                weights = weights_from_arrow(weight, spec.weight, where, first_row)
            if bad is not None:
                weights = np.ones(n, np.float32) if weights is None else weights
                weights[bad] = 0.0
        return FeatureBlock(cat, num, num_values, labels, weights, 0 if bad is None else int(bad.sum()))

    # -- categorical ---------------------------------------------------------------------------

    def _categorical(self, arr: pa.Array, name: str, where: str, out: np.ndarray, column: int):
        seed = np.uint32(self.seeds[name])
        null_hash = np.uint32(self.null_hash[name])
        t = arr.type
        if pa.types.is_dictionary(t):
            hashes = self._dictionary_hashes(name, arr.dictionary, where)
            indices = arr.indices
            validity, offset = _validity(indices)
            hashing.gather_dictionary(_values(indices), validity, offset, hashes, null_hash, out, column)
            return
        arr = _as_hashable(arr, name, where)
        validity, offset = _validity(arr)
        if _is_stringlike(arr.type):
            offsets, data = _string_buffers(arr)
            hashing.hash_string_column(offsets, data, validity, offset, seed, null_hash, out, column)
        else:
            hashing.hash_integer_column(_values(arr), validity, offset, seed, null_hash, out, column)

    def _dictionary_hashes(self, name: str, dictionary: pa.Array, where: str) -> np.ndarray:
        cached = self._dictionary_cache.get(name)
        if cached is not None:
            old, old_hashes = cached
            if len(dictionary) == len(old) and dictionary.equals(old):
                return old_hashes
            if len(dictionary) > len(old) and dictionary.slice(0, len(old)).equals(old):
                tail = self._hash_values(dictionary.slice(len(old)), name, where)
                hashes = np.concatenate([old_hashes, tail])
                self._dictionary_cache[name] = (dictionary, hashes)
                return hashes
        hashes = self._hash_values(dictionary, name, where)
        self._dictionary_cache[name] = (dictionary, hashes)
        return hashes

    def _hash_values(self, arr: pa.Array, name: str, where: str) -> np.ndarray:
        """Hashes of every entry of a plain (non-dictionary) array, e.g. a dictionary."""
        out = np.empty((len(arr), 1), dtype=np.uint32)
        self._categorical(arr, name, where, out, 0)
        return out[:, 0].copy()

    # -- numeric -------------------------------------------------------------------------------

    def _numeric(self, arr, name, where, cat, num, num_values):
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.cast(t.value_type)
            t = arr.type
        if pa.types.is_null(t):
            arr = pa.array(np.full(len(arr), np.nan))
        elif pa.types.is_boolean(t):
            arr = arr.cast(pa.int8())
        elif pa.types.is_decimal(t) or pa.types.is_floating(t) and t.bit_width == 16:
            arr = arr.cast(pa.float64())
        elif not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise FastadaError(f"{where}: column {name!r} is numeric but has type {t}; "
                               f"name it with --categorical or leave it out")
        validity, offset = _validity(arr)
        hashing.numeric_column(
            _values(arr), validity, offset, np.uint32(self.value_hash[name]),
            np.uint32(self.null_hash[name]), self.bucket_tables[name],
            num, num_values, self.value_column[name], cat, self.bucket_column[name])

    # -- labels and weights --------------------------------------------------------------------

_BUCKET_TABLES: dict[int, np.ndarray] = {}


def _bucket_table(seed: int) -> np.ndarray:
    """:func:`hashing.bucket_hashes` for ``seed``, made once per process (8k hashes)."""
    if seed not in _BUCKET_TABLES:
        _BUCKET_TABLES[seed] = hashing.bucket_hashes(seed)
    return _BUCKET_TABLES[seed]


def _without_bad_rows(label: pa.Array, weight: pa.Array | None):
    """(label, weight, bad) with bad rows' label set to 0 and weight to 0; bad is None if none.

    Bad: a null label, a numeric label not in {-1, 0, 1}, a null, negative or non-finite weight.
    Problems of a whole column (its type) are left for the strict readers to report.
    """
    t = label.type
    if pa.types.is_dictionary(t):
        label = label.cast(t.value_type)
        t = label.type
    bad = np.asarray(pc.is_null(label).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        y = label.to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            bad |= ~((y == 0) | (y == 1) | (y == -1))
    elif not pa.types.is_boolean(t):
        return label, weight, None
    if weight is not None and (pa.types.is_integer(weight.type) or pa.types.is_floating(weight.type)):
        w = weight.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
        with np.errstate(invalid="ignore"):
            bad_weight = ~np.isfinite(w) | (w < 0)
        bad |= bad_weight
        if bad_weight.any():
            weight = pa.array(np.where(bad_weight, 0.0, w))
    if not bad.any():
        return label, weight, None
    mask = pa.array(bad)
    zero = pa.scalar(False if pa.types.is_boolean(t) else 0, type=t)
    return pc.if_else(mask, zero, label), weight, bad


def labels_from_arrow(arr: pa.Array, name: str, where: str, seen: set | None = None,
                      first_row: int = 0) -> np.ndarray:
    """Labels as float32 0/1 from 0/1, -1/1 or bool values; ``seen`` tracks -1 vs 0 across chunks.

    Errors name ``where`` (file and row group) and the row, counting from ``first_row``.
    """
    if arr.null_count:
        row = pc.index(pc.is_null(arr), True).as_py()
        raise FastadaError(f"{where}, row {first_row + row}: label column {name!r} is null")
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_boolean(t):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise FastadaError(f"{where}: label column {name!r} has type {t}; labels must be 0/1, -1/1 or bool")
    y = arr.to_numpy(zero_copy_only=False)
    ok = (y == 0) | (y == 1) | (y == -1)
    if not ok.all():
        row = int(np.argmin(ok))
        raise FastadaError(f"{where}, row {first_row + row}: label column {name!r} has value "
                           f"{y[row].item()!r}; labels must be 0/1, -1/1 or bool")
    seen = set() if seen is None else seen
    if (y == -1).any():
        seen.add(-1)
    if (y == 0).any():
        seen.add(0)
    if len(seen) > 1:
        raise FastadaError(f"{where}: label column {name!r} mixes -1 and 0 labels; "
                           f"use either 0/1 or -1/1 throughout the data set")
    return (y > 0).astype(np.float32)


def weights_from_arrow(arr: pa.Array, name: str, where: str, first_row: int = 0) -> np.ndarray:
    """Row weights as float32; they must be present, finite and >= 0."""
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise FastadaError(f"{where}: weight column {name!r} has type {arr.type}; it must be numeric")
    if arr.null_count:
        raise FastadaError(f"{where}: weight column {name!r} has nulls")
    w = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise FastadaError(f"{where}, row {first_row + i}: weight column {name!r} has value {w[i].item()!r}; "
                           f"weights must be finite and >= 0")
    return w.astype(np.float32)


def _column(batch: pa.RecordBatch, name: str, where: str) -> pa.Array:
    i = batch.schema.get_field_index(name)
    if i < 0:
        raise FastadaError(f"{where}: column {name!r} is missing")
    return batch.column(i)


def _is_stringlike(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t))


def _as_hashable(arr: pa.Array, name: str, where: str) -> pa.Array:
    """A categorical array as strings/binaries or integers (integral floats hash as integers)."""
    t = arr.type
    if _is_stringlike(t) or pa.types.is_integer(t):
        return arr
    if str(t) in ("string_view", "binary_view"):
        return arr.cast(pa.large_binary() if "binary" in str(t) else pa.large_string())
    if pa.types.is_boolean(t):
        return arr.cast(pa.int8())
    if pa.types.is_null(t):
        return pa.array(np.zeros(len(arr), np.int64), mask=np.ones(len(arr), bool))
    if pa.types.is_floating(t):
        x = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        whole = np.isfinite(x) & (np.floor(x) == x) & (np.abs(x) < 2**62)
        keys = np.where(whole, np.where(whole, x, 0).astype(np.int64), (x + 0.0).view(np.int64) ^ (1 << 62))
        return pa.array(keys, mask=arr.is_null().to_numpy(zero_copy_only=False))
    if (pa.types.is_temporal(t) or pa.types.is_decimal(t)) and not pa.types.is_interval(t):
        return arr.cast(pa.int64()) if not pa.types.is_decimal(t) else arr.cast(pa.string())
    raise FastadaError(f"{where}: column {name!r} has type {t}, which cannot be a feature; "
                       f"leave it out or convert it to a string or number column")


def _validity(arr: pa.Array) -> tuple[np.ndarray, int]:
    if arr.null_count == 0 or arr.buffers()[0] is None:
        return _NO_NULLS, 0
    return np.frombuffer(arr.buffers()[0], dtype=np.uint8), arr.offset


def _values(arr: pa.Array) -> np.ndarray:
    """Zero-copy view of a fixed-width array's values (null slots hold garbage)."""
    dtype = np.dtype(arr.type.to_pandas_dtype())
    buf = arr.buffers()[1]
    if buf is None:
        return np.zeros(len(arr), dtype)
    return np.frombuffer(buf, dtype=dtype, count=arr.offset + len(arr))[arr.offset:]


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) views of a string/binary array: offsets[i]..offsets[i+1] is row i."""
    t = arr.type
    width = np.int64 if (pa.types.is_large_string(t) or pa.types.is_large_binary(t)) else np.int32
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=width, count=arr.offset + len(arr) + 1)[arr.offset:]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None and buffers[2].size else np.zeros(1, np.uint8)
    return offsets, data
