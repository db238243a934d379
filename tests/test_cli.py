"""The command line end to end, the real data samples, and bad input: one clear line, no model left."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import error_of, real_sample
import fastada
from fastada.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    assert main(["gen", "--rows", "20000", "--test-rows", "5000", "--out", str(out), "--seed", "1"]) == 0
    return out


def test_gen_writes_criteo_schema_and_truth(data):
    schema = pq.read_schema(data / "train.parquet")
    assert schema.field("label").type == pa.int8()
    assert [schema.field(f"I{i}").type for i in range(1, 14)] == [pa.int64()] * 13
    assert all(pa.types.is_string(schema.field(f"C{i}").type) or pa.types.is_dictionary(schema.field(f"C{i}").type)
               for i in range(1, 27))
    truth = json.loads((data / "truth.json").read_text())
    assert 0.3 < truth["bayes_test_logloss"] < 0.55 and 0.7 < truth["bayes_test_auc"] < 0.95
    assert pq.ParquetFile(data / "test.parquet").metadata.num_rows == 5000


def test_gen_makes_flatter_data_down_to_uniform_values(tmp_path, capsys):
    distinct = {}
    for zipf in ("1.5", "0"):
        out = tmp_path / zipf
        assert main(["gen", "--rows", "20000", "--test-rows", "0", "--out", str(out), "--zipf", zipf]) == 0
        table = pq.read_table(out / "train.parquet", columns=[f"C{i}" for i in range(1, 27)])
        distinct[zipf] = sum(len(pc.unique(table.column(c))) for c in table.column_names)
    assert distinct["0"] > 2 * distinct["1.5"]
    with pytest.raises(SystemExit):
        main(["gen", "--out", str(tmp_path / "x"), "--zipf", "-0.5"])
    assert "0 <= A <= B <= 10" in capsys.readouterr().err


def test_train_eval_predict_round_trip(data, tmp_path, capsys):
    model = tmp_path / "m.fastada"
    assert main(["train", str(data / "train.parquet"), "--model", str(model), "--bits", "18", "--quiet"]) == 0
    assert "trained 20,000 rows" in capsys.readouterr().out
    assert main(["eval", "--model", str(model), str(data / "test.parquet"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"logloss", "auc", "ne", "calibration", "rows"}
    assert metrics["rows"] == 5000 and metrics["auc"] > 0.7
    out = tmp_path / "p.parquet"
    assert main(["predict", "--model", str(model), str(data / "test.parquet"), "--out", str(out),
                 "--keep", "label,C3"]) == 0
    pred = pq.read_table(out)
    assert pred.column_names == ["prediction", "label", "C3"]
    test = pq.read_table(data / "test.parquet", columns=["label", "C3"])
    assert pred.column("label").equals(test.column("label"))  # input order kept
    p = pred.column("prediction").to_numpy()
    assert ((p > 0) & (p < 1)).all()
    import fastada
    m = fastada.load(model)
    np.testing.assert_allclose(m.predict(str(data / "test.parquet")), p)
    assert m.evaluate(str(data / "test.parquet"))["logloss"] == pytest.approx(metrics["logloss"])


def test_folder_and_glob_inputs_read_every_file(data, tmp_path, capsys):
    t = pq.read_table(data / "train.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(t.slice(0, 7000), folder / "a.parquet")
    pq.write_table(t.slice(7000), folder / "b.parquet")
    (folder / "_SUCCESS").write_text("")
    for source in (str(folder), str(folder / "*.parquet")):
        assert main(["train", source, "--model", str(tmp_path / "m"), "--bits", "16", "--quiet"]) == 0
        assert "trained 20,000 rows" in capsys.readouterr().out


@pytest.mark.parametrize("name,label,extra", [
    ("criteo", "label", []),
    ("avazu", "click", ["--ignore", "id", "--categorical",
                        "hour,C1,banner_pos,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"]),
])
def test_real_samples_train_and_evaluate(name, label, extra, tmp_path, capsys):
    folder = real_sample("criteo_dac_sample" if name == "criteo" else "avazu_sample")
    model = tmp_path / "m"
    train = os.path.join(folder, f"{name}_train.parquet")
    assert main(["train", train, "--label", label, "--model", str(model), "--bits", "20", "--lr", "0.05",
                 "--threads", "1", "--quiet", *extra]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(model), os.path.join(folder, f"{name}_test.parquet"), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["auc"] > 0.68 and m["ne"] < 0.97, m


def run_error(argv, capsys):
    code = main(argv)
    err = error_of(capsys.readouterr().err)
    assert code != 0
    assert err.startswith("fastada: error: ") and "\n" not in err and "Traceback" not in err
    return err


def write(path, table):
    pq.write_table(table, path)
    return str(path)


BAD_INPUT = {
    "missing label": (lambda d: [write(d / "x.parquet", pa.table({"c": ["a"]}))], [], "x.parquet: label column 'label' not found"),
    "missing label, one column named like a label": (lambda d: [write(d / "x.parquet", pa.table({"Click": [0, 1], "c": ["a", "b"]}))], [],
                                                     "x.parquet: label column 'label' not found (columns: Click, c); --label Click?"),
    "label out of set": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 3], "c": ["a", "b"]}))], [], "x.parquet, row group 0, row 1: label column 'label' has value 3"),
    "null label": (lambda d: [write(d / "x.parquet", pa.table({"label": pa.array([0, None], pa.int8()), "c": ["a", "b"]}))], [], "row 1: label column 'label' is null"),
    "no such path": (lambda d: [str(d / "nope.parquet")], [], "nope.parquet: no such file or folder"),
    "not parquet": (lambda d: [(d / "x.parquet").write_text("hello") and str(d / "x.parquet")], [], "x.parquet: not a readable Parquet file"),
    "empty data set": (lambda d: [write(d / "x.parquet", pa.table({"label": pa.array([], pa.int8()), "c": pa.array([], pa.string())}))], [], "x.parquet: the data set has no rows"),
    "unknown categorical": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--categorical", "zz"], "column 'zz' named in --categorical not found"),
    "unknown numeric": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--numeric", "zz"], "column 'zz' named in --numeric not found"),
    "bits too large": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--bits", "32"], "bits must be an integer in 1..31, got 32"),
    "bits zero": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--bits", "0"], "bits must be an integer in 1..31"),
    "lr zero": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--lr", "0"], "lr must be 'auto' or a positive number"),
    "negative l1": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--l1", "-1"], "l1 must be a number >= 0"),
    "negative l2": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--l2", "-0.1"], "l2 must be a number >= 0"),
    "holdout of every row": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--holdout-every", "1"], "holdout_every must be an integer in 2.."),
    "lr decay zero": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--lr-decay", "0"], "lr_decay must be a number in (0, 1]"),
    "resume without a folder": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--resume"], "resume needs the checkpoint folder"),
    "checkpoints without a folder": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--checkpoint-every-rows", "10"], "need a checkpoint folder"),
    "early stop with nothing to validate on": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]}))], ["--early-stop", "2"], "early stopping needs validation data"),
    "validation data without the label": (lambda d: [write(d / "x.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]})),
                                                      "--valid", write(d / "v.parquet", pa.table({"c": ["a", "b"]}))], [], "v.parquet: column 'label' is missing"),
    "column missing in a later file": (lambda d: [write(d / "a.parquet", pa.table({"label": [0, 1], "c": ["a", "b"]})),
                                                   write(d / "b.parquet", pa.table({"label": [0, 1], "d": ["a", "b"]}))], [], "b.parquet: column 'c' is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_gives_one_line_naming_the_problem_and_leaves_no_model(case, tmp_path, capsys):
    make, extra, message = BAD_INPUT[case]
    model = tmp_path / "out" / "model.fastada"
    model.parent.mkdir()
    err = run_error(["train", *make(tmp_path), "--model", str(model), *extra], capsys)
    assert message in err
    assert list(model.parent.iterdir()) == []


def test_a_failed_run_keeps_the_previous_model_intact(data, tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["train", str(data / "train.parquet"), "--model", str(model), "--bits", "12", "--quiet"]) == 0
    before = model.read_bytes()
    bad = write(tmp_path / "bad.parquet", pa.table({"label": [0, 7], "c": ["a", "b"]}))
    run_error(["train", bad, "--model", str(model)], capsys)
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "m"]


def test_validation_log_plot_and_inspect(data, tmp_path, capsys):
    model, log, png = tmp_path / "m", tmp_path / "log.jsonl", tmp_path / "curve.png"
    assert main(["train", str(data / "train.parquet"), "--model", str(model), "--bits", "16",
                 "--valid", str(data / "test.parquet"), "--holdout-every", "10", "--eval-every-rows", "8000",
                 "--epochs", "2", "--chunk-rows", "4000", "--log-json", str(log)]) == 0
    err = capsys.readouterr().err
    assert err.count("evaluation: epoch") == 6  # at 8k, 16k, 20k (epoch end), 24k, 32k, 40k rows
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["rows", "rows", "epoch"] * 2
    assert all(0.3 < r["valid_logloss"] < 0.7 and 0.3 < r["holdout_logloss"] < 0.8 for r in records)
    assert main(["plot", str(log), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["inspect", str(model), "--top", "8", "--data", str(data / "test.parquet")]) == 0
    out = capsys.readouterr().out
    header = json.loads(out[:out.index("\n}\n") + 3])
    assert header["spec"]["types"]["C1"] in ("string", "large_string") and "schema" not in header["spec"]
    assert header["summary"]["roles"]["C1"] == {"role": "categorical", "why": "strings"}
    lines = out.split("largest weights")[1].splitlines()[1:]
    assert len(lines) == 8
    columns = {f"C{i}" for i in range(1, 27)} | {f"I{i}" for i in range(1, 14)}
    assert all(line.split()[2].split("*")[0] in columns for line in lines), lines


def test_plot_refuses_a_file_that_is_not_a_log(tmp_path, capsys):
    bad = tmp_path / "x.jsonl"
    bad.write_text("not json\n")
    err = run_error(["plot", str(bad), "--out", str(tmp_path / "c.png")], capsys)
    assert "x.jsonl, line 1: not JSON" in err


def test_new_value_features_are_on_by_default_and_no_new_values_turns_them_off(data, tmp_path, capsys):
    for extra, expected in (([], True), (["--no-new-values"], False)):
        model = tmp_path / f"m{len(extra)}"
        assert main(["train", str(data / "train.parquet"), "--model", str(model), "--bits", "12",
                     "--threads", "1", *extra]) == 0
        assert fastada.load(model).spec.new_values is expected
        said = capsys.readouterr().err
        assert ("new-value features: " in said) is expected, said


def test_later_epochs_from_memory_are_said_and_cache_mb_0_turns_them_off(data, tmp_path, capsys):
    models = {}
    for extra, kept in (([], True), (["--cache-mb", "0"], False)):
        models[kept] = tmp_path / f"m{len(extra)}"
        assert main(["train", str(data / "train.parquet"), "--model", str(models[kept]), "--bits", "12",
                     "--threads", "1", "--lr", "0.05", "--epochs", "2", "--all-epochs", *extra]) == 0
        said = capsys.readouterr().err
        assert ("hashed chunks kept in memory for epoch 2" in said) is kept, said
    assert np.array_equal(fastada.load(models[True]).weights, fastada.load(models[False]).weights)
