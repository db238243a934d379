"""Defaults a user can trust without tuning: the learning rate raced on the data (lr="auto")."""

import importlib
import json
import math
import os

import numpy as np
import pyarrow as pa
import pytest

import fastada
import naive
from conftest import small_table
from fastada import kernels
training = importlib.import_module("fastada.train")  # the module (fastada.train is also the function)
from fastada.features import Featurizer
from fastada.metrics import evaluate


@pytest.mark.parametrize("l1,l2,new_values", [(0.0, 0.0, True), (0.01, 0.3, True), (0.0, 0.0, False)])
def test_the_race_scores_every_rate_as_the_eager_reference_learns_it(rng, l1, l2, new_values):
    table = small_table(rng, n=500)
    spec = fastada.train(table, label="label", bits=6, lr=0.1, threads=1, epochs=1,  # bits=6: collisions
                         new_values=new_values).spec
    new = [h & (spec.slots - 1) for h in naive.new_value_hashes(spec)]
    new_where = np.array(new, np.int64)
    block = Featurizer(spec)(table.to_batches()[0], "t")
    slots = np.empty((block.rows, block.cat.shape[1] + block.num.shape[1]), np.int32)
    kernels.locate(block.cat, block.num, np.uint32(spec.slots - 1), kernels.hot_slots(spec.slots + 1).lookup, slots,
                   np.zeros((0, 0), np.int16))
    rates = np.array([0.03, 0.3, 1.0])
    tables = np.zeros((3, spec.slots + 1, kernels.SLOT_WIDTH), np.float32)
    scores = np.zeros((3, 2))
    for k in range(3):  # in two calls: the second goes on from the first's steps
        for part in (np.arange(200), np.arange(200, block.rows)):
            score = np.zeros(2)
            kernels.race_rate(slots, block.num_values, block.labels, np.ones(block.rows, np.float32),
                              part, tables[k], rates[k], l1, l2, 1e-8, np.int64(part[0]), np.int64(0), score,
                              new_where)
            scores[k] += score
    rows = [[(h & (spec.slots - 1), x) for h, x in naive.row_features(r, spec)] for r in table.to_pylist()]
    labels = [float(y > 0) for y in table.column("label").to_pylist()]
    for k, rate in enumerate(rates):
        w_ref, _, loss_ref = naive.adagrad_eager(rows, labels, [1.0] * len(rows), spec.slots, rate, l1, l2, 1e-8,
                                                 new)
        assert scores[k, 1] == block.rows
        assert scores[k, 0] / scores[k, 1] == pytest.approx(loss_ref, rel=1e-5)
        if l1 == 0 and l2 == 0:  # (with regularisation, the race's slots owe their last steps)
            np.testing.assert_allclose(tables[k, :, kernels.WEIGHT], w_ref, rtol=2e-4, atol=2e-5)


def test_lr_auto_trains_at_the_rate_that_predicted_best_and_says_so(rng):
    table = small_table(rng, n=3000)
    notes = []
    model = fastada.train(table, label="label", bits=12, threads=1, on_note=notes.append)
    race = model.summary["lr_race"]
    losses = race["logloss"]
    best = min(losses, key=losses.get)
    assert race["best"] == float(best)
    assert set(losses) >= {f"{r:g}" for r in training.RACE_RATES}
    # two folds: each half learned, then the other scored; every row is scored once
    assert race["rows"] == 3000 and race["folds"] == 2 and race["learned_rows"] == 1500 and race["scored_rows"] == 3000
    # refined between the best rate's neighbours
    rates = sorted(float(r) for r in losses)
    i = rates.index(race["best"])
    lo, hi = rates[max(0, i - 1)], rates[min(len(rates) - 1, i + 1)]
    assert lo <= model.summary["lr"] <= hi
    assert any(n.startswith(f"lr auto: {model.summary['lr']:.3g} (") for n in notes), notes
    # the winner is then learned from the start, as if it had been given
    fixed = fastada.train(table, label="label", bits=12, threads=1, lr=model.summary["lr"])
    np.testing.assert_array_equal(model.weights, fixed.weights)


@pytest.mark.parametrize("losses,best,expected", [
    ([3.0, 2.0, 1.0, 2.0, 3.0], 2, 0.1),          # symmetric in log rate: the grid point itself
    ([3.0, 2.0, 1.0, 1.0, 3.0], 2, "between"),    # a tie with the next: between the two
    ([1.0, 2.0, 3.0, 4.0, 5.0], 0, 0.001),        # at the end of the grid: the end
])
def test_the_raced_rate_is_refined_between_its_neighbours(losses, best, expected):
    rates = (0.001, 0.01, 0.1, 1.0, 10.0)  # evenly spaced in log rate
    rate = training.refine_rate(rates, losses, best)
    if expected == "between":
        assert 0.1 < rate < 1.0
    else:
        assert rate == pytest.approx(expected, rel=1e-2)


def test_the_raced_rate_leans_to_the_largest_rate_within_the_races_noise():
    """Training learns more rows than the race, and the best rate grows with the rows: among the
    rates the race cannot tell apart, the largest. The parabola through (0.01, 2), (0.1, 1), (1, 2)
    rises by 1 a decade squared: within a noise of 0.25 of its bottom up to half a decade above it."""
    rates = (0.001, 0.01, 0.1, 1.0, 10.0)
    losses = [3.0, 2.0, 1.0, 2.0, 3.0]
    assert training.refine_rate(rates, losses, 2, noise=0.0) == training.refine_rate(rates, losses, 2) == 0.1
    assert training.refine_rate(rates, losses, 2, noise=0.25) == pytest.approx(0.1 * 10 ** 0.5, rel=1e-2)
    assert training.refine_rate(rates, losses, 2, noise=100.0) == 1.0  # never past the next rate
    assert training.refine_rate(rates, [1.0, 2.0, 3.0, 4.0, 5.0], 0, noise=0.25) == 0.001  # an end: as it is


