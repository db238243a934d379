"""MurmurHash3 (x86, 32-bit) and the array kernels that turn column values into feature hashes.

Everything here works on plain NumPy arrays shaped like Arrow's buffers (offsets + bytes for
strings, values + a validity bitmap for the rest), so it knows neither files nor Arrow objects
nor learning. The functions that feed learning write one column of a ``(rows, features)`` uint32
matrix; the learner masks a hash to ``2**bits`` slots itself, so crosses can be built from the
full 32-bit hashes.

A *validity* argument is an Arrow bitmap as uint8 (bit ``i`` of the array at bit offset
``offset + i``); an empty array means "no nulls".
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_C1 = np.uint64(0xCC9E2D51)
_C2 = np.uint64(0x1B873593)
_M32 = np.uint64(0xFFFFFFFF)

# Tags that keep a column's special features apart from its values. Each is hashed with the
# column's seed; the leading 0xFF byte is not valid UTF-8, so no string value can produce them.
NULL_TAG = b"\xffnull"
VALUE_TAG = b"\xffvalue"
PRESENT_TAG = b"\xffpresent"  # a weighted list column has elements in this row
NEW_TAG = b"\xffnew"  # a column's new-value feature (FeatureSpec.new_values)


@njit(cache=True, inline="always")
def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@njit(cache=True, inline="always")
def _mix_block(h, k):
    k = (k * _C1) & _M32
    k = _rotl32(k, 15)
    k = (k * _C2) & _M32
    h ^= k
    h = _rotl32(h, 13)
    return (h * np.uint64(5) + np.uint64(0xE6546B64)) & _M32


@njit(cache=True, inline="always")
def _fmix32(h):
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _M32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _M32
    h ^= h >> np.uint64(16)
    return h


@njit(cache=True, nogil=True)
def murmur3_32(data, start, end, seed):
    """MurmurHash3_x86_32 of ``data[start:end]`` (uint8) with a 32-bit ``seed``."""
    h = np.uint64(seed) & _M32
    n = end - start
    nblocks = n // 4
    for b in range(nblocks):
        i = start + 4 * b
        k = (np.uint64(data[i]) | (np.uint64(data[i + 1]) << np.uint64(8))
             | (np.uint64(data[i + 2]) << np.uint64(16)) | (np.uint64(data[i + 3]) << np.uint64(24)))
        h = _mix_block(h, k)
    tail = start + 4 * nblocks
    rem = n & 3
    k1 = np.uint64(0)
    if rem == 3:
        k1 ^= np.uint64(data[tail + 2]) << np.uint64(16)
    if rem >= 2:
        k1 ^= np.uint64(data[tail + 1]) << np.uint64(8)
    if rem >= 1:
        k1 ^= np.uint64(data[tail])
        k1 = (k1 * _C1) & _M32
        k1 = _rotl32(k1, 15)
        k1 = (k1 * _C2) & _M32
        h ^= k1
    h ^= np.uint64(n)
    return np.uint32(_fmix32(h))


@njit(cache=True, inline="always")
def murmur3_u64(value, seed):
    """MurmurHash3_x86_32 of the 8 little-endian bytes of ``value`` (an int64 bit pattern)."""
    v = np.uint64(value)
    h = np.uint64(seed) & _M32
    h = _mix_block(h, v & _M32)
    h = _mix_block(h, v >> np.uint64(32))
    h ^= np.uint64(8)
    return np.uint32(_fmix32(h))


def hash_bytes(data: bytes, seed: int) -> int:
    """MurmurHash3_x86_32 of a Python ``bytes`` object, as an unsigned int: the same function as
    :func:`murmur3_32`, in plain Python. It hashes a few dozen column names and tags as a run
    starts, where loading the compiled function from Numba's cache cost 0.2 s."""
    m = 0xFFFFFFFF
    h = seed & m
    n = len(data)
    tail = n - n % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * 0xCC9E2D51) & m
        k = ((k << 15) | (k >> 17)) & m
        h ^= (k * 0x1B873593) & m
        h = ((h << 13) | (h >> 19)) & m
        h = (h * 5 + 0xE6546B64) & m
    if n > tail:
        k = int.from_bytes(data[tail:], "little")
        k = (k * 0xCC9E2D51) & m
        k = ((k << 15) | (k >> 17)) & m
        h ^= (k * 0x1B873593) & m
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def column_seed(name: str, hash_seed: int) -> int:
    """The hash seed of a column: its name hashed with the model's ``hash_seed``."""
    return hash_bytes(name.encode("utf-8"), hash_seed)


@njit(cache=True, inline="always")
def is_valid(validity, offset, i):
    if validity.size == 0:
        return True
    j = offset + i
    return (validity[j >> 3] >> (j & 7)) & 1 == 1


