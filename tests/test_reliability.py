"""Bad input, faults and hostile files: a clear one-line error or a documented, counted skip.

Each case below is a promise listed in the README's "Reliability" section.
"""

import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastada
from conftest import error_of
from fastada.cli import main
from fastada.config import FastadaError
from fastada.reader import DataSet


def write(path, table, **kwargs):
    pq.write_table(table, path, **kwargs)
    return str(path)


def two(**columns):
    return pa.table({"label": pa.array([0, 1], pa.int8()), **columns})


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, error_of(captured.err) if code != 0 and captured.err.strip() else captured.err.strip()


def many_rows(n=60_000):
    rng = np.random.default_rng(0)
    return pa.table({"label": rng.integers(0, 2, n).astype(np.int8),
                     "c": pa.array([f"v{i % 5000}" for i in range(n)]), "x": rng.normal(size=n)})


def raw_file(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def corrupt_middle(path):
    raw = bytearray(open(path, "rb").read())
    for i in range(len(raw) // 3, len(raw) // 3 + 3000, 7):
        raw[i] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    return path


# -- data that fastada refuses: (files maker, extra options, message) ----------------------------

REFUSED = {
    "type changes int -> string between files": (
        lambda d: [write(d / "a.parquet", two(c=[1, 2])), write(d / "b.parquet", two(c=["x", "y"]))], [],
        "b.parquet: column 'c' has type string but int64 in"),
    "type changes string -> int between files": (
        lambda d: [write(d / "a.parquet", two(c=["x", "y"])), write(d / "b.parquet", two(c=[1, 2]))], [],
        "b.parquet: column 'c' has type int64 but string in"),
    "a list of floats named as a feature": (
        lambda d: [write(d / "a.parquet", two(c=pa.array([[1.5], [2.5]])))], ["--categorical", "c"],
        "column 'c' has type list<element: double>, which cannot be a feature"),
    "a struct column named numeric": (
        lambda d: [write(d / "a.parquet", two(c=pa.array([{"a": 1}, {"a": 2}])))], ["--numeric", "c"],
        "a.parquet: numeric column 'c' has type struct<a: int64>; it must be bool or float or integer"),
    "duplicate column names": (
        lambda d: [write(d / "a.parquet", pa.Table.from_arrays(
            [pa.array([0, 1]), pa.array(["a", "b"]), pa.array(["c", "d"])], names=["label", "c", "c"]))], [],
        "a.parquet: column name 'c' appears more than once"),
    "a truncated Parquet file": (
        lambda d: [raw_file(d / "a.parquet", open(write(d / "g.parquet", two(c=["x", "y"])), "rb").read()[:-30])],
        [], "a.parquet: not a readable Parquet file"),
    "a corrupted page": (
        lambda d: [corrupt_middle(write(d / "a.parquet", many_rows(), row_group_size=20_000))], [],
        "a.parquet, row group 1: cannot be read"),
    "a label of text": (
        lambda d: [write(d / "a.parquet", pa.table({"label": ["yes", "no"], "c": ["x", "y"]}))], [],
        "a.parquet: label column 'label' has type string; it must be bool or float or integer"),
    "a negative weight": (
        lambda d: [write(d / "a.parquet", two(c=["x", "y"], w=[1.0, -2.0]))], ["--weight", "w"],
        "row 1: weight column 'w' has value -2.0"),
    "a NaN label": (
        lambda d: [write(d / "a.parquet", pa.table({"label": [0.0, np.nan], "c": ["x", "y"]}))], [],
        "row 1: label column 'label' has value nan"),
    "every file unreadable": (
        lambda d: [raw_file(d / "a.parquet", b"PAR1 garbage PAR1")],
        ["--on-bad-rows", "skip"], "no readable Parquet file among 1"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_input_gives_one_line_and_leaves_nothing(case, tmp_path, capsys):
    make, extra, message = REFUSED[case]
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli(["train", *make(tmp_path), "--model", str(out / "m"), "--bits", "10", *extra], capsys)
    assert code == 2
    assert err.startswith("fastada: error: ") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert list(out.iterdir()) == []


# -- data that fastada accepts, and what it makes of it ------------------------------------------

ACCEPTED = {
    "extra columns in a later file are ignored": lambda d: [
        write(d / "a.parquet", two(c=["x", "y"])), write(d / "b.parquet", two(c=["x", "y"], extra=[1, 2]))],
    "an all-null column is a constant null feature": lambda d: [write(d / "a.parquet", two(c=["x", "y"], n=pa.array([None, None])))],
    "NaN, inf and 1e308 are the missing feature or a bin": lambda d: [
        write(d / "a.parquet", pa.table({"label": [0, 1, 1, 0], "x": [np.nan, np.inf, -np.inf, 1e308],
                                         "y": [-1e308, 5e-324, 0.0, -0.0]}))],
    "empty, 1 MB and non-UTF-8 values are hashed as bytes": lambda d: [
        write(d / "a.parquet", pa.table({"label": [0, 1, 1], "s": ["", "x" * (1 << 20), "ünï"],
                                         "b": pa.array([b"\xff\xfe", b"", b"\x00\x00"], pa.binary())}))],
    "zero-row files and row groups are skipped": lambda d: [
        write(d / "a.parquet", pa.table({"label": pa.array([], pa.int8()), "c": pa.array([], pa.string())})),
        write(d / "b.parquet", pa.concat_tables([two(c=["x", "y"]).slice(0, 0), two(c=["x", "y"])]), row_group_size=2)],
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_input_trains_and_scores_finite(case, tmp_path, capsys):
    files = ACCEPTED[case](tmp_path)
    model = tmp_path / "m"
    code, out, err = run_cli(["train", *files, "--model", str(model), "--bits", "12", "--quiet"], capsys)
    assert code == 0, err
    m = fastada.load(model)
    assert np.isfinite(m.weights).all()
    p = m.predict(files)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()


# -- skip mode: counted, reported, and the good rows learned -------------------------------------

def test_skip_mode_counts_bad_rows_and_unreadable_files_and_row_groups(tmp_path, capsys):
    good = many_rows(40_000)
    files = [
        write(tmp_path / "a.parquet", good, row_group_size=10_000),
        corrupt_middle(write(tmp_path / "b.parquet", many_rows(), row_group_size=20_000)),
        write(tmp_path / "c.parquet", pa.table({"label": pa.array([0, 1, None, 7, 0, 1], pa.int64()),
                                                "c": ["a", "b", "c", "d", "e", "f"], "x": [1.0] * 6})),
    ]
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")
    files.append(str(tmp_path / "d.parquet"))
    code, out, err = run_cli(["train", *files, "--model", str(tmp_path / "m"), "--bits", "14",
                              "--on-bad-rows", "skip", "--threads", "1"], capsys)
    assert code == 0, err
    s = fastada.load(tmp_path / "m").summary
    assert s["bad_rows"] == 2  # the null label and the 7
    assert s["skipped_files"] == 1 and s["skipped_row_groups"] == 1 and s["skipped_rows"] == 20_000
    assert s["rows"] == 40_000 + 40_000 + 6
    assert "skipped an unreadable file: " in err and "d.parquet" in err
    assert "b.parquet, row group 1: cannot be read" in err
    assert "skipped (--on-bad-rows skip): 2 rows with a bad label or weight, 20,000 rows of 1 " in out


def test_skip_mode_gives_bad_rows_no_weight(tmp_path):
    table = pa.table({"label": pa.array([1, None, 5, 0], pa.int64()), "c": ["a", "only-bad-1", "only-bad-2", "b"]})
    model = fastada.train(table, label="label", bits=16, threads=1, bad_rows="skip")
    clean = fastada.train(table.filter(pa.array([True, False, False, True])), label="label", bits=16, threads=1)
    assert model.summary["bad_rows"] == 2
    np.testing.assert_array_equal(model.weights, clean.weights)


def test_a_file_removed_while_training_is_named(tmp_path):
    files = [write(tmp_path / f"{i}.parquet", two(c=["x", "y"])) for i in range(3)]
    dataset = DataSet(files)
    os.unlink(files[2])
    with pytest.raises(FastadaError, match=r"2.parquet: file not found \(was it removed\?\)"):
        fastada.train(dataset, label="label", bits=8, threads=1)
    model = fastada.train(dataset, label="label", bits=8, threads=1, bad_rows="skip")
    assert model.summary["skipped_row_groups"] == 1 and model.summary["rows"] == 4


# -- model and checkpoint files --------------------------------------------------------------------

@pytest.fixture
def model_file(tmp_path, rng):
    from conftest import small_table
    path = tmp_path / "m.fastada"
    fastada.train(small_table(rng), label="label", bits=10, threads=1).save(path)
    return path


def rewrite_header(path, change):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[8:16])[0]
    header = json.loads(raw[20:20 + n])
    change(header)
    body = json.dumps(header).encode().ljust(n)
    path.write_bytes(raw[:8] + struct.pack("<QI", len(body), zlib.crc32(body)) + body + raw[20 + n:])


@pytest.mark.parametrize("change,message", [
    (lambda h: h.update(format_version=2), "format version 2 is not supported"),
    (lambda h: h["arrays"]["weights"].update(shape=[10**14], nbytes=4 * 10**14), r"expected float32 \(1025,\)"),
    (lambda h: h["arrays"]["weights"].update(offset=-64), "truncated file"),
    (lambda h: h["arrays"]["weights"].update(offset=10**15), "truncated file"),
    (lambda h: h["spec"].update(bits=40), "bits must be an integer in 1..31"),
    (lambda h: h.update(spec="nonsense"), "corrupt model header"),
    (lambda h: h.update(kind="checkpoint"), "is a fastada checkpoint file, not a model"),
    (lambda h: h["arrays"].pop("weights"), "no weights array"),
])
def test_altered_model_headers_are_refused(model_file, change, message):
    rewrite_header(model_file, change)
    with pytest.raises(FastadaError, match=message):
        fastada.load(model_file)


def test_a_model_of_another_configuration_is_refused_by_predict(model_file, tmp_path, capsys):
    other = write(tmp_path / "other.parquet", pa.table({"label": [0, 1], "zz": ["a", "b"]}))
    code, _, err = run_cli(["predict", "--model", str(model_file), other, "--out", str(tmp_path / "p.parquet")], capsys)
    assert code == 2 and "other.parquet: column 'word' is missing" in err
    assert not (tmp_path / "p.parquet").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_model_files_are_refused_or_read_exactly(model_file, data):
    raw = model_file.read_bytes()
    original = fastada.load(model_file)
    kind = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        damaged = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    else:
        damaged = data.draw(st.binary(max_size=400))
    path = model_file.with_suffix(".damaged")
    path.write_bytes(damaged)
    try:
        loaded = fastada.load(path)
    except FastadaError:
        return
    # only bytes no checksum covers (padding between arrays) may change without an error
    np.testing.assert_array_equal(loaded.weights, original.weights)


# -- hostile schemas and values, generated -----------------------------------------------------

ARROW_TYPES = [pa.int8(), pa.int32(), pa.int64(), pa.uint64(), pa.float32(), pa.float64(), pa.string(),
               pa.large_string(), pa.binary(), pa.bool_(), pa.dictionary(pa.int32(), pa.string()), pa.null()]


def values_of(t):
    if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return st.one_of(st.none(), st.text(max_size=30))
    if pa.types.is_binary(t):
        return st.one_of(st.none(), st.binary(max_size=30))
    if pa.types.is_boolean(t):
        return st.one_of(st.none(), st.booleans())
    if pa.types.is_floating(t):
        return st.one_of(st.none(), st.floats(width=t.bit_width, allow_nan=True, allow_infinity=True))
    if pa.types.is_null(t):
        return st.none()
    info = np.iinfo(t.to_pandas_dtype())
    return st.one_of(st.none(), st.integers(int(info.min), int(info.max)))


@st.composite
def hostile_tables(draw):
    n = draw(st.integers(1, 40))
    columns = {"label": pa.array(draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)), pa.int8())}
    for i in range(draw(st.integers(1, 5))):
        t = draw(st.sampled_from(ARROW_TYPES))
        values = draw(st.lists(values_of(t), min_size=n, max_size=n))
        if pa.types.is_dictionary(t):
            columns[f"c{i}"] = pa.array(values, pa.string()).dictionary_encode()
        else:
            columns[f"c{i}"] = pa.array(values, t)
    return pa.table(columns)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=hostile_tables())
def test_any_schema_and_values_train_or_give_a_clear_error(tmp_path, table):
    path = write(tmp_path / "h.parquet", table, row_group_size=max(1, table.num_rows // 3))
    try:
        model = fastada.train(path, label="label", bits=8, threads=1, chunk_rows=7, crosses=[])
    except FastadaError as e:
        assert "h.parquet" in str(e) or "column" in str(e)
        return
    assert np.isfinite(model.weights).all()
    p = model.predict(path)
    assert p.shape == (table.num_rows,) and np.isfinite(p).all()


# -- faults ----------------------------------------------------------------------------------

def small_file_limit():
    """In the child: writes past 256 KiB fail with EFBIG, as a full disk fails them with ENOSPC."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_a_full_disk_keeps_the_previous_model_and_says_so(tmp_path):
    data = write(tmp_path / "d.parquet", many_rows(2000))
    model = tmp_path / "m.fastada"
    base = [sys.executable, "-m", "fastada.cli", "train", data, "--model", str(model), "--quiet", "--threads", "1"]
    subprocess.run(base + ["--bits", "12"], check=True)  # 32 KiB: fits
    before = model.read_bytes()
    proc = subprocess.run(base + ["--bits", "15"], preexec_fn=small_file_limit, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "m.fastada: cannot write (File too large); the previous file is unchanged" in proc.stderr
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet", "m.fastada"]


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_resume_is_exact(tmp_path, monkeypatch):
    from fastada import checkpoint
    data = write(tmp_path / "d.parquet", many_rows(20_000))
    settings = dict(label="label", bits=12, threads=1, chunk_rows=2000, checkpoint_every_rows=4000,
                    shuffle=True, epochs=2)
    reference = fastada.train(data, **settings, checkpoint_dir=tmp_path / "ref")
    real_fsync, calls = os.fsync, []

    def fsync_fails_after_three(fd):  # delayed-allocation filesystems report ENOSPC at fsync
        calls.append(fd)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fails_after_three)
    with pytest.raises(FastadaError, match="cannot write .No space left on device.; the previous file is unchanged"):
        fastada.train(data, **settings, checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not list((tmp_path / "ck").glob(".*tmp"))
    found, skipped = checkpoint.newest(str(tmp_path / "ck"))
    assert found is not None and not skipped
    resumed = fastada.train(data, **settings, checkpoint_dir=tmp_path / "ck", resume=True)
    assert np.array_equal(resumed.weights, reference.weights)


@pytest.mark.parametrize("lr", [1e30, 3e38])
def test_a_diverging_learning_rate_is_reported_not_saved(tmp_path, capsys, lr):
    # 1e30 keeps every number finite (a loss of ~1e30 nats a row); 3e38 overflows float32
    data = write(tmp_path / "d.parquet", pa.table({"label": [0, 1] * 500, "x": [1e30] * 1000}))
    code, _, err = run_cli(["train", data, "--model", str(tmp_path / "m"), "--lr", str(lr), "--bits", "8"], capsys)
    assert code == 2 and "training diverged" in err and "lower --lr" in err
    assert not (tmp_path / "m").exists()


def test_sigmoid_and_loss_stay_finite_for_any_margin():
    from fastada import kernels
    for z in (-np.inf, -1e308, -745.0, -1.0, 0.0, 1.0, 745.0, 1e308, np.inf):
        for y in (0.0, 1.0):
            if np.isfinite(z):
                assert np.isfinite(kernels.logistic_loss(z, y))
    p = np.empty(3)
    kernels.predict_chunk(np.zeros((3, 1), np.uint32), np.zeros((3, 1), np.uint32),
                          np.array([[1e38], [-1e38], [0]], np.float32),
                          np.array([3e38, 3e38], np.float32), np.uint32(0), 1, False, p, np.zeros(0, np.int64))
    assert np.isfinite(p).all() and p[0] == 1.0 and p[1] == 0.0


@pytest.mark.parametrize("argv,message", [
    (["train", "{d}", "--epochs", "0"], "epochs must be an integer in 1..1000000, got 0"),
    (["train", "{d}", "--threads", "0"], "threads must be 'auto' or an integer in 1..4096, got 0"),
    (["train", "{d}", "--chunk-rows", "0"], "chunk_rows must be an integer in 1.."),
    (["train", "{d}", "--bits", "32"], "bits must be an integer in 1..31"),
    (["train", "{d}", "--hash-seed", "-1"], "hash_seed must be an integer in 0..4294967295"),
    (["train", "{d}", "--lr", "nan"], "lr must be 'auto' or a positive number, got nan"),
    (["train", "{d}", "--lr", "inf"], "lr must be 'auto' or a positive number, got inf"),
    (["train", "{d}", "--l2", "inf"], "l2 must be a number >= 0, got inf"),
    (["train", "{d}", "--initial-accumulator", "-1"], "initial_accumulator must be a number >= 0"),
    (["train", "{d}", "--lr-decay", "1.5"], "lr_decay must be a number in (0, 1]"),
    (["train", "{d}", "--holdout-every", "-3"], "holdout_every must be an integer in 2.."),
    (["train", "{d}", "--eval-every-rows", "-1"], "eval_every_rows must be an integer in 0.."),
    (["train", "{d}", "--early-stop", "-1"], "early_stop must be an integer in 0..1000000"),
    (["train", "{d}", "--checkpoint-dir", "{t}/ck", "--keep-checkpoints", "0"], "keep_checkpoints must be an integer in 1.."),
    (["train", "{d}", "--checkpoint-dir", "{t}/ck", "--checkpoint-every-seconds", "-1"], "checkpoint_every_seconds must be a number >= 0"),
    (["train", "{d}", "--categorical", "c", "--numeric", "c"], "column 'c' is named both categorical and numeric"),
    (["train", "{d}", "--label", "c"], "label column 'c' has type string"),
    (["train", "{d}", "--weight", "nope"], "weight column 'nope' not found"),
    (["train", "{d}", "--cross", "c*zz"], "cross c*zz: column 'zz' is not a categorical or numeric feature"),
    (["train", "{d}", "--model", "{t}/no/such/folder/m"], "folder {t}/no/such/folder does not exist"),
    (["eval", "{d}", "--threads", "0"], "threads must be 'auto' or an integer >= 1, got 0"),
    (["predict", "{d}", "--out", "{t}/p.parquet", "--chunk-rows", "0"], "chunk_rows must be an integer in 1.."),
    (["inspect", "{t}/m", "--top", "-1"], "--top and --scan-rows must be >= 0"),
    (["gen", "--rows", "-1", "--out", "{t}/g"], "--rows and --test-rows must be >= 0"),
])
def test_options_out_of_range_or_in_conflict_are_refused(tmp_path, capsys, argv, message):
    d = write(tmp_path / "d.parquet", two(c=["x", "y"]))
    assert main(["train", d, "--model", str(tmp_path / "m"), "--quiet"]) == 0
    before = (tmp_path / "m").read_bytes()
    capsys.readouterr()
    argv = [a.format(d=d, t=tmp_path) for a in argv]
    if argv[0] in ("eval", "predict") or (argv[0] == "train" and "--model" not in argv):
        argv += ["--model", str(tmp_path / "m")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("fastada: error: ") and "\n" not in err
    assert message.format(t=tmp_path) in err
    assert (tmp_path / "m").read_bytes() == before


def test_minus_one_and_zero_labels_in_different_row_groups_are_refused_whatever_thread_reads_them(tmp_path, capsys):
    """The check runs in stream order in the driver: reader threads each see only some row groups."""
    rng = np.random.default_rng(5)
    parts = []
    for k in range(6):  # row groups alternate between 0/1 and -1/1 negatives
        y = rng.integers(0, 2, 300)
        parts.append(pa.table({"label": pa.array(np.where(y > 0, 1, -1 if k % 2 else 0), pa.int8()),
                               "c": pa.array([str(v) for v in rng.integers(0, 9, 300)])}))
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.concat_tables(parts), path, row_group_size=300)
    for _ in range(5):
        code = main(["train", str(path), "--model", str(tmp_path / "m"), "--threads", "1", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "mixes -1 and 0 labels" in err and "row group 1" in err
        assert not (tmp_path / "m").exists()


def test_a_model_with_a_nan_weight_is_refused_by_eval_and_predict_not_scored(small_data, tmp_path, capsys):
    data, model_path = small_data
    model = fastada.load(str(model_path))
    weights = np.array(model.weights)
    weights[:] = np.nan
    broken = fastada.Model(model.spec, weights, np.array(model.accumulators))
    broken.save(str(tmp_path / "nan.fastada"))
    for argv in (["eval", "--model", str(tmp_path / "nan.fastada"), str(data)],
                 ["predict", "--model", str(tmp_path / "nan.fastada"), str(data), "--out", str(tmp_path / "p.parquet")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fastada: error: ") and "non-finite prediction" in err and "\n" not in err
    assert not (tmp_path / "p.parquet").exists()


@pytest.fixture
def small_data(tmp_path):
    rng = np.random.default_rng(8)
    table = pa.table({"label": pa.array(rng.integers(0, 2, 400), pa.int8()),
                      "c": pa.array([str(v) for v in rng.integers(0, 20, 400)])})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    model = tmp_path / "m.fastada"
    fastada.train(table, label="label", bits=8, threads=1, model=str(model))
    return path, model


@pytest.mark.parametrize("argv,message", [
    (["train", "{d}", "--model", "{d}"], "--model {d} is also an input of this run"),
    (["train", "{d}", "--model", "{t}/new.fastada", "--log-json", "{d}"], "--log-json {d} is also an input"),
    (["train", "{d}", "--model", "{t}/x", "--log-json", "{t}/x"], "--log-json {t}/x is also --model"),
    (["train", "{d}", "--model", "/dev/null"], "--model /dev/null is a device, pipe or other special file"),
    (["train", "{d}", "--model", "{t}"], "--model {t} is a folder"),
    (["train", "{d}", "--model", "{t}/no/such/m"], "folder {t}/no/such does not exist"),
    (["train", "{d}", "--model", "{t}/m2", "--checkpoint-dir", "{d}"], "--checkpoint-dir {d} is also an input"),
    (["train", "{d}", "--model", "{t}/m2", "--checkpoint-dir", "{m}"], "--checkpoint-dir {m} is a file, not a folder"),
    (["predict", "--model", "{m}", "{d}", "--out", "{d}"], "--out {d} is also an input of this run"),
    (["predict", "--model", "{m}", "{d}", "--out", "{m}"], "--out {m} is also an input of this run"),
    (["predict", "--model", "{m}", "{d}", "--out", "/dev/null"], "is a device, pipe or other special file"),
])
def test_outputs_that_would_destroy_an_input_or_fail_late_are_refused_before_any_work(argv, message, small_data,
                                                                                     tmp_path, capsys):
    data, model = small_data
    before = {p: p.read_bytes() for p in (data, model)}
    fill = {"d": str(data), "m": str(model), "t": str(tmp_path)}
    code = main([a.format(**fill) for a in argv])
    err = error_of(capsys.readouterr().err)
    assert code == 2 and err.startswith("fastada: error: ") and "\n" not in err, err
    assert message.format(**fill) in err
    assert all(p.read_bytes() == content for p, content in before.items())  # nothing replaced
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(small_data, tmp_path, capsys,
                                                                             monkeypatch):
    import fastada.model as model_module
    data, _ = small_data
    # the permission itself (root may write anywhere, so the folder's mode cannot show it here)
    monkeypatch.setattr(model_module.os, "access", lambda path, mode: False)
    assert main(["train", str(data), "--model", str(tmp_path / "m")]) == 2
    assert f"folder {tmp_path} cannot be written" in capsys.readouterr().err


def test_gen_on_a_full_disk_fails_in_one_line_and_leaves_no_file(tmp_path):
    """RLIMIT_FSIZE stands for a full disk: the writer thread's error reaches the command."""
    out = tmp_path / "g"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
            "from fastada.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "gen", "--rows", "300000", "--test-rows", "0", "--out",
                           str(out)], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("fastada: error: ") and "cannot write the data" in done.stderr
    assert "wrote" not in done.stdout
    assert not any(p.suffix in (".partial", ".parquet") for p in out.iterdir())


@pytest.mark.parametrize("command", ["predict", "gen"])
def test_sigterm_leaves_no_temporary_file(command, small_data, tmp_path):
    data, model = small_data
    big = tmp_path / "big"
    if command == "predict":  # enough rows that scoring is still running when the signal comes
        table = pq.read_table(data)
        pq.write_table(pa.concat_tables([table] * 2000), tmp_path / "big.parquet", row_group_size=20_000)
        argv = ["predict", "--model", str(model), str(tmp_path / "big.parquet"), "--out", str(big / "p.parquet")]
        big.mkdir()
    else:
        argv = ["gen", "--rows", "3000000", "--test-rows", "0", "--out", str(big)]
    code = "import sys; from fastada.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    import time
    deadline = time.time() + 120
    while time.time() < deadline and not (big.exists() and any(big.iterdir())):
        time.sleep(0.05)  # until its temporary file exists
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated; nothing was left behind" in err and "Traceback" not in err
    assert list(big.iterdir()) == []


def test_a_checkpoint_folder_belongs_to_one_run(small_data, tmp_path, capsys):
    data, _ = small_data
    folder = tmp_path / "ck"
    first = ["train", str(data), "--model", str(tmp_path / "a"), "--checkpoint-dir", str(folder), "--quiet",
             "--threads", "1"]
    assert main(first) == 0
    kept = sorted(os.listdir(folder))
    assert kept
    # another run (other settings) in the same folder: refused before training, nothing deleted
    assert main(["train", str(data), "--model", str(tmp_path / "b"), "--checkpoint-dir", str(folder), "--lr", "0.3",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds another run's checkpoints" in err and "--resume" in err
    assert sorted(os.listdir(folder)) == kept and not (tmp_path / "b").exists()
    assert main(first + ["--resume"]) == 0  # the run it belongs to continues


# -- schema drift between training and scoring -----------------------------------------------------

def _drift_tables(rng, n=400):
    codes = rng.integers(0, 30, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(codes % 5 - 2)))).astype(np.int8)
    at = pa.array(rng.integers(1_600_000_000_000, 1_700_000_000_000, n), pa.timestamp("ms"))
    return codes, y, at


def test_categorical_columns_stored_otherwise_at_scoring_are_refused_naming_the_column(rng, tmp_path, capsys):
    codes, y, at = _drift_tables(rng)
    train = pa.table({"label": y, "c": pa.array([f"{v}" for v in codes]), "at": at})
    model = fastada.train(train, label="label", categorical=["c", "at"], bits=12, threads=1)
    model.save(tmp_path / "m")
    as_int = train.set_column(1, "c", pa.array(codes))
    in_us = train.set_column(2, "at", at.cast(pa.timestamp("us")))
    for table, column in ((as_int, "'c' has type int64 but string"), (in_us, "'at' has type timestamp[us] but timestamp[ms]")):
        pq.write_table(table, tmp_path / "d.parquet")
        with pytest.raises(FastadaError, match=re.escape(f"categorical column {column} in training: its values would hash")):
            model.evaluate(table)
        for argv in (["eval", "--model", str(tmp_path / "m"), str(tmp_path / "d.parquet")],
                     ["predict", "--model", str(tmp_path / "m"), str(tmp_path / "d.parquet"), "--out", str(tmp_path / "p.parquet")]):
            code, _, err = run_cli(argv, capsys)
            assert code == 2 and column in err and "d.parquet" in err
        with pytest.raises(FastadaError, match="would hash to other slots"):  # --valid: before training
            fastada.train(train, label="label", categorical=["c", "at"], bits=12, threads=1, valid=table)
    assert not (tmp_path / "p.parquet").exists()


def test_types_that_hash_alike_are_accepted_at_scoring(rng):
    codes, y, at = _drift_tables(rng)
    train = pa.table({"label": y, "c": pa.array([f"{v}" for v in codes]), "n": pa.array(codes, pa.int32())})
    model = fastada.train(train, label="label", categorical=["c", "n"], bits=12, threads=1)
    expected = model.predict(train)
    same = [train.set_column(1, "c", train["c"].cast(pa.large_string())),
            train.set_column(1, "c", train["c"].combine_chunks().dictionary_encode()),
            train.set_column(2, "n", train["n"].cast(pa.int64())),
            train.set_column(2, "n", train["n"].cast(pa.float64()))]
    for table in same:
        np.testing.assert_array_equal(model.predict(table), expected)


def test_hour_features_of_a_timestamp_in_another_time_zone_are_refused(rng):
    codes, y, at = _drift_tables(rng)
    train = pa.table({"label": y, "at": at.cast(pa.timestamp("ms", tz="UTC"))})
    model = fastada.train(train, label="label", time_features=True, bits=12, threads=1)
    assert model.spec.categorical == ("at:hour", "at:weekday")
    model.predict(train.set_column(1, "at", at.cast(pa.timestamp("us", tz="UTC"))))  # the unit: no matter
    with pytest.raises(FastadaError, match="would be counted in another time zone"):
        model.predict(train.set_column(1, "at", at.cast(pa.timestamp("ms", tz="Asia/Tokyo"))))


def test_a_recursive_glob_through_a_symlink_loop_reads_each_file_once(tmp_path):
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"label": [0, 1] * 50, "c": ["a", "b"] * 50}), tmp_path / "d" / "x.parquet")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    dataset = DataSet(str(tmp_path / "d" / "**" / "*.parquet"))
    assert len(dataset.files) == 1 and dataset.num_rows == 100
    assert DataSet([str(tmp_path / "d"), str(tmp_path / "d" / "x.parquet")]).num_rows == 100