def test_the_races_noise_is_the_standard_error_of_neighbouring_rates_differences_over_its_parts():
    parts = 16
    here = np.column_stack([np.full(parts, 0.5), np.ones(parts)])  # (loss, weight) of each part
    differences = np.linspace(-0.1, 0.3, parts)
    there = np.column_stack([(0.5 + differences) * 2.0, np.full(parts, 2.0)])  # (weights need not be 1)
    segments = {0.01: here[None], 0.03: there[None], 0.1: there[None]}
    expected = np.std(differences, ddof=1) / np.sqrt(parts)
    assert training.race_noise(segments, [0.01, 0.03, 0.1], 0, 0) == pytest.approx(expected)
    assert training.race_noise(segments, [0.01, 0.03, 0.1], 2, 0) == 0.0  # no larger rate
    assert training.race_noise(segments, [0.01, 0.03, 0.1], 1, 0) == 0.0  # no difference at all


def test_one_pass_leans_within_the_races_noise_and_says_so_several_passes_and_factors_do_not(rng):
    """With several passes the race weighs the rate against them: a rate raised alone overfits;
    FM's and FFM's factors' rate is raced at the linear rate chosen."""
    n = 6000
    ids = rng.integers(0, 300, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(ids % 7 - 3) * 0.5))).astype(np.int8)
    table = pa.table({"label": y, "ad": pa.array([f"a{i}" for i in ids])})
    notes = []
    model = fastada.train(table, label="label", bits=14, threads=1, on_note=notes.append)
    race = model.summary["lr_race"]
    assert race["noise"] > 0 and model.summary["lr"] > race["vertex"]
    rates = sorted(float(r) for r in race["logloss"])
    assert model.summary["lr"] <= rates[rates.index(race["best"]) + 1]
    assert any(f"lowest at {race['vertex']:.3g}" in note for note in notes), notes
    several = fastada.train(table, label="label", bits=14, threads=1, epochs=3, all_epochs=True).summary
    assert several["lr_race"]["noise"] == 0.0 and several["lr"] == several["lr_race"]["vertex"]
    factored = fastada.train(table, label="label", bits=14, threads=1, learner="fm", factor_lr=0.2).summary
    assert factored["lr_race"]["noise"] == 0.0 and factored["lr"] == factored["lr_race"]["vertex"]


def test_a_race_with_few_clicks_does_not_lean(rng):
    """A standard error over the race's parts needs clicks in each part: with fewer than
    RACE_LEAN_LABELS clicks in its rows the race keeps its parabola's lowest point."""
    n = 6000
    ids = rng.integers(0, 300, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(ids % 7 - 3) * 0.5 + 5))).astype(np.int8)  # ~1% clicks
    assert 20 <= y.sum() < training.RACE_LEAN_LABELS
    table = pa.table({"label": y, "ad": pa.array([f"a{i}" for i in ids])})
    race = fastada.train(table, label="label", bits=14, threads=1).summary["lr_race"]
    assert race["noise"] == 0.0 and race["lr"] == race["vertex"]
    y[:training.RACE_LEAN_LABELS] = 1  # the same rows with enough clicks: it leans
    table = table.set_column(0, "label", pa.array(y))
    race = fastada.train(table, label="label", bits=14, threads=1).summary["lr_race"]
    assert race["noise"] > 0 and race["lr"] > race["vertex"]