@njit(cache=True, nogil=True)
def hash_strings(offsets, data, start, stop, seed, out):
    """``out[i] = murmur3(string i)`` for strings ``start..stop`` of an offsets/data pair."""
    for i in range(start, stop):
        out[i - start] = murmur3_32(data, offsets[i], offsets[i + 1], seed)


@njit(cache=True, nogil=True)
def gather_dictionary(indices, validity, offset, dictionary_hashes, null_hash, out, column):
    """``out[:, column]``: each row's dictionary entry hash, or ``null_hash`` for a null."""
    for i in range(indices.size):
        if is_valid(validity, offset, i):
            out[i, column] = dictionary_hashes[indices[i]]
        else:
            out[i, column] = null_hash


@njit(cache=True, nogil=True)
def hash_string_column(offsets, data, validity, offset, seed, null_hash, out, column):
    """``out[:, column]``: murmur3 of each row's string (plain, not dictionary-encoded)."""
    for i in range(offsets.size - 1):
        if is_valid(validity, offset, i):
            out[i, column] = murmur3_32(data, offsets[i], offsets[i + 1], seed)
        else:
            out[i, column] = null_hash


@njit(cache=True, nogil=True)
def hash_integer_column(values, validity, offset, seed, null_hash, out, column):
    """``out[:, column]``: murmur3 of each row's integer as 8 little-endian bytes (int64)."""
    for i in range(values.size):
        if is_valid(validity, offset, i):
            out[i, column] = murmur3_u64(np.int64(values[i]), seed)
        else:
            out[i, column] = null_hash


BUCKET_OFFSET = 4096  # bins of finite float64 values lie in -2840..2839
_TILE = 512  # rows of a chunk filled at a time by hash_chunk
_SMALL = 1024  # integers below this take log1p from a table made per call (same function)


def bucket_hashes(bucket_seed: int) -> np.ndarray:
    """Hash of every bin ``b`` a finite number can fall in, at index ``b + BUCKET_OFFSET``, and of
    the missing bin (``1 << 40``, which no finite value reaches) at the last index: a table
    lookup per row instead of a hash."""
    bins = np.append(np.arange(-BUCKET_OFFSET, BUCKET_OFFSET, dtype=np.int64), np.int64(1) << 40)
    return murmur3_u64_array(bins, bucket_seed)


def murmur3_u64_array(values: np.ndarray, seed: int) -> np.ndarray:
    """:func:`murmur3_u64` of each of ``values`` (int64), in NumPy: for tables made as a run
    starts, where loading a compiled function from Numba's cache cost 0.25 s."""
    m = np.uint64(0xFFFFFFFF)

    def rotl(x, r):
        return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & m

    v = values.astype(np.int64).view(np.uint64)
    h = np.full(v.shape, np.uint64(seed & 0xFFFFFFFF))
    for k in (v & m, v >> np.uint64(32)):
        k = rotl((k * _C1) & m, 15)
        h ^= (k * _C2) & m
        h = (rotl(h, 13) * np.uint64(5) + np.uint64(0xE6546B64)) & m
    h ^= np.uint64(8)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & m
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & m
    h ^= h >> np.uint64(16)
    return h.astype(np.uint32)


@njit(cache=True, nogil=True)
def same_strings(offsets_a, data_a, offsets_b, data_b, count):
    """Whether the first ``count`` strings of two offsets/data pairs are equal (a dictionary seen
    before, or the start of one that grew)."""
    base_a = offsets_a[0]
    base_b = offsets_b[0]
    size = offsets_a[count] - base_a
    if offsets_b[count] - base_b != size:
        return False
    if base_a == base_b:
        if not _same_bytes(offsets_a.ctypes.data, offsets_b.ctypes.data, 4 * (count + 1)):
            return False
    else:
        for i in range(count + 1):
            if offsets_a[i] - base_a != offsets_b[i] - base_b:
                return False
    return _same_bytes(data_a.ctypes.data + base_a, data_b.ctypes.data + base_b, size)


@njit(cache=True, inline="always")
def _same_bytes(address_a, address_b, size):
    """Whether ``size`` bytes at two addresses are equal: eight at a time, in blocks without a
    branch per word, which the compiler vectorises (12 GB/s; a byte-by-byte loop ran 1.5 GB/s,
    and comparing a dictionary with the one before was a fifth of hashing a chunk)."""
    words = size // 8
    a = carray(_pointer(np.int64(address_a)), max(words, 1), dtype=np.uint64)
    b = carray(_pointer(np.int64(address_b)), max(words, 1), dtype=np.uint64)
    for lo in range(0, words, 512):
        differ = np.uint64(0)
        for k in range(lo, min(lo + 512, words)):
            differ |= a[k] ^ b[k]
        if differ != 0:
            return False
    tail_a = carray(_pointer(np.int64(address_a)), max(size, 1), dtype=np.uint8)
    tail_b = carray(_pointer(np.int64(address_b)), max(size, 1), dtype=np.uint8)
    for k in range(words * 8, size):
        if tail_a[k] != tail_b[k]:
            return False
    return True


