"""Field-aware factorization machines (learner="ffm"): the kernel equals its pure-Python twin,
learns planted pairwise effects the linear model cannot, and works with everything training has:
threads, checkpoints and resume, early stopping, model files, scoring."""

import importlib
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastada
import naive
from conftest import small_table
from fastada import ffm
from fastada.config import FastadaError
from fastada.features import Featurizer


def pairs_table(rng, n, planted=True):
    """Three id columns; with ``planted``, the click odds depend on the pair (a, b) only."""
    a, b, c = rng.integers(0, 30, n), rng.integers(0, 30, n), rng.integers(0, 50, n)
    effect = np.random.default_rng(1).normal(0, 1.2, (30, 30))
    main = np.random.default_rng(2).normal(0, 0.6, (2, 30))
    z = -1 + (effect[a, b] if planted else main[0, a] + main[1, b]) + 0.1 * (c % 5)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
    return pa.table({"label": y, "a": [f"a{v}" for v in a], "b": [f"b{v}" for v in b], "c": [f"c{v}" for v in c]})


def test_per_thread_views_of_hot_factor_slots_stay_within_their_bytes():
    assert ffm.hot_cap(39, 4) == ffm.HOT_CAP  # Criteo's 39 fields at K = 4: 1,248 bytes a slot
    for fields, k in ((100, 16), (1000, 32), (1, 4)):
        cap = ffm.hot_cap(fields, k)
        assert 1 <= cap <= ffm.HOT_CAP and (cap == 1 or ffm.factor_bytes(cap, fields, k) <= ffm.HOT_VIEW_BYTES)


def test_the_factor_table_starts_as_libffms_the_same_for_a_seed_whatever_the_threads():
    import numba
    was = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ffm.new_factors(4096, 5, 4, seed=3)
        numba.set_num_threads(max(2, was))
        many = ffm.new_factors(4096, 5, 4, seed=3)
    finally:
        numba.set_num_threads(was)
    np.testing.assert_array_equal(one, many)
    vectors = one[:, :, :4]
    assert vectors.min() >= 0.0 and vectors.max() < 0.5  # [0, 1/sqrt(K))
    assert np.all(one[:, :, 4:] == ffm.INITIAL_ACCUMULATOR)
    counts = np.histogram(vectors, bins=10, range=(0.0, 0.5))[0]
    expected = vectors.size / 10
    assert np.sum((counts - expected) ** 2 / expected) < 27.9  # uniform: chi-square, 9 degrees of freedom, p = 0.001
    assert abs(np.corrcoef(vectors.ravel()[:-1], vectors.ravel()[1:])[0, 1]) < 0.01  # neighbours independent
    other = ffm.new_factors(4096, 5, 4, seed=4)[:, :, :4]
    assert np.mean(other == vectors) < 1e-3 and abs(np.corrcoef(other.ravel(), vectors.ravel())[0, 1]) < 0.01