def test_a_run_that_learned_nothing_is_refused(tmp_path, capsys):
    pq.write_table(pa.table({"label": pa.array([None, None, 7], pa.int64()), "c": ["a", "b", "c"]}), tmp_path / "d.parquet")
    code, _, err = run_cli(["train", str(tmp_path / "d.parquet"), "--model", str(tmp_path / "m"),
                            "--on-bad-rows", "skip"], capsys)
    assert code == 2 and "no row was learned: 3 of 3 rows had a bad label" in err
    assert not (tmp_path / "m").exists()


def test_os_level_problems_give_one_line(tmp_path, capsys, small_data):
    data, model = small_data
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [(["eval", "--model", str(fifo), str(data)], "a device, pipe or other special file, not a fastada file"),
             (["train", str(fifo), "--model", str(tmp_path / "m")], "a device, pipe or other special file, not a Parquet"),
             (["gen", "--rows", "10", "--seed", "-1", "--out", str(tmp_path / "g")], "seed must be an integer in 0..")]
    for argv, message in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and message in err, (argv, err)
    env = dict(os.environ, NUMBA_NUM_THREADS="0")
    done = subprocess.run([sys.executable, "-m", "fastada.cli", "eval", "--model", str(model), str(data)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("fastada: error: NUMBA_NUM_THREADS='0' is not a number of threads (1 or more); "
                                   "unset it or set it to the threads Numba may use")


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), ConnectionError("reset by peer"),
                                   OSError("AWS Error NETWORK_CONNECTION during GetObject operation")])