@intrinsic
def _pointer(typingctx, address):
    """The memory at ``address`` (an int64) as a pointer, for :func:`numba.carray`."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


# Column descriptions passed to the chunk kernels: one int64 row per column, buffers by address
# (the caller keeps them alive), so one compiled function serves every schema without typed lists
# (whose methods Numba compiles anew in every process: seconds of start-up).
DICT_INDICES, DICT_VALIDITY, DICT_BIT_OFFSET, DICT_HASHES, DICT_NULL, DICT_COLUMN, DICT_FIELDS = range(7)
NUM_VALUES, NUM_KIND, NUM_VALIDITY, NUM_BIT_OFFSET, NUM_FIELDS = range(5)
KIND_INT64, KIND_FLOAT64, KIND_INT32, KIND_FLOAT32 = range(4)


@njit(cache=True, inline="always")
def _bits(address, offset, rows):
    """A validity bitmap covering ``rows`` bits from bit ``offset`` (empty when ``address`` is 0)."""
    if address == 0:
        return np.zeros(0, dtype=np.uint8)
    return carray(_pointer(address), (offset + rows + 7) // 8, dtype=np.uint8)


@njit(cache=True)
def _numeric_tile(values, d, i, lo, hi, small, value_hash, missing_hash, bucket_tables, value_column,
                  bucket_column, cat, num, num_values):
    """Rows ``lo..hi`` of numeric column ``i`` (see :func:`hash_chunk`).

    Value feature (when ``value_column[i] >= 0``): slot ``value_hash[i]`` with value
    ``log1p(max(x, 0))``; a null, NaN or infinite ``x`` instead gives slot ``missing_hash[i]`` with
    value 1. Bucket feature (when ``bucket_column[i] >= 0``): a categorical feature for the bin
    ``sign(x) * floor(4 * log1p(|x|))`` (integers 0..3 each get their own bin, larger values
    four bins per e-fold; negative bins are ``-b - 1``), hashed as an int64 with the column's
    bucket seed, or a "missing" bin of its own (``bucket_tables[i]`` from :func:`bucket_hashes`).
    """
    rows = values.shape[0]
    validity = _bits(d[NUM_VALIDITY], d[NUM_BIT_OFFSET], rows)
    offset = d[NUM_BIT_OFFSET]
    vc = value_column[i]
    bc = bucket_column[i]
    missing_bucket = bucket_tables.shape[1] - 1
    for r in range(lo, hi):
        x = np.float64(values[r])
        if not (is_valid(validity, offset, r) and np.isfinite(x)):
            if vc >= 0:
                num[r, vc] = missing_hash[i]
                num_values[r, vc] = np.float32(1.0)
            if bc >= 0:
                cat[r, bc] = bucket_tables[i, missing_bucket]
            continue
        a = abs(x)
        k = np.int64(a) if a < _SMALL else -1
        log = small[k] if k >= 0 and k == a else np.log1p(a)
        if vc >= 0:
            num[r, vc] = value_hash[i]
            num_values[r, vc] = np.float32(log if x > 0 else 0.0)
        if bc >= 0:
            b = np.int64(np.floor(4.0 * log))
            if x < 0:
                b = -b - 1
            cat[r, bc] = bucket_tables[i, b + BUCKET_OFFSET]


@njit(cache=True, nogil=True)
def hash_chunk(rows, dictionary_columns, numeric_columns, value_hash, missing_hash, bucket_tables,
               value_column, bucket_column, cross_left, cross_right, cross_seed, cross_column,
               cat, num, num_values):
    """A chunk's features in one compiled call that holds no GIL: dictionary-encoded categorical
    columns, numeric columns and crosses, a tile of rows at a time.

    ``dictionary_columns`` (int64, one row per column, fields DICT_*): the address of its int32
    indices (at the array's offset), of its validity bitmap (0: no nulls) and the bitmap's bit
    offset, the address of each dictionary entry's uint32 hash, the null feature's hash, and
    the column of ``cat`` it fills. ``numeric_columns`` (fields NUM_*): the address of its values
    (at the array's offset) and their kind (KIND_*), its validity bitmap and bit offset; numeric
    column i has a value and a bucket feature as :func:`_numeric_tile` describes. Cross x: ``cat[:, cross_column[x]]`` from the columns
    ``cross_left[x]`` and ``cross_right[x]``, after every other categorical feature of the row
    (columns hashed before this call included).
    """
    small = np.empty(_SMALL, dtype=np.float64)
    for k in range(_SMALL):
        small[k] = np.log1p(np.float64(k))
    # Rows in tiles: a tile of the outputs stays in cache while it is filled column by column.
    for lo in range(0, rows, _TILE):
        hi = min(rows, lo + _TILE)
        for c in range(dictionary_columns.shape[0]):
            d = dictionary_columns[c]
            indices = carray(_pointer(d[DICT_INDICES]), rows, dtype=np.int32)
            validity = _bits(d[DICT_VALIDITY], d[DICT_BIT_OFFSET], rows)
            offset = d[DICT_BIT_OFFSET]
            column = d[DICT_COLUMN]
            null = np.uint32(d[DICT_NULL])
            hashes = carray(_pointer(d[DICT_HASHES]), 1 << 31, dtype=np.uint32)  # indexed by indices only
            for r in range(lo, hi):
                cat[r, column] = hashes[indices[r]] if is_valid(validity, offset, r) else null
        for i in range(numeric_columns.shape[0]):
            d = numeric_columns[i]
            kind = d[NUM_KIND]
            if kind == KIND_INT64:
                _numeric_tile(carray(_pointer(d[NUM_VALUES]), rows, dtype=np.int64), d, i, lo, hi, small,
                              value_hash, missing_hash, bucket_tables, value_column, bucket_column, cat, num,
                              num_values)
            elif kind == KIND_FLOAT64:
                _numeric_tile(carray(_pointer(d[NUM_VALUES]), rows, dtype=np.float64), d, i, lo, hi, small,
                              value_hash, missing_hash, bucket_tables, value_column, bucket_column, cat, num,
                              num_values)
            elif kind == KIND_INT32:
                _numeric_tile(carray(_pointer(d[NUM_VALUES]), rows, dtype=np.int32), d, i, lo, hi, small,
                              value_hash, missing_hash, bucket_tables, value_column, bucket_column, cat, num,
                              num_values)
            else:
                _numeric_tile(carray(_pointer(d[NUM_VALUES]), rows, dtype=np.float32), d, i, lo, hi, small,
                              value_hash, missing_hash, bucket_tables, value_column, bucket_column, cat, num,
                              num_values)
        for x in range(cross_column.shape[0]):
            for r in range(lo, hi):
                pair = (np.int64(cat[r, cross_left[x]]) << np.int64(32)) | np.int64(cat[r, cross_right[x]])
                cat[r, cross_column[x]] = murmur3_u64(pair, cross_seed[x])


# Fields of a dictionary to hash (:func:`dictionary_hashes`): its int32 offsets and bytes, its
# entries, the dictionary hashed before for its column (offsets, bytes, entries or -1, hashes),
# where its hashes go, and the column's seed.
(DH_OFFSETS, DH_DATA, DH_COUNT, DH_OLD_OFFSETS, DH_OLD_DATA, DH_OLD_COUNT, DH_OLD_HASHES, DH_OUT, DH_SEED,
 DH_FIELDS) = range(10)


@njit(cache=True, nogil=True)
def dictionary_hashes(dictionaries, reused):
    """Every string dictionary of a chunk hashed in one call that holds no GIL.

    ``dictionaries`` (int64, one row per column, fields DH_*). If a dictionary is the one hashed
    before, ``reused[c] = 1`` and its output is left alone; if it starts with it (a column whose
    pages fell back from dictionary encoding grows its dictionary batch by batch), the old hashes
    are copied and only the new entries hashed; else every entry is hashed.
    """
    for c in range(dictionaries.shape[0]):
        d = dictionaries[c]
        count = d[DH_COUNT]
        offsets = carray(_pointer(d[DH_OFFSETS]), count + 1, dtype=np.int32)
        data = carray(_pointer(d[DH_DATA]), max(offsets[count], 1), dtype=np.uint8)
        target = carray(_pointer(d[DH_OUT]), count, dtype=np.uint32)
        known = d[DH_OLD_COUNT]
        reused[c] = 0
        start = 0
        if 0 <= known <= count:
            old_offsets = carray(_pointer(d[DH_OLD_OFFSETS]), known + 1, dtype=np.int32)
            old_data = carray(_pointer(d[DH_OLD_DATA]), max(old_offsets[known], 1), dtype=np.uint8)
            if same_strings(offsets, data, old_offsets, old_data, known):
                if known == count:
                    reused[c] = 1
                    continue
                old_hashes = carray(_pointer(d[DH_OLD_HASHES]), known, dtype=np.uint32)
                target[:known] = old_hashes
                start = known
        hash_strings(offsets, data, start, count, np.uint32(d[DH_SEED]), target[start:])
