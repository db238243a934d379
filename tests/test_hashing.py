"""MurmurHash3 x86_32: published test vectors, a pure-Python transcription, and mmh3."""

import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from fastada import hashing

# Published vectors for MurmurHash3_x86_32 (SMHasher; as collected on Stack Overflow q. 14747343)
VECTORS = [
    (b"", 0, 0x00000000),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\xff\xff\xff\xff", 0, 0x76293B50),
    (b"\x21\x43\x65\x87", 0, 0xF55B516B),
    (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE),
    (b"\x21\x43\x65", 0, 0x7E4A8634),
    (b"\x21\x43", 0, 0xA0F7B07A),
    (b"\x21", 0, 0x72661CF4),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    (b"aaaa", 0x9747B28C, 0x5A97808A),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
]


@pytest.mark.parametrize("data,seed,expected", VECTORS)
def test_murmur3_matches_published_vectors(data, seed, expected):
    assert hashing.hash_bytes(data, seed) == expected
    assert naive.murmur3_32(data, seed) == expected
    assert compiled_murmur3(data, seed) == expected


def compiled_murmur3(data: bytes, seed: int) -> int:
    """The compiled hash (what the featurizer runs) of ``data``."""
    buf = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(1, np.uint8)
    return int(hashing.murmur3_32(buf, 0, len(data), np.uint32(seed)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 2**32 - 1))
def test_murmur3_matches_reference_transcription_on_any_bytes(data, seed):
    assert hashing.hash_bytes(data, seed) == naive.murmur3_32(data, seed) == compiled_murmur3(data, seed)


@settings(max_examples=200, deadline=None)
@given(st.integers(-2**63, 2**63 - 1), st.integers(0, 2**32 - 1))
def test_integer_hash_is_murmur3_of_eight_little_endian_bytes(value, seed):
    assert hashing.murmur3_u64(np.int64(value), np.uint32(seed)) == naive.murmur3_32(struct.pack("<q", value), seed)


def test_the_numpy_integer_hash_equals_the_compiled_one(rng):
    values = np.concatenate([rng.integers(-2**63, 2**63 - 1, 500, dtype=np.int64),
                             np.arange(-5000, 5000, dtype=np.int64), [np.int64(1) << 40]])
    for seed in (0, 7, 2**32 - 1):
        expected = [hashing.murmur3_u64(v, np.uint32(seed)) for v in values]
        assert list(hashing.murmur3_u64_array(values, seed)) == expected


def test_matches_mmh3_when_installed():
    mmh3 = pytest.importorskip("mmh3")
    rng = np.random.default_rng(0)
    for _ in range(200):
        data = rng.bytes(int(rng.integers(0, 40)))
        seed = int(rng.integers(0, 2**32))
        assert hashing.hash_bytes(data, seed) == mmh3.hash(data, seed, signed=False)


def test_string_column_hashes_each_row_between_its_offsets():
    words = [b"", b"a", b"abcd", b"abcde", b"x" * 100]
    offsets = np.cumsum([0] + [len(w) for w in words]).astype(np.int64)
    data = np.frombuffer(b"".join(words), np.uint8)
    out = np.zeros(len(words), np.uint32)
    hashing.hash_strings(offsets, data, 0, len(words), np.uint32(7), out)
    assert list(out) == [naive.murmur3_32(w, 7) for w in words]


def test_column_seeds_differ_so_equal_values_in_two_columns_hash_apart():
    assert hashing.column_seed("C1", 0) != hashing.column_seed("C2", 0)
    assert hashing.column_seed("C1", 0) != hashing.column_seed("C1", 1)


def test_same_strings_agrees_with_python_on_near_misses():
    """The word-at-a-time comparison of a dictionary with the one hashed before (sliced ones
    too, whose offsets start past 0): every one-byte change, split or length is told apart."""
    from fastada.hashing import same_strings

    def parts(arr):
        offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
        return offsets, np.frombuffer(arr.buffers()[2], np.uint8)

    rng = np.random.default_rng(5)
    words = ["".join(rng.choice(list("abcdef"), rng.integers(0, 30))) for _ in range(300)]
    base = pa.array(words)
    cases = [(base, pa.array(words)), (base.slice(7, 200), pa.array(words[7:207])),
             (base, pa.array(words[:-1] + [words[-1] + "x"])), (base, pa.array(["".join(words[:2])] + words[2:] + [""]))]
    for i in (0, 150, 299):
        changed = list(words)
        changed[i] = changed[i][:-1] + ("a" if changed[i][-1:] != "a" else "b") if changed[i] else "z"
        cases.append((base, pa.array(changed)))
    for a, b in cases:
        count = min(len(a), len(b))
        expected = a.slice(0, count).to_pylist() == b.slice(0, count).to_pylist()
        assert same_strings(*parts(a), *parts(b), count) == expected
