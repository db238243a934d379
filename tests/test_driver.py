"""The training driver: holdout, validation, early stopping, checkpoints and exact resume."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastada
from conftest import small_table
from fastada import checkpoint, hashing
from fastada.config import FastadaError
from fastada.train import Stopped


def parquet_data(tmp_path, rng, files=2, rows=3000, row_group=700):
    """A data set of several files and row groups, so positions cross file and group edges."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(files):
        pq.write_table(small_table(rng, n=rows), folder / f"part-{i}.parquet", row_group_size=row_group)
    return folder


# Every feature of the driver at once: shuffling, several epochs, lr decay, L1/L2, holdout,
# validation every N rows, checkpoints; chunks smaller than row groups.
SETTINGS = dict(label="label", bits=12, lr=0.2, l1=1e-4, l2=1e-3, epochs=3, shuffle=True, seed=7,
                lr_decay=0.7, holdout_every=5, eval_every_rows=2500, chunk_rows=256, threads=1)


def test_holdout_rows_are_scored_never_learned(rng):
    n, k = 1000, 4
    table = small_table(rng, n=n)
    held = (np.arange(n) % k) == k - 1
    tag = pa.array([f"held-{i}" if h else "learned" for i, h in enumerate(held)])
    table = table.append_column("tag", tag)
    model = fastada.train(table, label="label", bits=16, holdout_every=k, threads=1, chunk_rows=128,
                          shuffle=True, epochs=2)
    seed = hashing.column_seed("tag", model.spec.hash_seed)
    slot = {v: hashing.hash_bytes(v.encode(), seed) & (model.spec.slots - 1)
            for v in ("held-3", "held-7", "held-999", "learned")}
    held_slots, learned_slot = [slot["held-3"], slot["held-7"], slot["held-999"]], slot["learned"]
    assert np.all(model.accumulators[held_slots] == 0) and np.all(model.weights[held_slots] == 0)
    assert model.accumulators[learned_slot] > 0
    last = model.summary["evaluations"][-1]
    assert last["holdout_logloss"] is not None and 0.3 < last["holdout_logloss"] < 1.0
    assert model.summary["rows"] == 2 * n


def test_early_stopping_keeps_the_best_model_on_data_built_to_overfit(tmp_path, rng):
    # Each row has its own id, labels are coin flips: more epochs memorise noise, so the
    # validation loss must start to rise, and the run must stop and return its best model.
    def noise(n, offset):
        return pa.table({"label": rng.integers(0, 2, n).astype(np.int8),
                         "id": pa.array([f"r{offset + i}" for i in range(n)]),
                         "code": rng.integers(0, 3, n)})
    train, valid = noise(2000, 0), noise(2000, 10**6)
    model = fastada.train(train, label="label", categorical=["id", "code"], bits=16, lr=0.5,
                          epochs=30, valid=valid, early_stop=2, threads=1)
    history = model.summary["evaluations"]
    assert model.summary["stopped_early"] and len(history) < 30
    best = min(h["valid_logloss"] for h in history)
    assert history[-1]["valid_logloss"] > best and history[-2]["valid_logloss"] > best
    assert model.summary["best_logloss"] == best
    assert model.evaluate(valid)["logloss"] == pytest.approx(best, abs=1e-6)


def test_early_stopping_needs_something_to_validate_on(rng):
    with pytest.raises(FastadaError, match="early stopping needs validation data"):
        fastada.train(small_table(rng), label="label", early_stop=2, threads=1)


def test_lr_decays_each_epoch(rng):
    model = fastada.train(small_table(rng), label="label", bits=10, epochs=3, lr=0.2, lr_decay=0.5,
                          threads=1, holdout_every=4)
    assert [h["lr"] for h in model.summary["evaluations"]] == pytest.approx([0.2, 0.1, 0.05])


