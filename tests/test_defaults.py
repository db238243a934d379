"""Defaults a user can trust without tuning: the learning rate raced on the data (lr="auto")."""

import importlib
import math

import numpy as np
import pyarrow as pa
import pytest

import fastada
import naive
from conftest import small_table
from fastada import kernels
training = importlib.import_module("fastada.train")  # the module (fastada.train is also the function)
from fastada.features import Featurizer


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.01, 0.3)])
def test_the_race_scores_every_rate_as_the_eager_reference_learns_it(rng, l1, l2):
    table = small_table(rng, n=500)
    spec = fastada.train(table, label="label", bits=6, lr=0.1, threads=1, epochs=1).spec  # bits=6: collisions
    block = Featurizer(spec)(table.to_batches()[0], "t")
    slots = np.empty((block.rows, block.cat.shape[1] + block.num.shape[1]), np.int32)
    kernels.locate(block.cat, block.num, np.uint32(spec.slots - 1), kernels.hot_slots(spec.slots + 1).lookup, slots)
    rates = np.array([0.03, 0.3, 1.0])
    tables = np.zeros((3, spec.slots + 1, kernels.SLOT_WIDTH), np.float32)
    scores = np.zeros((3, 2))
    kernels.race_rates(slots, block.num_values, block.labels, np.ones(block.rows, np.float32), tables, rates,
                       l1, l2, 1e-8, np.int64(0), scores)
    rows = [[(h & (spec.slots - 1), x) for h, x in naive.row_features(r, spec)] for r in table.to_pylist()]
    labels = [float(y > 0) for y in table.column("label").to_pylist()]
    for k, rate in enumerate(rates):
        w_ref, _, loss_ref = naive.adagrad_eager(rows, labels, [1.0] * len(rows), spec.slots, rate, l1, l2, 1e-8)
        assert scores[k, 1] == block.rows
        assert scores[k, 0] / scores[k, 1] == pytest.approx(loss_ref, rel=1e-5)
        if l1 == 0 and l2 == 0:  # (with regularisation, the race's slots owe their last steps)
            np.testing.assert_allclose(tables[k, :, kernels.WEIGHT], w_ref, rtol=2e-4, atol=2e-5)


def test_lr_auto_trains_at_the_rate_that_predicted_best_and_says_so(rng):
    table = small_table(rng, n=3000)
    notes = []
    model = fastada.train(table, label="label", bits=12, threads=1, on_note=notes.append)
    race = model.summary["lr_race"]
    losses = race["progressive_logloss"]
    best = min(losses, key=losses.get)
    assert race["best"] == float(best) == model.summary["lr"]
    assert set(losses) == {f"{r:g}" for r in training.RACE_RATES}
    assert race["rows"] == 3000 and race["scored_from_row"] == 1501
    assert any(n.startswith(f"lr auto: {float(best):.3g} (") for n in notes), notes
    # the winner is then learned from the start, as if it had been given
    fixed = fastada.train(table, label="label", bits=12, threads=1, lr=float(best))
    np.testing.assert_array_equal(model.weights, fixed.weights)


def test_a_given_lr_is_used_as_given(rng):
    notes = []
    model = fastada.train(small_table(rng), label="label", bits=10, threads=1, lr=0.3, on_note=notes.append)
    assert model.summary["lr"] == 0.3 and model.summary["lr_race"] is None
    assert not any("lr auto" in n for n in notes)


def test_more_epochs_divide_the_raced_rate_by_the_square_root_of_the_epochs(rng):
    table = small_table(rng, n=2000)
    one = fastada.train(table, label="label", bits=12, threads=1)
    four = fastada.train(table, label="label", bits=12, threads=1, epochs=4)
    assert four.summary["lr_race"]["best"] == one.summary["lr"]
    assert four.summary["lr"] == pytest.approx(one.summary["lr"] / 2)


def _ids_table(rng, n, ids, effect):
    """A label that depends only on an id column (each id's click rate drawn once), and numeric
    noise columns with large values."""
    rate = 1 / (1 + np.exp(-effect * rng.standard_normal(ids)))
    who = rng.integers(0, ids, n)
    y = (rng.random(n) < rate[who]).astype(np.int8)
    columns = {"label": y, "who": pa.array([f"id{i}" for i in who])}
    for j in range(8):
        columns[f"x{j}"] = rng.lognormal(3, 2, n)
    return pa.table(columns)


def test_the_race_picks_a_high_rate_for_strong_sparse_signal_and_a_low_one_for_noise(rng):
    strong = fastada.train(_ids_table(rng, 40_000, 2_000, 3.0), label="label", bits=16, threads=1)
    noise = fastada.train(_ids_table(rng, 40_000, 2_000, 0.0), label="label", bits=16, threads=1)
    assert strong.summary["lr"] >= 0.2, strong.summary["lr_race"]
    assert noise.summary["lr"] <= 0.05, noise.summary["lr_race"]


def test_the_race_stays_within_the_first_rows_of_a_long_data_set(rng, monkeypatch):
    monkeypatch.setattr(training, "RACE_ROWS", 1000)
    model = fastada.train(small_table(rng, n=5000), label="label", bits=10, threads=1, chunk_rows=300)
    assert model.summary["lr_race"]["rows"] == 1000
    assert math.isfinite(model.summary["progressive_logloss"])