def test_the_race_widens_past_the_end_of_its_grid_where_the_best_rate_lies(rng):
    """Labels set by an id seen in every row pair: learning faster is always better."""
    n = 6000
    ids = np.repeat(np.arange(n // 2), 2)
    y = (ids % 2).astype(np.int8)
    table = pa.table({"label": y, "ad": pa.array([f"a{i}" for i in ids]), "n": np.ones(n)})
    race = fastada.train(table, label="label", numeric=["n"], bits=16, threads=1).summary["lr_race"]
    rates = sorted(float(r) for r in race["logloss"])
    assert rates[-1] > max(training.RACE_RATES), race
    assert race["best"] > max(training.RACE_RATES)


def test_a_given_lr_is_used_as_given(rng):
    notes = []
    model = fastada.train(small_table(rng), label="label", bits=10, threads=1, lr=0.3, on_note=notes.append)
    assert model.summary["lr"] == 0.3 and model.summary["lr_race"] is None
    assert not any("lr auto" in n for n in notes)


def test_the_race_learns_one_half_as_many_times_as_training_and_scores_the_other():
    passes, scored = training.race_schedule(10, 3, True, 0)
    assert passes[0].tolist() == [0, 1, 2, 3, 4] and all(sorted(p) == [0, 1, 2, 3, 4] for p in passes)
    assert len(passes) == 3 and passes[1].tolist() != passes[2].tolist()  # reshuffled as training reshuffles
    assert scored.tolist() == [5, 6, 7, 8, 9]
    # and the second fold the other way round: the second half learned, the first scored
    passes, scored = training.race_schedule(10, 1, True, 0, swap=True)
    assert [p.tolist() for p in passes] == [[5, 6, 7, 8, 9]] and scored.tolist() == [0, 1, 2, 3, 4]


def test_rows_the_race_copies_back_leave_the_table_as_it_was(rng):
    table = rng.random((50, kernels.SLOT_WIDTH)).astype(np.float32)
    before = table.copy()
    rows = np.array([3, 7, 49, 20], np.int64)
    saved = np.empty((4, kernels.SLOT_WIDTH), np.float32)
    kernels.copy_rows(table, rows, saved, np.arange(4))
    table[rows] = -1.0
    kernels.copy_rows(saved, np.arange(4), table, rows)
    np.testing.assert_array_equal(table, before)


def test_with_several_epochs_the_race_learns_its_rows_that_many_times(rng):
    # repeated passes over the same few rows of each id reward a smaller rate than one pass does
    table = _ids_table(rng, 20_000, 4_000, 1.5)
    one = fastada.train(table, label="label", bits=16, threads=1)
    five = fastada.train(table, label="label", bits=16, threads=1, epochs=5, all_epochs=True)
    assert five.summary["lr_race"]["passes"] == 5 and five.summary["epochs"] == 5
    assert five.summary["lr"] < one.summary["lr"], (one.summary["lr_race"], five.summary["lr_race"])


def _ads_and_users(rng, n, ads=50, users=10_000):
    """Clicks from a strong ad effect and a weak user effect, each user seen about twice: passes
    after the first only memorise the users' noise."""
    ad, user = rng.integers(0, ads, n), rng.integers(0, users, n)
    ad_effect, user_effect = 1.5 * rng.standard_normal(ads), 0.5 * rng.standard_normal(users)
    y = (rng.random(n) < 1 / (1 + np.exp(1.5 - ad_effect[ad] - user_effect[user]))).astype(np.int8)
    return pa.table({"label": y, "ad": pa.array([f"a{i}" for i in ad]), "user": pa.array([f"u{i}" for i in user])})


def test_the_race_stops_epochs_that_would_predict_unseen_rows_worse_and_says_so(rng):
    rows = _ads_and_users(rng, 40_000)
    table, test = rows.slice(0, 20_000), rows.slice(20_000)
    notes = []
    model = fastada.train(table, label="label", bits=18, threads=1, epochs=5, on_note=notes.append)
    race = model.summary["lr_race"]
    chosen = race["epochs"]
    assert chosen < 5 and model.summary["epochs"] == chosen, race
    by_epochs = race["logloss_by_epochs"][f"{race['best']:g}"]
    assert len(by_epochs) == 5 and min(by_epochs) == by_epochs[chosen - 1] < by_epochs[-1]
    assert any(n.startswith(f"epochs: {chosen} of 5 (") and "--all-epochs" in n for n in notes), notes
    # the same model as training that many epochs at that rate from the start
    fixed = fastada.train(table, label="label", bits=18, threads=1, epochs=chosen, lr=model.summary["lr"])
    np.testing.assert_array_equal(model.weights, fixed.weights)
    # all_epochs (or early stopping of the user's own) learns every epoch asked, and predicts new rows worse
    every = fastada.train(table, label="label", bits=18, threads=1, epochs=5, all_epochs=True)
    assert every.summary["epochs"] == 5 and every.summary["lr_race"]["epochs"] == 5
    y = test.column("label").to_numpy()
    assert evaluate(model.predict(test), y)["logloss"] < evaluate(every.predict(test), y)["logloss"]
    held = fastada.train(table, label="label", bits=18, threads=1, epochs=5, holdout_every=10, early_stop=5)
    assert held.summary["lr_race"]["epochs"] == 5


def test_a_race_on_a_prefix_of_the_data_does_not_choose_the_epochs(rng, monkeypatch):
    """A prefix overfits in fewer passes than the whole data set: where the race reads only the
    first rows, every epoch asked is learned."""
    monkeypatch.setattr(training, "RACE_ROWS", 5_000)
    monkeypatch.setattr(training, "RACE_MIN_ROWS", 5_000)
    table = _ads_and_users(rng, 20_000)
    model = fastada.train(table, label="label", bits=18, threads=1, epochs=5)
    assert model.summary["lr_race"]["rows"] == 5_000 and model.summary["epochs"] == 5


def test_epochs_that_keep_helping_are_all_learned(rng):
    table = small_table(rng, n=20_000)
    model = fastada.train(table, label="label", bits=16, threads=1, epochs=3)
    race = model.summary["lr_race"]
    assert race["epochs"] == 3 and model.summary["epochs"] == 3, race


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


def test_the_race_takes_a_hundredth_of_a_long_data_set_within_bounds(rng, monkeypatch):
    assert training.race_rows(30_000) == 30_000          # small: all of it
    assert training.race_rows(200_000) == 200_000
    assert training.race_rows(1_000_000) == 50_000        # the least
    assert training.race_rows(10_000_000) == 100_000      # a 100th
    assert training.race_rows(10**10) == 200_000          # the most
    monkeypatch.setattr(training, "RACE_ROWS", 2000)
    monkeypatch.setattr(training, "RACE_MIN_ROWS", 1000)
    monkeypatch.setattr(training, "RACE_MIN_LABELS", 50)  # (clicks enough in the rows it wants)
    model = fastada.train(small_table(rng, n=5000), label="label", bits=10, threads=1, chunk_rows=300)
    assert model.summary["lr_race"]["rows"] == 1000
    assert math.isfinite(model.summary["progressive_logloss"])


def test_a_race_short_of_clicks_reads_on_in_order_until_it_has_enough_within_its_bounds(rng, monkeypatch):
    """Rows with too few clicks cannot tell rates apart: the race reads on, in the data's order,
    to the row that brings the clicks to RACE_MIN_LABELS, and no further than RACE_ROWS."""
    monkeypatch.setattr(training, "RACE_ROWS", 4000)
    monkeypatch.setattr(training, "RACE_MIN_ROWS", 1000)
    monkeypatch.setattr(training, "RACE_MIN_LABELS", 30)
    table = small_table(rng, n=10_000)
    y = np.zeros(10_000, dtype=np.int8)
    y[[5, 500, 999]] = 1                    # 3 clicks in the rows race_rows gives
    y[1000:10_000:40] = 1                   # then one in 40 rows
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(y))
    model = fastada.train(table, label="label", bits=10, threads=1, chunk_rows=300)
    # the 27th click after row 999 is row 1000 + 26 * 40: the race stops there, mid-chunk
    assert model.summary["lr_race"]["rows"] == 1000 + 26 * 40 + 1
    y[1000:] = 0
    y[1000:10_000:400] = 1                  # 26 clicks in all: the race stops at RACE_ROWS
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(y))
    assert fastada.train(table, label="label", bits=10, threads=1, chunk_rows=300).summary["lr_race"]["rows"] == 4000
    y[:] = 0
    y[::3] = 1                               # clicks and non-clicks both plentiful: race_rows alone
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(y))
    assert fastada.train(table, label="label", bits=10, threads=1, chunk_rows=300).summary["lr_race"]["rows"] == 1000