@pytest.mark.parametrize("k", [3, 4])  # (4: the vector code, both vectors of a pair in one register)
def test_the_kernel_equals_the_pure_python_twin(rng, k):
    table = small_table(rng, n=300)  # strings with nulls, codes, numbers with NaN/inf (a value field and a bucket)
    table = table.append_column("w", pa.array(rng.uniform(0.2, 2.0, 300)))
    table = table.append_column("ratio", pa.array(rng.uniform(0.0, 3.0, 300)))  # (a pair of two numeric values)
    settings = dict(label="label", weight="w", bits=6, factor_bits=3, factors=k, lr=0.1, factor_lr=0.2,
                    factor_l2=1e-3, threads=1, learner="ffm", chunk_rows=64)  # collisions in both tables
    model = fastada.train(table, **settings)
    spec = model.spec
    featurizer = Featurizer(spec)
    block = featurizer(table.to_batches()[0] if table.num_rows == len(table.to_batches()[0]) else
                       pa.Table.from_batches(table.to_batches()).combine_chunks().to_batches()[0], "t")
    fields = featurizer.fields()
    mask = spec.slots - 1
    rows = []
    for r in range(table.num_rows):
        features = [(int(h) & mask, 1.0, int(fields[j])) for j, h in enumerate(block.cat[r])]
        features += [(int(h) & mask, float(x), int(fields[block.cat.shape[1] + j]))
                     for j, (h, x) in enumerate(zip(block.num[r], block.num_values[r]))]
        rows.append(features)
    start = ffm.new_factors(8, int(fields.max()) + 1, k, seed=0)
    w, v, loss = naive.ffm_eager(rows, block.labels.tolist(), block.weights.tolist(), spec.slots, 0.1, 1e-8,
                                 start, 7, 0.2, 1e-3)
    np.testing.assert_allclose(model.weights, w, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(model.factors, v[:, :, :k], rtol=2e-4, atol=2e-5)
    assert model.summary["progressive_logloss"] == pytest.approx(loss, rel=1e-5)


def test_the_fm_kernel_equals_the_pure_python_twin_that_writes_every_pair_out(rng):
    table = small_table(rng, n=300).append_column("w", pa.array(rng.uniform(0.2, 2.0, 300)))
    settings = dict(label="label", weight="w", bits=6, factor_bits=3, factors=3, lr=0.1, factor_lr=0.2,
                    factor_l2=1e-3, threads=1, learner="fm", chunk_rows=64)
    model = fastada.train(table, **settings)
    spec = model.spec
    block = Featurizer(spec)(pa.Table.from_batches(table.to_batches()).combine_chunks().to_batches()[0], "t")
    mask = spec.slots - 1
    rows = [[(int(h) & mask, 1.0) for h in block.cat[r]] +
            [(int(h) & mask, float(x)) for h, x in zip(block.num[r], block.num_values[r])] for r in range(300)]
    w, v, loss = naive.fm_eager(rows, block.labels.tolist(), block.weights.tolist(), spec.slots, 0.1, 1e-8,
                                ffm.new_factors(8, 1, 3, seed=0), 7, 0.2, 1e-3)
    np.testing.assert_allclose(model.weights, w, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(model.factors, v[:, :, :3], rtol=2e-4, atol=2e-5)
    assert model.summary["progressive_logloss"] == pytest.approx(loss, rel=1e-5)


def test_fm_learns_planted_pairs_and_takes_list_columns(rng, tmp_path):
    train, test = pairs_table(rng, 50_000), pairs_table(np.random.default_rng(7), 20_000)
    settings = dict(label="label", bits=16, threads=1, epochs=3)
    linear = fastada.train(train, **settings).evaluate(test)["logloss"]
    pairs = fastada.train(train, learner="fm", factor_bits=12, factors=8, **settings)
    assert pairs.evaluate(test)["logloss"] < linear - 0.01
    pairs.save(tmp_path / "fm.fastada")
    np.testing.assert_array_equal(fastada.load(tmp_path / "fm.fastada").predict(test), pairs.predict(test))
    tags = pa.table({"label": [0, 1] * 200, "tags": pa.array([["a", "b"], ["c"]] * 200)})
    assert fastada.train(tags, label="label", learner="fm", bits=10, factor_bits=8, threads=1, lr=0.1).factors.shape == (256, 1, 4)


def test_ffm_learns_planted_pairs_the_linear_model_cannot_and_matches_it_without_them(rng):
    for planted in (True, False):
        train, test = pairs_table(rng, 50_000, planted), pairs_table(np.random.default_rng(7), 20_000, planted)
        settings = dict(label="label", bits=16, threads=1, epochs=3)
        linear = fastada.train(train, **settings).evaluate(test)["logloss"]
        pairs = fastada.train(train, learner="ffm", factor_bits=12, **settings).evaluate(test)["logloss"]
        if planted:
            assert pairs < linear - 0.02, (pairs, linear)
        else:
            assert abs(pairs - linear) < 0.003, (pairs, linear)


def test_the_factors_rate_is_raced_from_the_runs_own_start_and_used_as_given_otherwise(rng):
    """factor_lr="auto" (the default) races libffm's eta and its neighbours on the first rows at
    the linear rate, says so and keeps it in the summary; the race puts back every factor it
    wrote, so training at the rate it chose gives the same model bit for bit."""
    train = pairs_table(rng, 30_000)
    notes = []
    settings = dict(label="label", bits=14, factor_bits=10, threads=1, lr=0.05, epochs=2)
    for learner in ("ffm", "fm"):
        raced = fastada.train(train, learner=learner, on_note=notes.append, **settings)
        rate, race = raced.summary["factor_lr"], raced.summary["factor_lr_race"]
        assert race["rows"] == race["scored_rows"] == 20_000 and race["passes"] == 2  # (two folds: every row scored)
        assert {"0.08", "0.2", "0.5", "1.25"} <= set(race["logloss"])
        assert any(n.startswith(f"factor lr auto: {rate:.3g} (logloss on rows 1-20,000") for n in notes), notes
        given = fastada.train(train, learner=learner, factor_lr=rate, **settings)
        assert given.summary["factor_lr"] == rate and given.summary["factor_lr_race"] is None
        np.testing.assert_array_equal(given.factors, raced.factors)
        np.testing.assert_array_equal(given.weights, raced.weights)


def test_the_factors_race_picks_a_fast_rate_for_strong_pairs_and_a_slow_one_for_none(rng):
    settings = dict(label="label", bits=14, factor_bits=10, threads=1, lr=0.05, epochs=2)
    for learner in ("ffm", "fm"):
        strong = fastada.train(pairs_table(rng, 30_000, planted=True), learner=learner, **settings)
        none = fastada.train(pairs_table(rng, 30_000, planted=False), learner=learner, **settings)
        assert strong.summary["factor_lr"] >= 0.3, strong.summary["factor_lr_race"]
        assert none.summary["factor_lr"] <= 0.15, none.summary["factor_lr_race"]
    # no clicks at all: every faster rate scores a little better, and the race stops at its limit
    never = pairs_table(rng, 5_000)
    never = never.set_column(0, "label", pa.array(np.zeros(5_000, np.int8)))
    race = fastada.train(never, learner="ffm", **settings).summary["factor_lr_race"]
    assert race["lr"] == pytest.approx(max(map(float, race["logloss"])), rel=1e-2) and race["lr"] <= 5.0, race


@pytest.mark.parametrize("learner", ["ffm", "fm"])
def test_two_threads_reach_one_threads_quality(rng, learner):
    train, test = pairs_table(rng, 60_000), pairs_table(np.random.default_rng(8), 20_000)
    settings = dict(label="label", bits=16, factor_bits=12, learner=learner, lr=0.05, chunk_rows=4096)
    one = fastada.train(train, threads=1, **settings).evaluate(test)["logloss"]
    two = fastada.train(train, threads=2, **settings).evaluate(test)["logloss"]
    assert abs(two - one) < 0.002, (one, two)


def test_resume_continues_bit_for_bit_and_early_stopping_keeps_the_best_factors(rng, tmp_path):
    data = tmp_path / "d.parquet"
    pq.write_table(pairs_table(rng, 6000), data, row_group_size=1000)
    valid = tmp_path / "v.parquet"
    pq.write_table(pairs_table(np.random.default_rng(3), 2000), valid)
    settings = dict(label="label", bits=12, factor_bits=8, learner="ffm", lr=0.1, epochs=3, threads=1,
                    chunk_rows=500, valid=str(valid), early_stop=2, eval_every_rows=2000)
    whole = fastada.train(str(data), **settings)
    stop = threading.Event()  # a stop request after 7,000 of the 18,000 rows, mid-epoch
    with pytest.raises(fastada.FastadaError):
        fastada.train(str(data), checkpoint_dir=str(tmp_path / "ck"), checkpoint_every_rows=1000, stop=stop,
                      on_chunk=lambda p: stop.set() if p.rows >= 7000 else None, **settings)
    resumed = fastada.train(str(data), checkpoint_dir=str(tmp_path / "ck"), checkpoint_every_rows=1000,
                            resume=True, **settings)
    np.testing.assert_array_equal(resumed.weights, whole.weights)
    np.testing.assert_array_equal(resumed.factors, whole.factors)
    best = min(e["valid_logloss"] for e in whole.summary["evaluations"])
    assert whole.evaluate(str(valid))["logloss"] == pytest.approx(best, rel=1e-6)


def test_a_model_file_keeps_the_factors_and_scores_as_trained(rng, tmp_path):
    from fastada.cli import main
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    pq.write_table(pairs_table(rng, 5000), train)
    pq.write_table(pairs_table(rng, 1000), test)
    model_path = tmp_path / "m.fastada"
    assert main(["train", str(train), "--model", str(model_path), "--learner", "ffm", "--factors", "2",
                 "--factor-bits", "10", "--bits", "14", "--threads", "1", "--quiet"]) == 0
    model = fastada.load(model_path)
    assert model.learn["learner"] == "ffm" and model.factors.shape == (1024, 3, 2)
    assert model.learn["factor_lr"] == "auto" and model.summary["factor_lr_race"]["lr"] == model.summary["factor_lr"]
    given = tmp_path / "given.fastada"
    assert main(["train", str(train), "--model", str(given), "--learner", "ffm", "--factor-lr", "0.3",
                 "--factor-bits", "10", "--bits", "14", "--threads", "1", "--quiet"]) == 0
    assert fastada.load(given).summary["factor_lr"] == 0.3
    with pytest.raises(SystemExit):
        main(["train", str(train), "--learner", "ffm", "--factor-lr", "fast"])
    again = fastada.load(model_path, mmap=True)
    np.testing.assert_array_equal(again.predict(str(test)), model.predict(str(test)))
    assert main(["eval", "--model", str(model_path), str(test)]) == 0
    assert main(["predict", "--model", str(model_path), str(test), "--out", str(tmp_path / "p.parquet")]) == 0
    assert main(["inspect", str(model_path)]) == 0
    # the linear weights alone score otherwise: the factors are used
    linear_only = fastada.Model(model.spec, model.weights)
    assert not np.allclose(linear_only.predict(str(test)), model.predict(str(test)))


def test_ffm_refuses_list_columns_and_tables_that_do_not_fit(rng, monkeypatch):
    table = pa.table({"label": [0, 1] * 50, "tags": pa.array([["a", "b"], ["c"]] * 50)})
    with pytest.raises(FastadaError, match="list column 'tags': a field-aware learner"):
        fastada.train(table, label="label", learner="ffm", bits=10, threads=1, lr=0.1)
    training = importlib.import_module("fastada.train")  # (fastada.train is also the function)
    monkeypatch.setattr(training, "memory_available", lambda: 80 << 20)  # the linear model fits, not the factors
    with pytest.raises(FastadaError, match="lower --factor-bits or --factors: the factor table takes 96 MiB"):
        fastada.train(pairs_table(rng, 1000), label="label", learner="ffm", bits=16, factor_bits=16, factors=64,
                      threads=1, lr=0.1, factor_lr=0.2)
    # the race of the factors' rate copies the rows it touches (1,000 rows x 3 features), to put them back
    with pytest.raises(FastadaError, match=r"the factor table \(and a copy of the rows the race of its rate touches\) "
                                           r"takes 100 MiB"):
        fastada.train(pairs_table(rng, 1000), label="label", learner="ffm", bits=16, factor_bits=16, factors=64,
                      threads=1, lr=0.1)


def test_ffm_on_several_threads_counts_its_factor_table_copy_against_memory(rng, monkeypatch):
    """The views go past the factor table's rows: the table is copied once into a larger one, so
    for a moment there are two, and each thread keeps its views and what they were taken from
    (2 threads x 2 x 2,048 hot slots x 1,536 bytes: 12 MiB); what fits one thread may not fit two."""
    training = importlib.import_module("fastada.train")
    monkeypatch.setattr(training, "memory_available", lambda: 150 << 20)  # one 96 MiB factor table fits, two do not
    table = pairs_table(rng, 1000)
    fastada.train(table, label="label", learner="ffm", bits=16, factor_bits=16, factors=64, threads=1, lr=0.1)
    with pytest.raises(FastadaError, match=r"the factor table \(copied once, with room for 2 learner threads' views\)"
                                           r".* or use fewer --threads: .* takes 204 MiB"):
        fastada.train(table, label="label", learner="ffm", bits=16, factor_bits=16, factors=64, threads=2, lr=0.1)


@pytest.mark.parametrize("learner", ["ffm", "fm"])
def test_threads_learn_hot_slots_in_views_and_hand_every_update_back(rng, learner):
    """FM and FFM on several threads learn the frequent values' vectors, and the linear part's
    bias and frequent slots, in per-thread views and add what they learned to the tables: with a
    rate too small to change any prediction, every gradient is the same in any order, and the
    tables' accumulators after two threads equal one thread's."""
    from fastada import kernels
    table = pairs_table(rng, 4000)
    model = fastada.train(table, label="label", bits=12, factor_bits=8, learner=learner, threads=1, lr=0.05)
    featurizer = Featurizer(model.spec)
    block = featurizer(pa.Table.from_batches(table.to_batches()).combine_chunks().to_batches()[0], "t")
    slots = (block.cat.astype(np.int64) & (model.spec.slots - 1)).astype(np.int32)
    fields = featurizer.fields() if learner == "ffm" else np.zeros(0, np.int64)  # (FM: one field)
    width = int(fields.max()) + 1 if fields.size else 1
    hot = kernels.choose_hot_slots(slots.view(np.uint32), np.zeros((len(slots), 0), np.uint32), 255, 257,
                                   share=ffm.HOT_SHARE, cap=ffm.hot_cap(width, 4))
    assert hot.count > 50  # every value of a, b and c is frequent here
    linear_hot = kernels.choose_hot_slots(slots.view(np.uint32), np.zeros((len(slots), 0), np.uint32),
                                          model.spec.slots - 1, model.spec.slots + 1)
    assert linear_hot.count > 50

    def learn(blocks, views):
        factors = np.zeros((256 + blocks * hot.count, width, 8), np.float32)
        factors[:256] = ffm.new_factors(256, width, 4, 0)
        linear = kernels.new_table(model.spec.slots)
        used = hot if views else kernels.hot_slots(2)
        taken = np.zeros((blocks, hot.count, width, 8), np.float32)
        linear_used = linear_hot if views else kernels.HotSlots(np.zeros(0, np.int64), np.zeros(0, np.int64),
                                                                np.zeros(1, np.int64))
        private = kernels.private_state(blocks, linear_hot)[0]
        ffm.train_chunk(slots, np.zeros((len(slots), 0), np.float32), block.labels, np.ones(len(slots), np.float32),
                        np.zeros(0, np.uint8), linear, linear.view(np.int64), np.int64(0), 1e-9, 0.0, 0.0, 1e-8,
                        factors, fields, np.int64(255), 1e-9, 0.0, blocks, np.zeros((blocks, 4)),
                        used.slots, used.lookup, used.fold_ends, 64, taken,
                        linear_used.slots, linear_used.lookup, linear_used.fold_ends, private)
        ffm.hand_back_views(factors, taken, used.slots, np.int64(255), blocks)  # (as the learner does after each chunk)
        return factors[:256], linear, factors[256:].reshape(taken.shape), taken
    (one, linear_one, _, _), (two, linear_two, views, taken) = learn(1, False), learn(2, True)
    # the threads learned in their views (the last changes, handed back at the end, are still there)
    assert all(np.abs(views[b, 1:, :, 4:] - taken[b, 1:, :, 4:]).max() > 0 for b in range(2))
    np.testing.assert_allclose(two[:, :, 4:], one[:, :, 4:], rtol=1e-4)  # accumulators: every update arrived
    assert (two[:, :, 4:] > 1.0).sum() > (500 if learner == "ffm" else 200)  # (every frequent value's vectors learned)
    np.testing.assert_allclose(linear_two[:, kernels.ACCUMULATOR], linear_one[:, kernels.ACCUMULATOR], rtol=1e-4)
    assert linear_one[-1, kernels.ACCUMULATOR] > 100  # (the bias: every row's gradient)
