"""The featurizer hashes Arrow data exactly as the row-by-row reference does, whatever the layout."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import naive
from conftest import small_table
from fastada.config import FastadaError, FeatureSpec
from fastada.features import Featurizer


def reference(table, spec):
    rows = table.to_pylist()
    return [naive.row_features(r, spec) for r in rows]


def flatten(block, featurizer):
    out = []
    for r in range(block.rows):
        feats = [(int(h), 1.0) for h in block.cat[r]]
        feats += [(int(h), float(v)) for h, v in zip(block.num[r], block.num_values[r])]
        out.append(feats)
    return out


def specs():
    base = dict(label="label", categorical=("word", "code"), numeric=("count",))
    return [FeatureSpec(**base, numeric_mode=m) for m in ("value", "bucket", "both")] + [
        FeatureSpec(**base, crosses=(("word", "code"), ("word", "count")), hash_seed=99)]


@pytest.mark.parametrize("spec", specs(), ids=lambda s: f"{s.numeric_mode}-{len(s.crosses)}")
def test_features_match_row_by_row_reference(rng, spec):
    table = small_table(rng)
    f = Featurizer(spec)
    block = f(table.to_batches()[0], "t")
    assert flatten(block, f) == reference(table, spec)


@pytest.mark.parametrize("layout", ["dictionary", "large_string", "binary", "sliced"])
def test_string_layouts_hash_alike(rng, layout):
    table = small_table(rng)
    spec = specs()[2]
    expected = Featurizer(spec)(table.to_batches()[0], "t").cat[:, 0]
    word = table.column("word").combine_chunks()
    if layout == "dictionary":
        word = word.dictionary_encode()
    elif layout == "large_string":
        word = word.cast(pa.large_string())
    elif layout == "binary":
        word = word.cast(pa.binary())
    t2 = table.set_column(1, "word", word)
    if layout == "sliced":
        batch = pa.concat_tables([table.slice(0, 3), table]).combine_chunks().to_batches()[0].slice(3)
    else:
        batch = t2.combine_chunks().to_batches()[0]
    assert np.array_equal(Featurizer(spec)(batch, "t").cat[:, 0], expected)


def test_dictionary_hashes_are_reused_and_extended_by_content():
    spec = FeatureSpec(label="label", categorical=("c",))
    f = Featurizer(spec)
    d1 = pa.array(["a", "b"])
    d2 = pa.array(["a", "b", "c"])  # grew: the previous dictionary is its prefix
    d3 = pa.array(["c", "a"])       # unrelated
    plain = Featurizer(spec)
    for d, idx in ((d1, [0, 1]), (d2, [2, 0]), (d3, [0, 1]), (d1, [1, 1])):
        batch = pa.record_batch([pa.array([0, 1]), pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), d)],
                                names=["label", "c"])
        decoded = pa.record_batch([batch.column(0), batch.column(1).cast(pa.string())], names=["label", "c"])
        assert np.array_equal(f(batch, "t").cat, plain(decoded, "t").cat)


def test_nulls_become_a_feature_of_their_own(rng):
    spec = FeatureSpec(label="label", categorical=("word",), numeric=("count",), numeric_mode="value")
    table = pa.table({"label": [0, 1, 0], "word": ["", None, "a"], "count": [1.0, None, float("nan")]})
    block = Featurizer(spec)(table.to_batches()[0], "t")
    empty, null, a = block.cat[:, 0]
    assert len({empty, null, a}) == 3
    assert block.num[1, 0] == block.num[2, 0] != block.num[0, 0]  # null and NaN: missing
    assert list(block.num_values[:, 0]) == [pytest.approx(np.log(2)), 1.0, 1.0]


@pytest.mark.parametrize("labels,expected", [
    ([0, 1, 1], [0, 1, 1]), ([-1, 1, -1], [0, 1, 0]), ([True, False, True], [1, 0, 1]), ([0.0, 1.0, 0.0], [0, 1, 0])])
def test_accepted_label_encodings(labels, expected):
    spec = FeatureSpec(label="y", categorical=("c",))
    batch = pa.record_batch([pa.array(labels), pa.array(["a", "b", "c"])], names=["y", "c"])
    assert list(Featurizer(spec)(batch, "t").labels) == expected


@pytest.mark.parametrize("labels,row,problem", [
    ([0, 2, 1], 1, "has value 2;"), ([0, 1, None], 2, "is null"), ([0.5, 1, 0], 0, "has value 0.5;")])
def test_bad_labels_are_refused_naming_file_row_and_value(labels, row, problem):
    spec = FeatureSpec(label="y", categorical=("c",))
    batch = pa.record_batch([pa.array(labels), pa.array(["a", "b", "c"])], names=["y", "c"])
    with pytest.raises(FastadaError, match=f"^file.parquet, row group 0, row {100 + row}: label column 'y' {problem}"):
        Featurizer(spec)(batch, "file.parquet, row group 0", first_row=100)


def test_each_chunk_says_which_negative_labels_it_uses_and_refuses_mixing_them():
    spec = FeatureSpec(label="y", categorical=("c",))
    f = Featurizer(spec)
    assert f(pa.record_batch([pa.array([1, -1]), pa.array(["a", "b"])], names=["y", "c"]), "t").label_kinds == {-1}
    assert f(pa.record_batch([pa.array([1, 0]), pa.array(["a", "b"])], names=["y", "c"]), "t").label_kinds == {0}
    with pytest.raises(FastadaError, match="mixes -1 and 0"):  # within one chunk (across chunks: the driver)
        f(pa.record_batch([pa.array([-1, 0]), pa.array(["a", "b"])], names=["y", "c"]), "t")


@pytest.mark.parametrize("arr", [
    pa.array([3, -1, 0, 7], pa.int64()),
    pa.array([3, None, 0, 7], pa.int32()),
    pa.array([1.5, None, float("nan"), -2.0], pa.float32()),
    pa.array([2**63 + 5, 1], pa.uint64()),
    pa.array([True, False, True, True, False, False, True, False, True], pa.bool_()),
    pa.array([True, False, True, True, False, False, True, False, True], pa.bool_()).slice(3, 5),
    pa.array([1, None, 2, 3, None, 4], pa.int8()).slice(1, 4),
    pa.chunked_array([pa.array([1, 2], pa.int16()), pa.array([None, 4], pa.int16())]),
    pa.array([], pa.float64()),
], ids=lambda a: f"{a.type}-{len(a)}")
def test_arrow_numbers_become_numpy_as_pyarrow_makes_them(arr):
    from fastada.features import as_numpy
    got = as_numpy(arr)
    want = arr.to_numpy(zero_copy_only=False)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_columns_whose_dictionary_overflowed_are_read_plain_with_the_same_features(tmp_path):
    """A writer whose dictionary fills up goes on with plain pages; Arrow then rebuilds a growing
    dictionary batch by batch, which costs more than hashing the strings. The reader notices and
    reads the column plain from the file's next row group on: the features stay the same."""
    from fastada.reader import DataSet
    rng = np.random.default_rng(3)
    n = 8000
    table = pa.table({"label": rng.integers(0, 2, n).astype(np.int8),
                      "many": [f"value-{v:07d}" for v in rng.integers(0, 10**6, n)],
                      "few": [f"f{v}" for v in rng.integers(0, 5, n)]})
    path = tmp_path / "overflow.parquet"
    pq.write_table(table, path, row_group_size=2000, dictionary_pagesize_limit=4096, data_page_size=1024)
    spec = FeatureSpec(label="label", categorical=("many", "few"))
    data = DataSet(str(path))
    read = [(c.unit.row_group, c.batch) for c in data.chunks(["label", "many", "few"], 500, None, ["many", "few"])]
    assert data.plain_columns == {0: {"many"}}
    assert pa.types.is_dictionary(read[0][1].schema.field("many").type)
    assert not pa.types.is_dictionary(read[-1][1].schema.field("many").type)
    assert all(pa.types.is_dictionary(b.schema.field("few").type) for _, b in read)
    plain = [c.batch for c in DataSet(str(path)).chunks(["label", "many", "few"], 500)]
    f, g = Featurizer(spec), Featurizer(spec)
    for (_, mixed), decoded in zip(read, plain):
        assert np.array_equal(f(mixed, "t").cat, g(decoded, "t").cat)
    # a second file of the writer is read plain from its first row group on
    pq.write_table(table, tmp_path / "overflow-2.parquet", row_group_size=2000, dictionary_pagesize_limit=4096,
                   data_page_size=1024)
    both = DataSet([str(path), str(tmp_path / "overflow-2.parquet")])
    first = {}
    for c in both.chunks(["label", "many", "few"], 500, None, ["many", "few"]):
        first.setdefault(c.unit.file, c.batch.schema)
    assert pa.types.is_dictionary(first[0].field("many").type) and not pa.types.is_dictionary(first[1].field("many").type)
    assert pa.types.is_dictionary(first[1].field("few").type)