def test_the_race_reads_only_the_chunks_it_learns_and_reads_on_where_downsampling_leaves_it_short(
        rng, monkeypatch, tmp_path):
    """Chunks read ahead that the race never learns would take the cores from it; with fewer rows
    than it wants in those chunks (negatives downsampled), it reads on, in training's order."""
    import pyarrow.parquet as pq
    monkeypatch.setattr(training, "RACE_ROWS", 2000)
    monkeypatch.setattr(training, "RACE_MIN_ROWS", 1000)
    monkeypatch.setattr(training, "RACE_MIN_LABELS", 50)  # (clicks enough in the rows it wants)
    path = str(tmp_path / "d.parquet")
    pq.write_table(small_table(rng, n=5000), path, row_group_size=1000)
    read = []
    blocks = training._Training._blocks

    def recording(self, task, worker, where_to=None):
        for item in blocks(self, task, worker, where_to):
            if where_to is not None:  # (the race's reading)
                read.append((item[2], item[3]))
            yield item

    monkeypatch.setattr(training._Training, "_blocks", recording)
    model = fastada.train(path, label="label", bits=10, threads=1, chunk_rows=300)
    assert model.summary["lr_race"]["rows"] == 1000
    assert read == [(0, 0), (0, 300), (0, 600), (0, 900)]  # row group 0, whole: no more
    read.clear()
    model = fastada.train(path, label="label", bits=10, threads=1, chunk_rows=300, negative_rate=0.5)
    assert model.summary["lr_race"]["rows"] == 1000
    assert read[:4] == [(0, 0), (0, 300), (0, 600), (0, 900)] and (1, 0) in read[4:]  # (read ahead in parallel)

# -- column roles --------------------------------------------------------------------------------

def _roles(table, **kwargs):
    from fastada.reader import DataSet
    from fastada.roles import resolve_roles
    return resolve_roles(DataSet(table), label="label", **kwargs)


def _log(rng, n=5000):
    """A click log as it is stored: ids and codes as integers next to counts and prices."""
    y = (rng.random(n) < 0.2).astype(np.int8)
    return {
        "label": y,
        "site": rng.integers(10_000, 400_000, n) // 7 * 7,        # ids: any value as likely as any other
        "os": rng.choice([13, 19, 17, 22, 8, 10, 25, 32, 41, 53, 66, 77, 90, 101, 150, 200, 300, 607], n),
        "clicks_7d": rng.geometric(0.3, n) - 1,                 # a count: small values are frequent
        "dwell": np.round(rng.lognormal(4, 1, n)).astype(np.int64),  # a duration, unnamed as such
        "banner_pos": rng.integers(0, 4, n),                      # few values: a code
        "campaign_id": rng.geometric(0.01, n),                    # an id by its name, whatever its values
        "price": rng.lognormal(0, 1, n),                           # a float quantity
    }


def test_integer_columns_become_categorical_when_they_look_like_ids_or_codes(rng):
    spec, roles = _roles(pa.table(_log(rng)))
    assert set(spec.categorical) == {"site", "os", "banner_pos", "campaign_id"}
    assert set(spec.numeric) == {"clicks_7d", "dwell", "price"}
    assert roles["campaign_id"]["why"] == "an identifier by its name ('id')"
    assert roles["clicks_7d"]["why"] == "a quantity by its name ('clicks')"
    assert "rank correlation" in roles["dwell"]["why"] and "rank correlation" in roles["site"]["why"]
    assert roles["banner_pos"]["why"] == "integers, 4 distinct values: a code"