def test_later_epochs_learn_from_the_first_epochs_hashed_chunks_the_same_model(tmp_path, rng, monkeypatch):
    data = parquet_data(tmp_path, rng)
    reads = []
    unit_chunks = fastada.reader.DataSet.unit_chunks

    def counted(self, unit, *args, **kwargs):
        reads.append(unit)
        return unit_chunks(self, unit, *args, **kwargs)

    monkeypatch.setattr(fastada.reader.DataSet, "unit_chunks", counted)
    settings = {k: v for k, v in SETTINGS.items() if k != "eval_every_rows"}
    models, notes = {}, {}
    for cache_mb in (0, None, 0.05):  # never kept, all kept, room for a few row groups
        reads.clear()
        notes[cache_mb] = []
        models[cache_mb] = fastada.train(str(data), **settings, cache_mb=cache_mb, on_note=notes[cache_mb].append)
        models[cache_mb].reads = len(reads)
    row_groups = 2 * 5  # (two files of 3,000 rows in groups of 700)
    assert models[0].reads - models[None].reads == 2 * row_groups  # (epochs 2 and 3 read nothing)
    assert models[None].reads < models[0.05].reads < models[0].reads
    assert not any("kept in memory" in n for n in notes[0])
    assert any(n.startswith("hashed chunks kept in memory for epochs 2-3") for n in notes[None])
    for cache_mb in (None, 0.05):
        assert np.array_equal(models[cache_mb].weights, models[0].weights)
        assert np.array_equal(models[cache_mb].accumulators, models[0].accumulators)
        assert models[cache_mb].summary["evaluations"][-1]["holdout_logloss"] == \
            models[0].summary["evaluations"][-1]["holdout_logloss"]


def test_a_single_epoch_keeps_nothing(rng):
    notes = []
    fastada.train(small_table(rng, n=2000), label="label", bits=12, lr=0.1, threads=1, on_note=notes.append)
    assert not any("kept in memory" in n for n in notes)


def test_cache_size_must_be_a_number_of_megabytes(rng):
    with pytest.raises(FastadaError, match="cache_mb must be a number >= 0"):
        fastada.train(small_table(rng, n=100), label="label", cache_mb=-1)


def uninterrupted(data, tmp_path, **extra):
    return fastada.train(str(data), **SETTINGS, valid=str(data / "part-0.parquet"),
                         checkpoint_dir=tmp_path / "ck-ref", checkpoint_every_rows=1000, **extra)


@pytest.fixture(scope="module")
def resume_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    data = parquet_data(tmp, np.random.default_rng(3))
    return tmp, data, uninterrupted(data, tmp, log_json=tmp / "ref.jsonl")


@pytest.mark.parametrize("stop_after_chunks", [1, 9, 36, 50, 71])
def test_stopped_and_resumed_run_equals_uninterrupted_bit_for_bit(resume_case, tmp_path, stop_after_chunks):
    _, data, reference = resume_case
    stop, seen = threading.Event(), []

    def count(progress):
        seen.append(progress.rows)
        if len(seen) == stop_after_chunks:
            stop.set()

    kwargs = dict(**SETTINGS, valid=str(data / "part-0.parquet"), checkpoint_dir=tmp_path / "ck",
                  checkpoint_every_rows=1000, log_json=tmp_path / "log.jsonl")
    with pytest.raises(Stopped, match="checkpoint written"):
        fastada.train(str(data), **kwargs, on_chunk=count, stop=stop)
    notes = []
    resumed = fastada.train(str(data), **kwargs, resume=True, on_note=notes.append)
    assert any(n.startswith("resumed from") for n in notes)
    assert np.array_equal(resumed.weights, reference.weights)
    assert np.array_equal(resumed.accumulators, reference.accumulators)
    assert resumed.summary["progressive_logloss"] == reference.summary["progressive_logloss"]
    without_time = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert without_time(resumed.summary["evaluations"]) == without_time(reference.summary["evaluations"])
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert without_time(log) == without_time(reference.summary["evaluations"])


