"""The model file: a versioned, checksummed, non-pickle format that refuses damaged files."""

import json
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest

import fastada
from conftest import small_table
from fastada.config import FastadaError
from fastada.model import MAGIC


@pytest.fixture
def saved(rng, tmp_path):
    model = fastada.train(small_table(rng), label="label", bits=10, threads=1, l2=0.01)
    path = tmp_path / "m.fastada"
    model.save(path)
    return model, path


@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip_keeps_weights_spec_and_predictions(saved, rng, mmap):
    model, path = saved
    loaded = fastada.load(path, mmap=mmap)
    assert loaded.spec == model.spec
    assert np.array_equal(loaded.weights, model.weights)
    assert np.array_equal(loaded.accumulators, model.accumulators)
    table = small_table(rng)
    assert np.array_equal(loaded.predict(table), model.predict(table))


def test_file_starts_with_magic_and_a_readable_json_header(saved):
    _, path = saved
    raw = path.read_bytes()
    assert raw[:8] == MAGIC and b"pickle" not in raw[:64]
    (length,) = struct.unpack("<Q", raw[8:16])
    header = json.loads(raw[20:20 + length])
    assert header["format_version"] == 1 and header["spec"]["bits"] == 10
    assert header["arrays"]["weights"]["offset"] % 64 == 0


def test_truncated_file_is_refused(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FastadaError, match="truncated file"):
        fastada.load(path)


@pytest.mark.parametrize("where", ["header", "weights"])
def test_flipped_bit_is_refused(saved, where):
    _, path = saved
    raw = bytearray(path.read_bytes())
    header = json.loads(raw[20:20 + struct.unpack("<Q", raw[8:16])[0]])
    i = 40 if where == "header" else header["arrays"]["weights"]["offset"] + 17
    raw[i] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(FastadaError, match="checksum mismatch"):
        fastada.load(path)


def test_one_changed_weight_is_refused_by_eval_and_predict_which_map_the_model(saved, tmp_path, capsys):
    from fastada.cli import main
    model, path = saved
    raw = bytearray(path.read_bytes())
    header = json.loads(raw[20:20 + struct.unpack("<Q", raw[8:16])[0]])
    start = header["arrays"]["weights"]["offset"]
    raw[start:start + 4] = struct.pack("<f", 3.0)  # a plausible weight, not noise
    path.write_bytes(bytes(raw))
    with pytest.raises(FastadaError, match="weights checksum mismatch"):
        fastada.load(path, mmap=True)
    data = tmp_path / "d.parquet"
    pq.write_table(small_table(np.random.default_rng(0), n=50), data)
    for argv in (["eval", "--model", str(path), str(data)],
                 ["predict", "--model", str(path), str(data), "--out", str(tmp_path / "p.parquet")]):
        assert main(argv) == 2
        assert "weights checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()
    assert fastada.load(path, mmap=True, verify=False).weights[0] == 3.0  # asked not to check: not checked


def test_other_files_are_not_models(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"PAR1 not a model")
    with pytest.raises(FastadaError, match="not a fastada file"):
        fastada.load(p)
    with pytest.raises(FastadaError, match="file not found"):
        fastada.load(tmp_path / "missing")


def test_a_sparse_model_is_written_sparse_and_loads_as_it_was(rng, tmp_path):
    table = small_table(rng, n=2000)
    model = fastada.train(table, label="label", bits=16, learner="ftrl", lr=0.1, l1=1.0, threads=1)
    touched = int(((model.weights != 0) | (model.accumulators != 0)).sum())
    assert (model.weights != 0).sum() < touched < model.weights.size / 3  # L1 zeroes touched slots
    path = tmp_path / "m.fastada"
    model.save(path)
    raw = path.read_bytes()
    header = json.loads(raw[20:20 + struct.unpack("<Q", raw[8:16])[0]])
    assert header["format_version"] == 2 and header["sparse"] is True
    assert len(raw) < 12 * touched + 4096 < 8 * model.weights.size / 3  # a dense file holds 8 bytes a slot
    for mmap in (False, True):
        loaded = fastada.load(path, mmap=mmap)
        np.testing.assert_array_equal(loaded.weights, model.weights)
        np.testing.assert_array_equal(loaded.accumulators, model.accumulators)  # exact: nothing dropped
        np.testing.assert_array_equal(loaded.predict(table), model.predict(table))


def test_a_dense_model_stays_version_1(saved):
    _, path = saved
    raw = path.read_bytes()
    assert json.loads(raw[20:20 + struct.unpack("<Q", raw[8:16])[0]])["format_version"] == 1


def test_a_sparse_model_with_a_changed_index_or_weight_is_refused(rng, tmp_path):
    model = fastada.train(small_table(rng, n=1000), label="label", bits=16, learner="ftrl", lr=0.1, l1=1.0, threads=1)
    path = tmp_path / "m.fastada"
    model.save(path)
    raw = bytearray(path.read_bytes())
    header = json.loads(raw[20:20 + struct.unpack("<Q", raw[8:16])[0]])
    for name in ("index", "weights"):
        broken = bytearray(raw)
        broken[header["arrays"][name]["offset"]] ^= 0x01
        path.write_bytes(bytes(broken))
        with pytest.raises(FastadaError, match=f"{name} checksum mismatch"):
            fastada.load(path, mmap=True)


def test_a_model_written_before_new_value_features_loads_without_them():
    spec = fastada.FeatureSpec(label="label", categorical=("c",), new_values=True).to_dict()
    del spec["new_values"]
    assert fastada.FeatureSpec.from_dict(spec).new_values is False