def test_the_size_frequency_rank_is_spearmans_correlation(rng):
    from scipy.stats import spearmanr

    from fastada.roles import _size_frequency_rank
    for trial in range(100):
        n = int(rng.integers(3, 3000))
        x = rng.zipf(1.3, n) if trial % 2 else rng.integers(0, 50, n)  # quantities, then codes (ties)
        values, counts = np.unique(x, return_counts=True)
        repeated = counts >= 2
        if repeated.sum() < 3 or np.ptp(counts[repeated]) == 0:
            assert _size_frequency_rank(x) is None
            continue
        assert _size_frequency_rank(x) == pytest.approx(spearmanr(values[repeated], counts[repeated])[0], abs=1e-12)


def test_whole_floats_with_nulls_are_judged_as_integers(rng):
    """pandas stores an integer column that has nulls as float64."""
    ids = rng.integers(10_000, 400_000, 3000).astype(float)
    ids[rng.random(3000) < 0.1] = np.nan
    spec, roles = _roles(pa.table({"label": rng.integers(0, 2, 3000), "site": pa.array(ids, from_pandas=True),
                                   "score": rng.random(3000)}))
    assert spec.categorical == ("site",) and spec.numeric == ("score",)
    assert roles["score"]["why"] == "floats"


def test_the_pandas_index_constant_columns_and_row_keys_are_ignored_and_said(rng):
    n = 2000
    table = pa.table({"label": rng.integers(0, 2, n), "__index_level_0__": np.arange(n) * 3 + 5,
                      "request": [f"r{i}" for i in range(n)], "country": ["fr"] * n,
                      "ad": rng.choice(["a", "b", "c"], n)})
    meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": []}
    table = table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})
    spec, roles = _roles(table)
    assert spec.categorical == ("ad",) and spec.numeric == ()
    assert roles["__index_level_0__"] == {"role": "ignored", "why": "the pandas index"}
    assert roles["request"]["role"] == "ignored" and "row key" in roles["request"]["why"]
    assert roles["country"]["role"] == "ignored" and roles["country"]["why"].startswith("constant: 'fr'")
    # on a handful of rows, a constant or distinct column says nothing yet: kept
    spec, _ = _roles(table.slice(0, 50))
    assert set(spec.categorical) == {"request", "country", "ad"}


def test_timestamps_give_hour_and_weekday_features_when_asked(rng):
    n = 3000
    seconds = rng.integers(1_600_000_000, 1_700_000_000, n)
    ts = pa.array(seconds, pa.timestamp("s", tz="UTC"))
    table = pa.table({"label": rng.integers(0, 2, n), "ad": rng.choice(["a", "b"], n), "when": ts})
    spec, roles = _roles(table)
    assert spec.categorical == ("ad",) and roles["when"]["role"] == "ignored"
    assert "--time-features" in roles["when"]["why"]
    spec, roles = _roles(table, time_features=True)
    assert spec.categorical == ("ad", "when:hour", "when:weekday") and roles["when"]["role"] == "time"
    # the parts hash as integer columns of the same names would
    hours = (seconds // 3600) % 24
    weekdays = ((seconds // 86400) + 3) % 7  # 1970-01-01 was a Thursday (3)
    explicit = pa.table({"label": table["label"], "ad": table["ad"], "when:hour": hours, "when:weekday": weekdays})
    derived = Featurizer(spec)(table.to_batches()[0], "t")
    np.testing.assert_array_equal(derived.cat, Featurizer(spec)(explicit.to_batches()[0], "t").cat)


def test_a_date_or_timestamp_named_categorical_trains(rng, tmp_path):
    import datetime
    n = 300
    days = [datetime.date(2024, 1, 1) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 60, n)]
    table = pa.table({"label": rng.integers(0, 2, n), "day": pa.array(days, pa.date32()),
                      "at": pa.array(rng.integers(0, 10**9, n), pa.timestamp("ms"))})
    for named in (["day"], ["at"], ["day:weekday", "at:hour"]):
        model = fastada.train(table, label="label", categorical=named, ignore=[c for c in ("day", "at")
                              if not any(x.startswith(c) for x in named)], bits=10, threads=1)
        assert model.spec.categorical == tuple(named)
        assert np.isfinite(model.predict(table)).all()


def test_decimal_and_fixed_size_binary_columns_are_features(rng):
    import decimal
    n = 200
    table = pa.table({"label": rng.integers(0, 2, n),
                      "amount": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(0, 10**5, n)],
                                         pa.decimal128(9, 2)),
                      "key": pa.array([bytes([int(b), 1]) for b in rng.integers(0, 5, n)], pa.binary(2))})
    model = fastada.train(table, label="label", bits=10, threads=1)
    assert model.spec.numeric == ("amount",) and model.spec.categorical == ("key",)
    assert np.isfinite(model.predict(table)).all()


@pytest.mark.parametrize("roles", [dict(categorical=["ad"], ignore=["ad"]), dict(numeric=["n"], ignore=["n"])])
def test_one_column_named_in_two_roles_is_refused(rng, roles):
    table = pa.table({"label": [0, 1], "ad": ["a", "b"], "n": [1.0, 2.0]})
    with pytest.raises(fastada.FastadaError, match="is named both .* give it one role"):
        fastada.train(table, label="label", **roles)