def stopped_run(data, checkpoints, after_chunks: int) -> dict:
    """Start SETTINGS' run on ``data`` with checkpoints every 1,000 rows in ``checkpoints`` and
    stop it after ``after_chunks`` chunks; returns the run's settings, to resume it."""
    stop = threading.Event()
    kwargs = dict(**SETTINGS, valid=str(data / "part-0.parquet"), checkpoint_dir=checkpoints,
                  checkpoint_every_rows=1000)
    calls = []
    with pytest.raises(Stopped):
        fastada.train(str(data), **kwargs, stop=stop,
                      on_chunk=lambda p: (calls.append(1), len(calls) == after_chunks and stop.set()))
    return kwargs


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(resume_case, tmp_path):
    _, data, reference = resume_case
    kwargs = stopped_run(data, tmp_path / "ck", 40)
    files = sorted((tmp_path / "ck").glob("checkpoint-*.fastada"))
    assert len(files) == 3  # keep_checkpoints
    raw = bytearray(files[-1].read_bytes())  # a kill half-way through a write leaves at most a
    files[-1].write_bytes(bytes(raw[: len(raw) // 2]))  # temporary file; be harsher: damage the newest
    (tmp_path / "ck" / ".checkpoint-00000000000000099999.fastada.x.tmp").write_bytes(b"partial")
    notes = []
    resumed = fastada.train(str(data), **kwargs, resume=True, on_note=notes.append)
    assert any("skipped a damaged checkpoint" in n and "truncated" in n for n in notes)
    assert np.array_equal(resumed.weights, reference.weights)
    assert not list((tmp_path / "ck").glob(".*.tmp"))


@pytest.mark.parametrize("change,message", [
    (dict(bits=13), "other features"),
    (dict(lr=0.3), r"other learning settings \(lr: checkpoint 0.2, this run 0.3\)"),
    (dict(data="part-1"), "other training data"),
])
def test_resume_refuses_a_checkpoint_of_another_run(resume_case, change, message):
    tmp, data, _ = resume_case
    settings = {**SETTINGS, **{k: v for k, v in change.items() if k != "data"}}
    source = str(data / "part-1.parquet") if "data" in change else str(data)
    with pytest.raises(FastadaError, match=message):
        fastada.train(source, **settings, valid=str(data / "part-0.parquet"),
                      checkpoint_dir=tmp / "ck-ref", checkpoint_every_rows=1000, resume=True)


def test_resume_refuses_data_rewritten_under_the_same_name(tmp_path, rng):
    path = tmp_path / "d.parquet"
    pq.write_table(small_table(rng, n=500), path)
    settings = dict(label="label", bits=10, threads=1, chunk_rows=100, checkpoint_dir=tmp_path / "ck",
                    checkpoint_every_rows=100)
    fastada.train(str(path), **settings)
    pq.write_table(small_table(rng, n=500, with_nulls=False), path)  # same rows, other values
    with pytest.raises(FastadaError, match="other training data"):
        fastada.train(str(path), **settings, resume=True)


def test_resume_without_a_checkpoint_starts_from_the_beginning(resume_case, tmp_path):
    _, data, reference = resume_case
    notes = []
    model = fastada.train(str(data), **SETTINGS, valid=str(data / "part-0.parquet"),
                          checkpoint_dir=tmp_path / "empty", checkpoint_every_rows=1000, resume=True,
                          on_note=notes.append)
    assert notes and "starting from the beginning" in notes[0]
    assert np.array_equal(model.weights, reference.weights)


def test_checkpoint_files_are_listed_and_rotated(resume_case):
    tmp, _, reference = resume_case
    files = sorted(os.listdir(tmp / "ck-ref"))
    assert len(files) == 3 and all(f.startswith("checkpoint-") for f in files)
    found, skipped = checkpoint.newest(str(tmp / "ck-ref"))
    assert not skipped and found.state["progress"]["step"] == reference.summary["rows"]


# -- the command line, killed for real -----------------------------------------------------------

def cli(*args):
    return [sys.executable, "-m", "fastada.cli", *args]


def train_command(data, model, ck):
    # 2^18 slots: each checkpoint writes 4 MB, so random kills often land inside a write
    return cli("train", str(data), "--model", str(model), "--bits", "18", "--threads", "1", "--epochs", "2",
               "--shuffle", "--holdout-every", "7", "--l2", "1e-4", "--chunk-rows", "500",
               "--checkpoint-dir", str(ck), "--checkpoint-every-rows", "4000", "--quiet")


@pytest.fixture(scope="module")
def kill_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    data = parquet_data(tmp, np.random.default_rng(5), files=3, rows=20000, row_group=6000)
    start = time.monotonic()
    subprocess.run(train_command(data, tmp / "ref.fastada", tmp / "ck-ref"), check=True, timeout=300)
    return tmp, data, fastada.load(tmp / "ref.fastada"), time.monotonic() - start


def test_sigkill_at_random_moments_then_resume_gives_the_same_model(kill_case, tmp_path):
    _, data, reference, wall = kill_case
    ck, model = tmp_path / "ck", tmp_path / "m.fastada"
    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(train_command(data, model, ck) + ["--resume"])
        time.sleep(rng.uniform(0.1, 0.9) * wall)  # start-up, reading, learning or a checkpoint write
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            print("killed with checkpoints", sorted(p.name[11:31] for p in ck.glob("*checkpoint-*")))
        proc.wait(timeout=60)
        if model.exists():
            break
    assert kills >= 1
    if not model.exists():
        subprocess.run(train_command(data, model, ck) + ["--resume"], check=True, timeout=300)
    resumed = fastada.load(model)
    assert np.array_equal(resumed.weights, reference.weights)
    assert np.array_equal(resumed.accumulators, reference.accumulators)


def test_sigterm_stops_cleanly_with_a_final_checkpoint(kill_case, tmp_path):
    _, data, reference, _ = kill_case
    ck, model = tmp_path / "ck", tmp_path / "m.fastada"
    proc = subprocess.Popen(train_command(data, model, ck)[:-1], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(ck.glob("checkpoint-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM
    assert "checkpoint written" in err and "--resume" in err and "Traceback" not in err
    assert not model.exists()
    subprocess.run(train_command(data, model, ck) + ["--resume"], check=True, timeout=300)
    assert np.array_equal(fastada.load(model).weights, reference.weights)


def test_hogwild_resume_reaches_the_quality_of_an_uninterrupted_run(resume_case, tmp_path):
    _, data, _ = resume_case
    settings = {**SETTINGS, "threads": 2}
    valid = str(data / "part-0.parquet")
    whole = fastada.train(str(data), **settings, valid=valid)
    stop, calls = threading.Event(), []
    kwargs = dict(**settings, valid=valid, checkpoint_dir=tmp_path / "ck", checkpoint_every_rows=1000)
    with pytest.raises(Stopped):
        fastada.train(str(data), **kwargs, stop=stop,
                      on_chunk=lambda p: (calls.append(1), len(calls) == 30 and stop.set()))
    resumed = fastada.train(str(data), **kwargs, resume=True)
    # Hogwild with 2 threads is not bit-for-bit repeatable; the tolerance is that of Hogwild itself
    assert resumed.evaluate(valid)["logloss"] == pytest.approx(whole.evaluate(valid)["logloss"], abs=0.005)


def test_summary_gives_progressive_loss_by_epoch_and_the_last_as_the_headline(rng):
    table = small_table(rng, n=3000)
    model = fastada.train(table, label="label", bits=12, threads=1, epochs=3, chunk_rows=500)
    s = model.summary
    by_epoch = s["progressive_logloss_by_epoch"]
    assert len(by_epoch) == 3 and by_epoch[2] < by_epoch[0]  # a later pass learns from a better model
    assert s["progressive_logloss"] == by_epoch[-1]
    assert min(by_epoch) <= s["progressive_logloss_all_epochs"] <= max(by_epoch)


# -- what shuffling, decay, scoring order and resume must do (each pinned by tests/mutations.py) --

def _sorted_by_label(rows):
    """A click rate set by column c, rows sorted by label: the worst order to learn in (a model
    that has just seen 500 clicks in a row predicts clicks)."""
    rng = np.random.default_rng(4)
    c = rng.integers(0, 7, rows)
    y = (rng.random(rows) < 0.15 + 0.1 * c).astype(np.int8)
    order = np.argsort(y, kind="stable")
    return pa.table({"label": y[order], "c": pa.array([f"v{v}" for v in c[order]])})


def test_shuffle_mixes_row_groups_each_epoch(tmp_path):
    table = _sorted_by_label(4000)
    pq.write_table(table, tmp_path / "sorted.parquet", row_group_size=100)  # each row group of one label
    ordered = fastada.train(str(tmp_path / "sorted.parquet"), label="label", bits=10, threads=1, lr=0.3)
    mixed = fastada.train(str(tmp_path / "sorted.parquet"), label="label", bits=10, threads=1, lr=0.3, shuffle=True,
                          chunk_rows=100)
    assert mixed.evaluate(table)["logloss"] < ordered.evaluate(table)["logloss"] - 0.2


def test_shuffle_reorders_the_rows_within_a_chunk_by_the_seed():
    table = _sorted_by_label(1000)  # one row group, one chunk
    kept = fastada.train(table, label="label", bits=10, threads=1, lr=0.3, shuffle=False)
    runs = [fastada.train(table, label="label", bits=10, threads=1, lr=0.3, shuffle=True, seed=s) for s in (1, 1, 2)]
    assert np.array_equal(runs[0].weights, runs[1].weights) and not np.array_equal(runs[0].weights, runs[2].weights)
    assert runs[0].evaluate(table)["logloss"] < kept.evaluate(table)["logloss"] - 0.2


def test_a_decayed_rate_is_the_rate_the_kernel_learns_at(rng):
    table = small_table(rng, n=1000)
    once = fastada.train(table, label="label", bits=10, threads=1, lr=0.3)
    # a second epoch at 1e-9 of the rate moves no weight by more than rounding
    twice = fastada.train(table, label="label", bits=10, threads=1, lr=0.3, epochs=2, lr_decay=1e-9)
    np.testing.assert_allclose(twice.weights, once.weights, atol=1e-6)
    assert not np.allclose(fastada.train(table, label="label", bits=10, threads=1, lr=0.3, epochs=2).weights,
                           once.weights, atol=1e-3)


def test_predictions_follow_the_rows_of_a_file_of_many_row_groups(tmp_path, rng):
    import naive
    table = small_table(rng, n=700)
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=64)
    model = fastada.train(table, label="label", bits=12, threads=1, lr=0.3)
    expected = []
    for row in table.to_pylist():
        z = model.weights[-1] + sum(model.weights[h & (model.spec.slots - 1)] * x
                                    for h, x in naive.row_features(row, model.spec))
        expected.append(1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(model.predict(str(tmp_path / "d.parquet")), expected, rtol=1e-5)


def test_a_resumed_run_with_early_stopping_keeps_the_best_model_of_before_the_stop(tmp_path):
    rng = np.random.default_rng(11)
    n = 4000
    ids = rng.integers(0, 1500, n)  # few rows an id, noisy: later epochs overfit
    y = (rng.random(n) < 0.3).astype(np.int8)
    table = pa.table({"label": y, "ad": pa.array([f"a{i}" for i in ids])})
    pq.write_table(table.slice(0, 3000), tmp_path / "train.parquet", row_group_size=500)
    pq.write_table(table.slice(3000), tmp_path / "valid.parquet")
    kwargs = dict(label="label", bits=14, threads=1, lr=0.5, epochs=8, valid=str(tmp_path / "valid.parquet"),
                  early_stop=3, chunk_rows=500)
    reference = fastada.train(str(tmp_path / "train.parquet"), **kwargs)
    assert reference.summary["stopped_early"] and reference.summary["best_rows"] < reference.summary["rows"]
    stop, seen = threading.Event(), []

    def count(progress):
        seen.append(progress.rows)
        if progress.rows > reference.summary["best_rows"] + 500:
            stop.set()

    with pytest.raises(Stopped):
        fastada.train(str(tmp_path / "train.parquet"), **kwargs, checkpoint_dir=tmp_path / "ck", on_chunk=count, stop=stop)
    resumed = fastada.train(str(tmp_path / "train.parquet"), **kwargs, checkpoint_dir=tmp_path / "ck", resume=True)
    assert resumed.summary["best_rows"] == reference.summary["best_rows"]
    assert np.array_equal(resumed.weights, reference.weights)


# -- continuing a model (init=): the next day's data, or partial_fit's next batch -----------------

def test_a_model_continued_batch_by_batch_equals_one_pass_over_all_batches(rng):
    table = small_table(rng, n=4000)
    settings = dict(label="label", bits=12, lr=0.1, l1=1e-4, l2=1e-3, threads=1)
    whole = fastada.train(table, **settings)
    model = None
    for part in range(4):
        model = fastada.train(table.slice(part * 1000, 1000), init=model, **settings)
    # lazy L1/L2 settled at each batch's end and going on from there is the same closed form
    np.testing.assert_allclose(model.weights, whole.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.accumulators, whole.accumulators, rtol=1e-5)


def test_a_continued_model_keeps_its_columns_and_raced_rate(rng):
    first = fastada.train(small_table(rng, n=3000), label="label", bits=12, threads=1)  # lr auto: raced
    notes = []
    second = fastada.train(small_table(rng, n=3000), init=first, threads=1, on_note=notes.append)
    assert second.spec == first.spec and second.summary["lr"] == first.summary["lr"]
    assert any("continued model's rate" in n for n in notes)
    with pytest.raises(FastadaError, match="<table>: column 'code' is missing"):
        fastada.train(small_table(rng, n=3000).drop_columns(["code"]), init=first, threads=1)


@pytest.mark.parametrize("settings,message", [
    (dict(bits=14), "bits=12, not 14"),
    (dict(label="other"), "label='label', not 'other'"),
    (dict(categorical=["word"]), "leave out categorical"),
    (dict(learner="ftrl"), "only an adagrad model"),
    (dict(new_values=False), "new_values=True, not False"),
])
def test_continuing_refuses_settings_the_model_was_not_trained_with(rng, settings, message):
    first = fastada.train(small_table(rng, n=500), label="label", bits=12, lr=0.1, threads=1)
    with pytest.raises(FastadaError, match=message):
        fastada.train(small_table(rng, n=500), init=first, threads=1, **settings)


def test_a_model_without_new_value_features_is_continued_without_them(rng):
    first = fastada.train(small_table(rng, n=500), label="label", bits=12, lr=0.1, threads=1, new_values=False)
    assert fastada.train(small_table(rng, n=500), init=first, threads=1).spec.new_values is False


def test_train_init_model_continues_a_model_file_and_never_overwrites_it(rng, tmp_path, capsys):
    from fastada.cli import main
    days = [tmp_path / f"day{i}.parquet" for i in (1, 2)]
    for path in days:
        pq.write_table(small_table(rng, n=2000), path)
    common = ["--bits", "12", "--lr", "0.1", "--l2", "1e-4", "--threads", "1", "--quiet"]
    assert main(["train", str(days[0]), "--model", str(tmp_path / "day1.fastada"), *common]) == 0
    assert main(["train", str(days[1]), "--init-model", str(tmp_path / "day1.fastada"),
                 "--model", str(tmp_path / "day2.fastada"), *common]) == 0
    assert main(["train", *map(str, days), "--model", str(tmp_path / "both.fastada"), *common]) == 0
    continued, both = fastada.load(tmp_path / "day2.fastada"), fastada.load(tmp_path / "both.fastada")
    np.testing.assert_allclose(continued.weights, both.weights, rtol=1e-5, atol=1e-6)
    before = (tmp_path / "day1.fastada").read_bytes()
    assert main(["train", str(days[1]), "--init-model", str(tmp_path / "day1.fastada"),
                 "--model", str(tmp_path / "day1.fastada"), *common]) == 2
    assert "also an input" in capsys.readouterr().err
    assert (tmp_path / "day1.fastada").read_bytes() == before


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_that_settings_default(resume_case, tmp_path):
    _, data, reference = resume_case
    kwargs = stopped_run(data, tmp_path / "ck", 20)
    found, _ = checkpoint.newest(str(tmp_path / "ck"))
    identity = found.state["identity"]
    for key in ("factors", "factor_bits", "factor_lr", "factor_l2"):  # (added 2026-12-05)
        del identity["learn"][key]
    del identity["spec"]["list_weights"]
    os.remove(found.path)
    checkpoint.save(str(tmp_path / "ck"), found.state["progress"]["step"], found.state, found.arrays, keep=3)
    resumed = fastada.train(str(data), **kwargs, resume=True)
    assert np.array_equal(resumed.weights, reference.weights)
    with pytest.raises(FastadaError, match=r"factors: checkpoint 4, this run 8"):  # a setting it had still counts
        fastada.train(str(data), **{**kwargs, "factors": 8}, resume=True)