def test_access_and_network_failures_are_not_skipped_as_bad_data(tmp_path, monkeypatch, error):
    import fastada.reader as reader
    for name in ("a", "b"):
        pq.write_table(pa.table({"label": [0, 1] * 100, "c": ["x", "y"] * 100}), tmp_path / f"{name}.parquet")
    real = reader.pq.ParquetFile

    def failing(source, **kwargs):
        if "metadata" in kwargs and str(source).endswith("b.parquet"):  # reading rows, not the footer
            raise error
        return real(source, **kwargs)

    monkeypatch.setattr(reader.pq, "ParquetFile", failing)
    with pytest.raises(FastadaError, match="not the data, so it is not skipped as bad data") as caught:
        fastada.train(str(tmp_path), label="label", bad_rows="skip", bits=10, threads=1)
    assert not isinstance(caught.value, fastada.config.UnreadableData)
    assert "b.parquet: cannot be read now" in str(caught.value)


def test_a_column_all_null_in_the_first_file_takes_its_role_from_the_files_with_values(tmp_path):
    rng = np.random.default_rng(5)
    ads = rng.choice(["a", "b", "c"], 300)
    y = (ads == "a").astype(np.int8)
    pq.write_table(pa.table({"label": y[:100], "ad": pa.nulls(100)}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"label": y[100:], "ad": pa.array(ads[100:])}), tmp_path / "2.parquet")
    model = fastada.train(str(tmp_path), label="label", bits=10, threads=1, epochs=3)
    assert model.spec.categorical == ("ad",)
    assert model.summary["roles"]["ad"]["role"] == "categorical"  # (by its type: the first rows are null)
    p = model.predict(pa.table({"ad": ["a", "b"]}))
    assert p[0] > 0.8 > 0.2 > p[1]