def test_training_says_each_columns_role_once_and_keeps_them_in_the_model(rng, tmp_path, capsys):
    from fastada.cli import main
    import pyarrow.parquet as pq
    pq.write_table(pa.table(_log(rng)), tmp_path / "d.parquet")
    assert main(["train", str(tmp_path / "d.parquet"), "--model", str(tmp_path / "m"), "--bits", "12"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("columns: ")]
    assert len(lines) == 1
    assert "categorical 4: " in lines[0] and "numeric 3: " in lines[0] and "campaign_id (identifiers by name)" in lines[0]
    roles = fastada.load(tmp_path / "m").summary["roles"]
    assert roles["site"]["role"] == "categorical" and roles["label"]["role"] == "label"


def test_ids_as_categorical_learn_what_ids_as_numbers_cannot(rng):
    """The issue's trap: an id column taken as a number learns almost nothing."""
    n = 30_000
    ids = rng.integers(100, 100_000, 300)[rng.integers(0, 300, n)]
    effect = rng.standard_normal(100_000)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * effect[ids]))).astype(np.int8)
    train, test = pa.table({"label": y[:24_000], "ad": ids[:24_000]}), pa.table({"label": y[24_000:], "ad": ids[24_000:]})
    default = fastada.train(train, label="label", bits=16, threads=1).evaluate(test)["logloss"]
    as_number = fastada.train(train, label="label", numeric=["ad"], bits=16, threads=1).evaluate(test)["logloss"]
    assert default < as_number - 0.05


# -- honest summaries ----------------------------------------------------------------------------

def test_inspect_names_numeric_buckets_and_time_parts_without_data(rng):
    from fastada.score import describe_slots
    n = 400
    table = pa.table({"label": rng.integers(0, 2, n), "price": np.full(n, 10.0),
                      "at": pa.array(np.full(n, 1_700_000_000), pa.timestamp("s"))})
    model = fastada.train(table, label="label", numeric=["price"], categorical=["at:hour"], bits=16, threads=1)
    block = Featurizer(model.spec)(table.to_batches()[0], "t")
    mask = model.spec.slots - 1
    bucket, hour = int(block.cat[0, 1] & mask), int(block.cat[0, 0] & mask)
    names = describe_slots(model, [bucket, hour])
    assert "price in [8.488, 11.18) (log bucket)" in names[bucket]  # log1p(10) * 4 = 9.6: bucket 9
    assert f"at:hour = {1_700_000_000 // 3600 % 24}" in names[hour]


def test_the_summary_gives_each_epochs_progressive_loss_and_the_last(rng):
    model = fastada.train(small_table(rng, n=2000), label="label", bits=12, threads=1, epochs=3)
    s = model.summary
    assert len(s["progressive_logloss_by_epoch"]) == 3
    assert s["progressive_logloss"] == s["progressive_logloss_by_epoch"][-1]
    assert s["progressive_logloss_by_epoch"][-1] < s["progressive_logloss_by_epoch"][0]


# -- negative downsampling -----------------------------------------------------------------------

def _rare_clicks(rng, n, ids=3000):
    """About 2% clicks, set by two id columns (a planted logistic model)."""
    a, b = rng.integers(0, ids, n), rng.integers(0, 50, n)
    planted = np.random.default_rng(1234)  # the same model for every draw of rows
    effect_a, effect_b = planted.normal(0, 1.0, ids), planted.normal(0, 0.7, 50)
    z = -4.4 + effect_a[a] + effect_b[b]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
    return pa.table({"label": y, "a": pa.array([f"a{v}" for v in a]), "b": pa.array([f"b{v}" for v in b])})


def test_negative_downsampling_learns_a_tenth_of_the_negatives_and_stays_calibrated(rng):
    train, test = _rare_clicks(rng, 600_000), _rare_clicks(np.random.default_rng(99), 200_000)
    assert 0.015 < np.mean(train["label"]) < 0.03
    full = fastada.train(train, label="label", bits=16, threads=1)
    sampled = fastada.train(train, label="label", bits=16, threads=1, negative_rate=0.1)
    kept = sampled.summary["rows"] / full.summary["rows"]
    assert 0.10 < kept < 0.14  # 2% clicks + 10% of 98%: about 8x fewer rows
    f, s = full.evaluate(test), sampled.evaluate(test)
    # the log(rate) shift alone gave 0.96-0.98 (a model shrunk toward the mean in logit space
    # under-predicts once shifted deep into the tail); the bias then matched to the clicks of the
    # data's first rows: 0.99-1.01 on three draws
    assert abs(s["calibration"] - 1) < 0.02, s
    assert abs(sampled.summary["calibration_shift"]) < 0.2
    assert s["logloss"] < f["logloss"] + 0.002, (s, f)
    assert sampled.learn["negative_rate"] == 0.1 and sampled.summary["negative_rate"] == 0.1


def test_downsampling_keeps_the_same_rows_every_epoch_and_every_click(rng):
    from fastada.train import row_uniforms
    u = row_uniforms(7, 1000, 50_000)
    assert np.array_equal(u, row_uniforms(7, 1000, 50_000)) and not np.array_equal(u, row_uniforms(8, 1000, 50_000))
    assert np.array_equal(u[10:20], row_uniforms(7, 1010, 10))  # a row's draw depends on its place alone
    assert abs((u < 0.25).mean() - 0.25) < 0.01
    table = _rare_clicks(rng, 20_000)
    clicks = int(np.sum(table["label"]))
    one = fastada.train(table, label="label", bits=12, threads=1, negative_rate=0.2, lr=0.1, shuffle=True)
    three = fastada.train(table, label="label", bits=12, threads=1, negative_rate=0.2, lr=0.1, epochs=3, shuffle=True)
    assert three.summary["rows"] == 3 * one.summary["rows"]
    assert one.summary["rows"] > clicks


# -- data in memory ------------------------------------------------------------------------------

