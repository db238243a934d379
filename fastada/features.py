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

import base64
from dataclasses import dataclass

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
    # the label encodings this chunk uses (-1 and/or 0 for a negative): whether a data set mixes
    # them is for the driver to decide, in stream order, not for each reader thread on its own
    label_kinds: frozenset = frozenset()

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
        self.present_hash = {c: hashing.hash_bytes(hashing.PRESENT_TAG, seeds[c]) for c, _ in spec.list_weights}
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
        self.list_weights = dict(spec.list_weights)
        numeric = spec.numeric
        self._num_value_hash = np.array([self.value_hash[c] for c in numeric], dtype=np.uint32)
        self._num_missing_hash = np.array([self.null_hash[c] for c in numeric], dtype=np.uint32)
        self._num_value_column = np.array([self.value_column[c] for c in numeric], dtype=np.int64)
        self._num_bucket_column = np.array([self.bucket_column[c] for c in numeric], dtype=np.int64)
        self._bucket_matrix = (np.stack([self.bucket_tables[c] for c in numeric]) if numeric
                               else np.zeros((0, 2 * hashing.BUCKET_OFFSET + 1), np.uint32))
        crosses = self.cross_columns
        self._cross_left = np.array([c[0] for c in crosses], dtype=np.int64)
        self._cross_right = np.array([c[1] for c in crosses], dtype=np.int64)
        self._cross_column = np.array([c[2] for c in crosses], dtype=np.int64)
        self._cross_seed = np.array([c[3] for c in crosses], dtype=np.uint32)
        self.new_hashes = self._new_hashes()

    def _new_hashes(self) -> np.ndarray:
        """The hash of each ``cat`` position's new-value feature (int64; -1: none, and none at
        all without ``spec.new_values``): a categorical column's, a numeric column's buckets',
        a cross's. A list column has none (its rows hold several values or none)."""
        spec = self.spec
        if not spec.new_values:
            return np.zeros(0, np.int64)
        if self.k_cat > 32767:  # (a row's column positions are int16 where the kernel reorders them)
            raise FastadaError(f"{self.k_cat:,} categorical features a row: new-value features take at most 32,767; "
                               f"use --no-new-values")
        listed = {f.name for f in schema_from_text(spec.schema) if is_list_type(f.type)} if spec.schema else set()
        out = np.full(self.k_cat, -1, dtype=np.int64)
        for j, c in enumerate(spec.categorical):
            if c not in listed:
                out[j] = hashing.hash_bytes(hashing.NEW_TAG, self.seeds[c])
        for c in spec.numeric:
            if self.bucket_column[c] >= 0:
                out[self.bucket_column[c]] = hashing.hash_bytes(hashing.NEW_TAG, self.seeds[c] ^ 0x5BD1E995)
        for _, _, j, seed in self.cross_columns:
            out[j] = hashing.hash_bytes(hashing.NEW_TAG, seed)
        return out

    def new_slots(self, mask: int) -> np.ndarray:
        """:attr:`new_hashes` as slots of a table of ``mask + 1`` (-1: none)."""
        h = self.new_hashes
        return np.where(h >= 0, h & np.int64(mask), np.int64(-1))

    def _hash_column(self, name: str) -> int:
        """Where a column's hash lives in ``cat``, for crosses (numeric: its bucket feature)."""
        if self.spec.schema and any(f.name == name and is_list_type(f.type) for f in schema_from_text(self.spec.schema)):
            raise FastadaError(f"cross with list column {name!r}: crosses take one value a row; leave it out")
        if name in self.spec.categorical:
            return self.spec.categorical.index(name)
        if self.bucket_column[name] < 0:
            raise FastadaError(f"cross with numeric column {name!r} needs numeric_mode 'bucket' or 'both'")
        return self.bucket_column[name]

    def fields(self) -> np.ndarray:
        """The field of each feature of a row (int64, k_cat + k_num): a categorical column, a
        cross or a numeric column's bucket is a field of its own; a numeric column's value
        feature shares its bucket's (or is one of its own without buckets). For field-aware
        learners; list columns, whose rows have varying features, have no fixed fields."""
        listed = [f.name for f in schema_from_text(self.spec.schema) if is_list_type(f.type)] if self.spec.schema else []
        if listed:
            raise FastadaError(f"list column {listed[0]!r}: a field-aware learner needs one feature a column; "
                               f"leave it out or use --learner adagrad")
        value = [self.bucket_column[c] if self.bucket_column[c] >= 0 else self.k_cat + i
                 for i, c in enumerate(self.spec.numeric) if self.value_column[c] >= 0]
        return np.array(list(range(self.k_cat)) + value, dtype=np.int64)

    @property
    def columns(self) -> list[str]:
        """The columns a batch must carry (label and weight first, when set)."""
        extra = [self.spec.label] + ([self.spec.weight] if self.spec.weight else [])
        return list(dict.fromkeys(extra + feature_sources(self.spec)))

    def __call__(self, batch: pa.RecordBatch, where: str, with_labels: bool = True,
                 first_row: int = 0) -> FeatureBlock:
        """Features (and labels, weights) of ``batch``; errors name ``where`` and the row."""
        n = batch.num_rows
        spec = self.spec
        cat = np.empty((n, self.k_cat), dtype=np.uint32)
        num = np.empty((n, self.k_num), dtype=np.uint32)
        num_values = np.empty((n, self.k_num), dtype=np.float32)
        extras = self._hash_batch(batch, where, cat, num, num_values, first_row)
        if extras:  # list columns' elements after the first: more features of value 1, padded with 0s
            num = np.concatenate([num] + [h for h, _ in extras], axis=1)
            num_values = np.concatenate([num_values] + [v for _, v in extras], axis=1)
        labels = weights = None
        bad = None
        if with_labels:
            label = _column(batch, spec.label, where)
            weight = _column(batch, spec.weight, where) if spec.weight else None
            if self.skip_bad_rows:
                label, weight, bad = _without_bad_rows(label, weight)
            kinds: set = set()
            labels = labels_from_arrow(label, spec.label, where, kinds, first_row)
            if weight is not None:
                weights = weights_from_arrow(weight, spec.weight, where, first_row)
            if bad is not None:
                weights = np.ones(n, np.float32) if weights is None else weights
                weights[bad] = 0.0
        return FeatureBlock(cat, num, num_values, labels, weights, 0 if bad is None else int(bad.sum()),
                            frozenset(kinds) if with_labels else frozenset())

    def _hash_batch(self, batch, where, cat, num, num_values, first_row: int = 0) -> list:
        """Every feature of ``batch`` into ``cat``, ``num``, ``num_values``; returns the extra
        (hashes, values) matrices of list columns (see :meth:`_list_column`).

        Python only describes the columns (their buffers' addresses) and hashes a dictionary it
        has not seen; the per-row work is one compiled call that releases the GIL, so reader
        threads scale with cores instead of queueing for the GIL between per-column calls."""
        spec = self.spec
        keep = []  # arrays whose addresses the compiled call reads: alive until it returns
        dictionaries = self._string_dictionary_hashes(batch, keep)
        dict_rows = []
        extras = []
        for j, name in enumerate(spec.categorical):
            arr = _feature_column(batch, name, where)
            if is_list_type(arr.type):
                weights = self.list_weights.get(name)
                extras.append(self._list_column(arr, name, where, cat, j, None if weights is None else
                                                (weights, _column(batch, weights, where)), first_row))
                continue
            if not pa.types.is_dictionary(arr.type):
                self._categorical(arr, name, where, cat, j)  # hashed per row, column by column
                continue
            hashes = dictionaries.get(name)
            if hashes is None:
                hashes = self._dictionary_hashes(name, arr.dictionary, where)
            indices = arr.indices
            if indices.type != pa.int32():
                indices = indices.cast(pa.int32())
            keep += [indices, hashes]
            address, bitmap, bit_offset = _addresses(indices, 4)
            dict_rows.append((address, bitmap, bit_offset, hashes.ctypes.data, self.null_hash[name], j))
        num_rows = []
        for name in spec.numeric:
            arr = _numeric_array(_column(batch, name, where), name, where)
            kind = _NUMERIC_KINDS.get(arr.type)
            if kind is None:  # other widths: as int64 or float64 values
                values = _values(arr)
                wide = values.dtype.kind == "i" or values.dtype.kind == "u" and values.dtype.itemsize < 8
                values = values.astype(np.int64 if wide else np.float64)
                keep.append(values)
                _, bitmap, bit_offset = _addresses(arr, 1)
                num_rows.append((values.ctypes.data if values.size else _DUMMY.ctypes.data,
                                 hashing.KIND_INT64 if wide else hashing.KIND_FLOAT64, bitmap, bit_offset))
            else:
                keep.append(arr)
                address, bitmap, bit_offset = _addresses(arr, arr.type.bit_width // 8)
                num_rows.append((address, kind, bitmap, bit_offset))
        hashing.hash_chunk(
            batch.num_rows, np.array(dict_rows, np.int64).reshape(-1, hashing.DICT_FIELDS),
            np.array(num_rows, np.int64).reshape(-1, hashing.NUM_FIELDS),
            self._num_value_hash, self._num_missing_hash, self._bucket_matrix, self._num_value_column,
            self._num_bucket_column, self._cross_left, self._cross_right, self._cross_seed, self._cross_column,
            cat, num, num_values)
        del keep
        return extras

    def _list_column(self, arr: pa.Array, name: str, where: str, cat: np.ndarray, column: int,
                     weighted: tuple[str, pa.Array] | None = None, first_row: int = 0):
        """A list column (tags, history ids): one feature per element, each hashed as a scalar of
        the column would be. The first element goes to ``cat[:, column]`` (a null or empty list:
        the column's null feature, as for a scalar); the others to an extra matrix of hashes and
        values (1 for an element, 0 for the padding of shorter lists, which learns nothing).

        ``weighted``: (name, list array) of the elements' values. Then every element goes to the
        extra matrix with its value, and ``cat[:, column]`` says only whether the list has
        elements (a present or the null feature), since a feature there has value 1."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n = len(arr)
        lengths = as_numpy(arr.value_lengths().fill_null(0)).astype(np.int64)
        elements = arr.flatten()  # the elements of the non-null lists, in row order
        hashes = np.empty((len(elements), 1), dtype=np.uint32)
        if len(elements):
            self._categorical(elements, name, where, hashes, 0)
        null_hash = np.uint32(self.null_hash[name])
        first = np.full(n, null_hash, dtype=np.uint32)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        present = lengths > 0
        values = np.ones(len(elements), dtype=np.float32)
        if weighted is None:
            first[present] = hashes[starts[present], 0]
            skip = 1  # the first element is in cat
        else:
            first[present] = self.present_hash[name]
            values = _element_weights(weighted, lengths, name, where, first_row)
            skip = 0
        cat[:, column] = first
        width = max(int(lengths.max(initial=0)) - skip, 0)
        extra_h = np.full((n, width), null_hash, dtype=np.uint32)
        extra_v = np.zeros((n, width), dtype=np.float32)
        if width:
            rows = np.repeat(np.arange(n), lengths)
            position = np.arange(len(elements)) - starts[rows]
            later = position >= skip
            extra_h[rows[later], position[later] - skip] = hashes[later, 0]
            extra_v[rows[later], position[later] - skip] = values[later]
        return extra_h, extra_v
    def _string_dictionary_hashes(self, batch: pa.RecordBatch, keep: list) -> dict[str, np.ndarray]:
        """The hashes of every string dictionary of ``batch`` (columns whose dictionary holds
        strings or binaries with 32-bit offsets and no nulls), checked against the cache and
        hashed where new in one compiled call (:func:`hashing.dictionary_hashes`)."""
        names, arrays, outs, rows = [], [], [], []
        for name in self.spec.categorical:
            i = batch.schema.get_field_index(name)
            if i < 0:
                continue
            arr = batch.column(i)
            t = arr.type
            if not (pa.types.is_dictionary(t) and t.value_type in _SMALL_STRINGS) or arr.dictionary.null_count:
                continue
            dictionary = arr.dictionary
            offsets, data = _string_addresses(dictionary)
            cached = self._dictionary_cache.get(name)
            if cached is not None and cached[0].type == dictionary.type and not cached[0].null_count:
                old_offsets, old_data = _string_addresses(cached[0])
                old_count, old_hashes = len(cached[0]), cached[1].ctypes.data
            else:
                old_offsets = old_data = old_hashes = 0
                old_count = -1
            out = np.empty(max(len(dictionary), 1), np.uint32)[:len(dictionary)]
            names.append(name)
            arrays.append(dictionary)
            outs.append(out)
            rows.append((offsets, data, len(dictionary), old_offsets, old_data, old_count, old_hashes,
                         out.ctypes.data, self.seeds[name]))
        if not names:
            return {}
        keep += arrays + outs
        reused = np.zeros(len(names), np.uint8)
        hashing.dictionary_hashes(np.array(rows, np.int64).reshape(-1, hashing.DH_FIELDS), reused)
        found = {}
        for c, name in enumerate(names):
            if reused[c]:
                found[name] = self._dictionary_cache[name][1]
            else:
                found[name] = outs[c]
                self._dictionary_cache[name] = (arrays[c], outs[c])
        return found

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
            if len(dictionary) == len(old) and _same_start(dictionary, old):
                return old_hashes
            if len(dictionary) > len(old) and _same_start(dictionary, old):
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

    # -- labels and weights --------------------------------------------------------------------

_BUCKET_TABLES: dict[int, np.ndarray] = {}
_SMALL_STRINGS = (pa.string(), pa.binary())  # dictionary value types hashed in one call
_NUMERIC_KINDS = {pa.int64(): hashing.KIND_INT64, pa.float64(): hashing.KIND_FLOAT64,
                  pa.int32(): hashing.KIND_INT32, pa.float32(): hashing.KIND_FLOAT32}
_DUMMY = np.zeros(8, np.uint8)  # an address for buffers of no rows


def _addresses(arr: pa.Array, width: int) -> tuple[int, int, int]:
    """(address of value 0 of a fixed-width array, address of its validity bitmap or 0 when it
    has no nulls, the bitmap's bit offset)."""
    buffers = arr.buffers()
    values = buffers[1]
    address = values.address + arr.offset * width if values is not None and values.size else _DUMMY.ctypes.data
    if arr.null_count == 0 or buffers[0] is None:
        return address, 0, 0
    return address, buffers[0].address, arr.offset


def _string_addresses(arr: pa.Array) -> tuple[int, int]:
    """(address of the first int32 offset, address of the bytes) of a string/binary array."""
    buffers = arr.buffers()
    data = buffers[2].address if buffers[2] is not None and buffers[2].size else _DUMMY.ctypes.data
    return buffers[1].address + 4 * arr.offset, data


def _same_start(dictionary: pa.Array, old: pa.Array) -> bool:
    """Whether ``dictionary`` begins with every entry of ``old`` (dictionaries of other values than
    strings; string dictionaries are compared in :func:`hashing.dictionary_hashes`)."""
    return dictionary.slice(0, len(old)).equals(old)


def _numeric_array(arr: pa.Array, name: str, where: str) -> pa.Array:
    """A numeric column as an Arrow array of a NumPy-viewable number type (nulls kept)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_null(t):
        return pa.array(np.full(len(arr), np.nan))
    if pa.types.is_boolean(t):
        return arr.cast(pa.int8())
    if pa.types.is_decimal(t) or pa.types.is_floating(t) and t.bit_width == 16:
        return arr.cast(pa.float64())
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise FastadaError(f"{where}: column {name!r} is numeric but has type {t}; "
                           f"name it with --categorical or leave it out")
    return arr


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
    bad = np.asarray(as_numpy(pc.is_null(label)), dtype=bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        y = as_numpy(label)
        with np.errstate(invalid="ignore"):
            bad |= ~((y == 0) | (y == 1) | (y == -1))
    elif not pa.types.is_boolean(t):
        return label, weight, None
    if weight is not None and (pa.types.is_integer(weight.type) or pa.types.is_floating(weight.type)):
        w = as_numpy(weight).astype(np.float64)  # nulls become NaN
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
        return np.asarray(as_numpy(arr), dtype=np.float32)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise FastadaError(f"{where}: label column {name!r} has type {t}; labels must be 0/1, -1/1 or bool")
    y = as_numpy(arr)
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
    w = as_numpy(arr).astype(np.float64)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise FastadaError(f"{where}, row {first_row + i}: weight column {name!r} has value {w[i].item()!r}; "
                           f"weights must be finite and >= 0")
    return w.astype(np.float32)


def _element_weights(weighted: tuple[str, pa.Array], lengths: np.ndarray, name: str, where: str,
                     first_row: int) -> np.ndarray:
    """The values of a list column's elements from its weights column (a parallel list of
    numbers): each row's list as long as the elements', every value finite."""
    weights_name, arr = weighted
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if not ((pa.types.is_list(t) or pa.types.is_large_list(t))
            and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))):
        raise FastadaError(f"{where}: list weights column {weights_name!r} has type {t}; it must be a list of "
                           f"numbers, one for each element of {name!r}")
    counts = as_numpy(arr.value_lengths().fill_null(0)).astype(np.int64)
    differ = counts != lengths
    if differ.any():
        i = int(np.argmax(differ))
        raise FastadaError(f"{where}, row {first_row + i}: list weights column {weights_name!r} has {counts[i]} "
                           f"values for the {lengths[i]} elements of {name!r}")
    values = arr.flatten()
    if values.null_count:
        rows = np.repeat(np.arange(len(counts)), counts)
        i = int(rows[np.argmax(as_numpy(values.is_null()))])
        raise FastadaError(f"{where}, row {first_row + i}: list weights column {weights_name!r} has a null value")
    values = as_numpy(values).astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.repeat(np.arange(len(counts)), counts)
        i = int(rows[np.argmax(bad)])
        raise FastadaError(f"{where}, row {first_row + i}: list weights column {weights_name!r} has value "
                           f"{values[np.argmax(bad)]}; weights must be finite")
    return values


def feature_sources(spec: FeatureSpec) -> list[str]:
    """The stored columns the features of ``spec`` read (a time feature ``ts:hour`` reads ``ts``;
    a weighted list column its weights too)."""
    return list(dict.fromkeys([source_column(c) for c in spec.feature_columns] + [w for _, w in spec.list_weights]))


def source_column(name: str) -> str:
    """The stored column a feature name reads: ``ts`` for ``ts:hour`` or ``ts:weekday``."""
    base, _, part = name.rpartition(":")
    return base if base and part in TIME_PARTS else name


# Parts of a timestamp or date column that are features of their own, as ``<column>:<part>``
# (hour 0-23 in the column's time zone; weekday 0 = Monday).
TIME_PARTS = {"hour": pc.hour, "weekday": pc.day_of_week}


def _feature_column(batch: pa.RecordBatch, name: str, where: str) -> pa.Array:
    """The values of categorical feature ``name``: a stored column, or a part of a time column."""
    base = source_column(name)
    if base == name or batch.schema.get_field_index(name) >= 0:
        return _column(batch, name, where)
    arr = _column(batch, base, where)
    t = arr.type
    part = name[len(base) + 1:]
    if pa.types.is_date(t) and part == "weekday":
        arr = arr.cast(pa.timestamp("s"))
    elif not pa.types.is_timestamp(t):
        raise FastadaError(f"{where}: feature {name!r} needs a timestamp{' or date' if part == 'weekday' else ''} "
                           f"column {base!r}, which has type {t}")
    return TIME_PARTS[part](arr)


def is_list_type(t: pa.DataType) -> bool:
    """A list (or large list) of strings, binaries or integers: a multi-valued categorical column."""
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    v = t.value_type
    return _is_stringlike(v) or pa.types.is_integer(v) or str(v) in ("string_view", "binary_view")


def hash_form(t: pa.DataType) -> str:
    """What a categorical column's values hash as: two types of one form give a value the same
    slot (strings and binaries by their bytes; integers, bools and whole floats by their int64;
    timestamps and dates by their integer in their own unit)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if is_list_type(t):
        return f"list<{hash_form(t.value_type)}>"
    if (_is_stringlike(t) or pa.types.is_fixed_size_binary(t) or str(t) in ("string_view", "binary_view")):
        return "bytes"
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}]"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def schema_text(schema: pa.Schema) -> str:
    """``schema`` as text for a model's header (Arrow IPC, base64)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def check_hash_forms(spec: FeatureSpec, schema: pa.Schema, where: str) -> None:
    """Refuse data whose categorical columns are stored so that their values would hash otherwise
    than in training (strings then, integers now; another timestamp unit; another time zone for
    hour and weekday features), naming the column, both types and the fix."""
    if not spec.schema:
        return  # a model from before types were kept
    trained = schema_from_text(spec.schema)
    for name in spec.categorical:
        source = source_column(name)
        i, j = trained.get_field_index(source), schema.get_field_index(source)
        if i < 0 or j < 0:
            continue  # missing columns are refused elsewhere, with the file's columns
        before, now = trained.field(i).type, schema.field(j).type
        if source != name:  # a time part: the zone decides the hour and the day
            zone = (getattr(before, "tz", None), getattr(now, "tz", None))
            if zone[0] != zone[1] and pa.types.is_timestamp(now):
                raise FastadaError(f"{where}: column {source!r} has type {now} but {before} in training: its "
                                   f"{name} would be counted in another time zone; convert it to {before}")
            continue
        if "null" in (hash_form(before), hash_form(now)) or hash_form(before) == hash_form(now):
            continue
        raise FastadaError(f"{where}: categorical column {source!r} has type {now} but {before} in training: "
                           f"its values would hash to other slots and be scored wrong; cast it to {before}")


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
    if pa.types.is_fixed_size_binary(t):
        return arr.cast(pa.binary())
    if pa.types.is_null(t):
        return pa.array(np.zeros(len(arr), np.int64), mask=np.ones(len(arr), bool))
    if pa.types.is_floating(t):
        x = as_numpy(arr.cast(pa.float64()))
        whole = np.isfinite(x) & (np.floor(x) == x) & (np.abs(x) < 2**62)
        keys = np.where(whole, np.where(whole, x, 0).astype(np.int64), (x + 0.0).view(np.int64) ^ (1 << 62))
        return pa.array(keys, mask=as_numpy(arr.is_null()))
    if pa.types.is_date32(t):
        return arr.cast(pa.int32()).cast(pa.int64())
    if (pa.types.is_temporal(t) or pa.types.is_decimal(t)) and not pa.types.is_interval(t):
        return arr.cast(pa.int64()) if not pa.types.is_decimal(t) else arr.cast(pa.string())
    raise FastadaError(f"{where}: column {name!r} has type {t}, which cannot be a feature; "
                       f"leave it out or convert it to a string or number column")


def _validity(arr: pa.Array) -> tuple[np.ndarray, int]:
    if arr.null_count == 0 or arr.buffers()[0] is None:
        return _NO_NULLS, 0
    return np.frombuffer(arr.buffers()[0], dtype=np.uint8), arr.offset


_NUMPY_TYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
                pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
                pa.float16(): np.float16, pa.float32(): np.float32, pa.float64(): np.float64}


def as_numpy(arr) -> np.ndarray:
    """``arr.to_numpy(zero_copy_only=False)`` for numbers and booleans (nulls: NaN, integers then
    float64), without pandas: pyarrow's ``to_numpy`` imports it, 0.15 s of every run's start."""
    if isinstance(arr, pa.ChunkedArray):
        parts = [as_numpy(chunk) for chunk in arr.chunks]
        return np.concatenate(parts) if parts else arr.to_numpy(zero_copy_only=False)
    t = arr.type
    n, offset = len(arr), arr.offset
    if pa.types.is_boolean(t) and not arr.null_count:
        buf = arr.buffers()[1]
        bits = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
        return np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].astype(bool)
    dtype = _NUMPY_TYPES.get(t)
    if dtype is None:
        return arr.to_numpy(zero_copy_only=False)
    buf = arr.buffers()[1]
    values = np.frombuffer(buf, dtype=dtype, count=offset + n)[offset:] if buf is not None else np.zeros(n, dtype)
    if not arr.null_count:
        return values
    out = values.astype(np.float64 if values.dtype.kind in "iu" else values.dtype)
    out[~as_numpy(arr.is_valid())] = np.nan
    return out


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