def test_resume_refuses_another_table_of_the_same_shape(tmp_path):
    rng = np.random.default_rng(6)
    table = pa.table({"label": rng.integers(0, 2, 500), "c": rng.choice(["a", "b"], 500)})
    other = table.set_column(1, "c", pa.array(rng.choice(["x", "y"], 500)))
    fastada.train(table, label="label", bits=10, threads=1, checkpoint_dir=tmp_path / "ck")
    with pytest.raises(FastadaError, match="written for other training data"):
        fastada.train(other, label="label", bits=10, threads=1, checkpoint_dir=tmp_path / "ck", resume=True)
    fastada.train(table, label="label", bits=10, threads=1, checkpoint_dir=tmp_path / "ck", resume=True)


def test_a_folder_listing_skips_hidden_and_underscore_files(tmp_path):
    good = pa.table({"label": [0, 1] * 10, "c": ["a", "b"] * 10})
    pq.write_table(good, tmp_path / "part-0.parquet")
    for stray in ("_tmp.parquet", ".part-1.parquet.crc.parquet", "_SUCCESS"):
        pq.write_table(pa.table({"other": [1.0]}), tmp_path / stray)
    dataset = DataSet(str(tmp_path))
    assert [os.path.basename(path) for _, path in dataset.files] == ["part-0.parquet"]
    assert dataset.num_rows == 20


def test_fastada_reads_with_the_c_librarys_allocator_unless_told_otherwise(tmp_path, monkeypatch):
    # imported before pyarrow: Arrow's C++ default pool is the C library's from the start ...
    probe = "import fastada, os, pyarrow as pa; print(pa.default_memory_pool().backend_name, os.environ['ARROW_DEFAULT_MEMORY_POOL'])"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split() == ["system", "system"], done.stderr
    # ... and a pool the user names is kept
    env["ARROW_DEFAULT_MEMORY_POOL"] = "mimalloc"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split()[1] == "mimalloc", done.stderr
    # pyarrow imported first (as here): a training run switches Python's default pool, and puts it back
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool()
    seen = []
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"label": [0, 1] * 500, "c": ["x", "y", "z", "w"] * 250}), path)
    fastada.train(str(path), bits=10, threads=1, on_chunk=lambda p: seen.append(pa.default_memory_pool().backend_name))
    assert seen and set(seen) == {"system"}
    assert pa.default_memory_pool().backend_name == before.backend_name