class _Frame:
    """What polars, DuckDB and pandas >= 2.2 frames offer: an Arrow PyCapsule stream."""

    def __init__(self, table):
        self.table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table.__arrow_c_stream__(requested_schema)


def test_frames_and_arrow_streams_train_evaluate_and_predict_row_aligned(rng):
    table = small_table(rng, n=2000)
    frame = _Frame(table)
    model = fastada.train(frame, label="label", bits=12, threads=1, lr=0.2)
    reference = fastada.train(table, label="label", bits=12, threads=1, lr=0.2)
    np.testing.assert_array_equal(model.weights, reference.weights)
    np.testing.assert_array_equal(model.predict(_Frame(table)), reference.predict(table))
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=300))
    assert model.evaluate(reader)["logloss"] == pytest.approx(reference.evaluate(table)["logloss"])


def test_a_pandas_frame_trains_without_its_index():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"label": [0, 1] * 50, "ad": ["a", "b"] * 50}, index=np.arange(100) * 7)
    model = fastada.train(frame, label="label", bits=10, threads=1, lr=0.5)
    assert model.spec.categorical == ("ad",) and model.predict(frame).shape == (100,)


@pytest.mark.parametrize("table", [
    pa.table({"label": [1], "c": ["a"]}),                                          # one row
    pa.table({"label": [1, 0] * 20, "c": ["a", "b"] * 20}),                         # 20 rows to score
    pa.table({"label": [1, 0] * 500, "c": ["a", "b"] * 500, "w": [0.0] * 999 + [1.0]}),  # one row of weight
])
def test_the_race_falls_back_when_it_cannot_tell_rates_apart(table):
    notes = []
    model = fastada.train(table, label="label", weight="w" if "w" in table.column_names else None, bits=8,
                          threads=1, on_note=notes.append)
    assert model.summary["lr"] == training.RACE_FALLBACK and model.summary["lr_race"]["fallback"]
    assert any(n.startswith("lr auto: 0.05, the fallback") for n in notes), notes


def test_polars_and_duckdb_frames_train_and_predict(rng):
    table = small_table(rng, n=1000)
    reference = fastada.train(table, label="label", bits=12, threads=1, lr=0.2)
    pl = pytest.importorskip("polars")
    frame = pl.from_arrow(table)
    model = fastada.train(frame, label="label", bits=12, threads=1, lr=0.2)
    np.testing.assert_array_equal(model.predict(frame), reference.predict(table))
    duckdb = pytest.importorskip("duckdb")
    relation = duckdb.from_arrow(table)
    model = fastada.train(relation, label="label", bits=12, threads=1, lr=0.2)
    np.testing.assert_array_equal(model.predict(duckdb.from_arrow(table)), reference.predict(table))


# -- multi-valued (list) columns -----------------------------------------------------------------

def _tags_table(rng, n):
    vocab = [f"t{i}" for i in range(40)]
    tags = []
    for _ in range(n):
        k = int(rng.integers(0, 5))
        tags.append(None if k == 4 and rng.random() < 0.5 else [str(v) for v in rng.choice(vocab, k)])
    good = np.array([sum(t in ("t1", "t2", "t3") for t in (row or [])) for row in tags])
    y = (rng.random(n) < 1 / (1 + np.exp(-(good * 1.5 - 1)))).astype(np.int8)
    return pa.table({"label": y, "tags": pa.array(tags, pa.list_(pa.string())),
                     "ids": pa.array([[int(v) for v in rng.integers(0, 9, int(rng.integers(1, 3)))] for _ in range(n)],
                                     pa.list_(pa.int64()))})


def test_list_columns_give_one_feature_per_element_as_the_eager_reference_learns_them(rng):
    table = _tags_table(rng, 600)
    model = fastada.train(table, label="label", bits=8, threads=1, lr=0.3, chunk_rows=128)  # collisions too
    assert model.spec.categorical == ("tags", "ids")
    assert model.summary["roles"]["tags"]["why"] == "a list: one feature per element"
    spec, mask = model.spec, model.spec.slots - 1
    seed = {c: naive.murmur3_32(c.encode(), 0) for c in ("tags", "ids")}
    null = {c: naive.murmur3_32(b"\xffnull", s) for c, s in seed.items()}
    rows = []
    for r in table.to_pylist():
        features = []
        for c in ("tags", "ids"):
            values = r[c] or []
            if not values:
                features.append((null[c] & mask, 1.0))
            for v in values:
                raw = v.encode() if isinstance(v, str) else naive._int_bytes(v)
                features.append((naive.murmur3_32(raw, seed[c]) & mask, 1.0))
        rows.append(features)
    labels = [float(y) for y in table["label"].to_pylist()]
    w_ref, _, loss_ref = naive.adagrad_eager(rows, labels, [1.0] * len(rows), spec.slots, 0.3, 0.0, 0.0, 1e-8)
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)
    assert model.summary["progressive_logloss"] == pytest.approx(loss_ref, rel=1e-5)


def test_a_list_column_learns_from_its_elements_and_scores_like_training(rng):
    train, test = _tags_table(rng, 20_000), _tags_table(np.random.default_rng(5), 5000)
    with_tags = fastada.train(train, label="label", bits=14, threads=1)
    without = fastada.train(train, label="label", ignore=["tags"], bits=14, threads=1)
    assert with_tags.evaluate(test)["logloss"] < without.evaluate(test)["logloss"] - 0.015
    np.testing.assert_array_equal(with_tags.predict(test.slice(0, 100)), with_tags.predict(test)[:100])
    with pytest.raises(fastada.FastadaError, match="cross with list column 'tags'"):
        fastada.train(train, label="label", crosses=[("tags", "ids")], bits=14, threads=1)


def _with_tag_scores(rng, table):
    """``table`` plus ``scores``: a value for each element of ``tags`` (a null list: null)."""
    scores = [None if t is None else [float(x) for x in rng.uniform(-2, 3, len(t)).round(2)]
              for t in table["tags"].to_pylist()]
    return table.append_column("scores", pa.array(scores, pa.list_(pa.float32())))


def test_weighted_list_elements_learn_with_their_values_as_the_eager_reference(rng):
    table = _with_tag_scores(rng, _tags_table(rng, 600))
    model = fastada.train(table, label="label", bits=8, threads=1, lr=0.3, chunk_rows=128,
                          list_weights={"tags": "scores"})
    assert model.summary["roles"]["scores"]["role"] == "list weights"
    mask = model.spec.slots - 1
    seed = {c: naive.murmur3_32(c.encode(), 0) for c in ("tags", "ids")}
    null = {c: naive.murmur3_32(b"\xffnull", s) & mask for c, s in seed.items()}
    present = naive.murmur3_32(b"\xffpresent", seed["tags"]) & mask
    rows = []
    for r in table.to_pylist():
        tags, scores, ids = r["tags"] or [], r["scores"] or [], r["ids"] or []
        # weighted: whether the list has elements (value 1), then each element with its value
        features = [(present if tags else null["tags"], 1.0)]
        features += [(naive.murmur3_32(t.encode(), seed["tags"]) & mask, s) for t, s in zip(tags, scores)]
        features += [(naive.murmur3_32(naive._int_bytes(v), seed["ids"]) & mask, 1.0) for v in ids]
        rows.append(features if ids else features + [(null["ids"], 1.0)])
    labels = [float(y) for y in table["label"].to_pylist()]
    w_ref, _, loss_ref = naive.adagrad_eager(rows, labels, [1.0] * len(rows), model.spec.slots, 0.3, 0.0, 0.0, 1e-8)
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)
    assert model.summary["progressive_logloss"] == pytest.approx(loss_ref, rel=1e-5)
    # scoring reads the values as training did
    margins = [w_ref[-1] + sum(w_ref[slot] * v for slot, v in features) for features in rows]
    np.testing.assert_allclose(model.predict(table), 1 / (1 + np.exp(-np.array(margins))), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("scores,message", [
    ([[1.0], [2.0, 3.0]], "row 0: list weights column 'scores' has 1 values for the 2 elements of 'tags'"),
    ([[1.0, None], [2.0]], "row 0: list weights column 'scores' has a null value"),
    ([[1.0, 2.0], [float("inf")]], "row 1: list weights column 'scores' has value inf"),
])
def test_list_weights_that_do_not_fit_their_elements_are_refused_naming_the_row(scores, message):
    table = pa.table({"label": [0, 1], "tags": pa.array([["a", "b"], ["c"]]), "scores": pa.array(scores)})
    with pytest.raises(fastada.FastadaError, match=message):
        fastada.train(table, label="label", bits=8, threads=1, lr=0.1, list_weights={"tags": "scores"})


def test_list_weights_must_name_a_list_column_and_a_free_column(rng):
    table = _with_tag_scores(rng, _tags_table(rng, 50))
    with pytest.raises(fastada.FastadaError, match="not a list"):
        fastada.train(table.append_column("x", pa.array(["a"] * 50)), label="label", list_weights={"x": "scores"})
    with pytest.raises(fastada.FastadaError, match="also named for another role"):
        fastada.train(table, label="label", list_weights={"tags": "scores"}, ignore=["scores"])
    with pytest.raises(fastada.FastadaError, match="'nope' named in --list-weights not found"):
        fastada.train(table, label="label", list_weights={"tags": "nope"})


def test_a_stream_larger_than_the_spool_threshold_is_not_held_in_memory(rng, monkeypatch):
    from fastada import reader
    table = small_table(rng, n=3000)
    monkeypatch.setattr(reader, "SPOOL_BYTES", 10_000)  # a few batches of this table

    def stream():
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=250))

    data = reader.DataSet(stream())
    assert data._table is None and data.name(0) == "<stream>" and data.num_rows == 3000
    spooled = data._spool.path
    model = fastada.train(stream(), label="label", bits=12, threads=1, lr=0.2)
    reference = fastada.train(table, label="label", bits=12, threads=1, lr=0.2)
    np.testing.assert_array_equal(model.weights, reference.weights)
    np.testing.assert_array_equal(model.predict(stream()), reference.predict(table))
    del data
    import gc
    gc.collect()
    assert not os.path.exists(spooled)  # the file goes with its data set


def test_the_calibrating_shift_makes_the_mean_prediction_the_click_rate(rng):
    from fastada.score import calibrating_shift
    table = _rare_clicks(rng, 20_000)
    model = fastada.train(table, label="label", bits=14, threads=1, lr=0.1)
    before = calibrating_shift(model, table, rows=5_000)
    model.weights[-1] += 0.7  # a bias far off
    shift = calibrating_shift(model, table, rows=5_000)
    assert shift == pytest.approx(before - 0.7, abs=1e-4)
    model.weights[-1] += np.float32(shift)
    assert model.predict(table.slice(0, 5_000)).mean() == pytest.approx(np.mean(table["label"].to_numpy()[:5_000]), rel=1e-4)
