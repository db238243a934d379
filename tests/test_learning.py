"""Hogwild lazy Adagrad against the eager per-example reference, and what training reaches."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastada
import naive
from conftest import small_table
from fastada import kernels
from fastada.config import FastadaError
from fastada.features import Featurizer


def train_reference(table, spec, lr, l1, l2, eps=1e-8, weights=None):
    rows = [[(h & (spec.slots - 1), x) for h, x in feats] for feats in
            (naive.row_features(r, spec) for r in table.to_pylist())]
    labels = [float(y > 0) for y in table.column(spec.label).to_pylist()]
    rw = weights if weights is not None else [1.0] * len(labels)
    new = [h & (spec.slots - 1) for h in naive.new_value_hashes(spec)]
    return naive.adagrad_eager(rows, labels, rw, spec.slots, lr, l1, l2, eps, new)


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.0, 0.5), (0.02, 0.0), (0.01, 0.3)])
def test_one_thread_matches_eager_reference_to_float32_roundoff(rng, l1, l2):
    table = small_table(rng, n=600)
    model = fastada.train(table, label="label", bits=6, lr=0.3, l1=l1, l2=l2, threads=1,
                          crosses=[("word", "code")], chunk_rows=128)
    w_ref, G_ref, loss_ref = train_reference(table, model.spec, 0.3, l1, l2)
    # bits=6 forces collisions and repeated slots within a row: the reference handles them the same way
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(model.accumulators, G_ref, rtol=2e-4, atol=1e-5)
    assert model.summary["progressive_logloss"] == pytest.approx(loss_ref, rel=1e-5)
    if l1 > 0:
        assert (model.weights[:-1] == 0).sum() == (w_ref[:-1] == 0).sum()


def test_without_new_values_one_thread_matches_the_plain_eager_reference(rng):
    table = small_table(rng, n=600)
    model = fastada.train(table, label="label", bits=6, lr=0.3, l2=0.1, threads=1, new_values=False, chunk_rows=128)
    assert model.spec.new_values is False
    rows = [[(h & (model.spec.slots - 1), x) for h, x in naive.row_features(r, model.spec)] for r in table.to_pylist()]
    labels = [float(y > 0) for y in table.column("label").to_pylist()]
    w_ref, G_ref, _ = naive.adagrad_eager(rows, labels, [1.0] * len(rows), model.spec.slots, 0.3, 0.0, 0.1, 1e-8)
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(model.accumulators, G_ref, rtol=2e-4, atol=1e-5)


def test_values_never_seen_in_training_score_with_their_columns_new_value_weights(rng):
    """A value seen in training scores with its own weight; one never seen, with its column's
    new-value weight (learned from first sightings), where it would otherwise add nothing."""
    n = 4000
    # half the rows show one of 10 common ads (clicked 10%), half an ad seen once (clicked 80%);
    # "site" repeats and says nothing
    common = rng.random(n) < 0.5
    ad = [f"c{rng.integers(10)}" if c else f"ad{i}" for i, c in enumerate(common)]
    site = [f"s{i % 7}" for i in range(n)]
    y = (rng.random(n) < np.where(common, 0.1, 0.8)).astype(np.int8)
    table = pa.table({"label": y, "ad": ad, "site": site})
    model = fastada.train(table, label="label", categorical=["ad", "site"], bits=18, threads=1, lr=0.1)
    spec = model.spec
    assert spec.new_values
    new = [h & (spec.slots - 1) for h in naive.new_value_hashes(spec)]
    w = model.weights
    assert w[new[0]] > 0.5  # first sightings of "ad" were clicked about 80% of the time
    from fastada.score import describe_slots
    assert "ad = a value never learned (new-value feature)" in describe_slots(model, [new[0]])[new[0]]
    test = pa.table({"label": pa.array([1, 1], pa.int8()), "ad": ["never seen", "c3"], "site": ["s1", "s1"]})
    margins = model.predict(test, margin=True)
    features = [[h & (spec.slots - 1) for h, _ in naive.row_features(r, spec)] for r in test.to_pylist()]
    assert w[features[0][0]] == 0.0 and w[features[1][0]] != 0.0 and w[features[0][1]] != 0.0
    assert margins[0] == pytest.approx(w[-1] + w[new[0]] + w[features[0][1]], rel=1e-6)
    assert margins[1] == pytest.approx(w[-1] + w[features[1][0]] + w[features[1][1]], rel=1e-6)
    off = fastada.train(table, label="label", categorical=["ad", "site"], bits=18, threads=1, lr=0.1, new_values=False)
    assert off.predict(test, margin=True)[0] == pytest.approx(off.weights[-1] + off.weights[features[0][1]], rel=1e-6)
    assert model.predict(test)[0] > off.predict(test)[0] + 0.1  # an unseen ad is worth what new ads were


def test_row_weights_scale_the_gradient(rng):
    table = small_table(rng, n=300)
    w = rng.uniform(0, 3, table.num_rows)
    table = table.append_column("w", pa.array(w))
    model = fastada.train(table, label="label", weight="w", bits=8, lr=0.2, l2=0.1, threads=1)
    w_ref, _, _ = train_reference(table, model.spec, 0.2, 0.0, 0.1, weights=list(w))
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("w,acc,steps,l1,l2", [
    (0.8, 2.0, 1, 0.1, 0.2), (0.8, 2.0, 37, 0.1, 0.2), (-0.8, 0.5, 1000, 0.0, 0.05),
    (0.05, 1.0, 10, 0.1, 0.0), (-3.0, 9.0, 5, 0.3, 0.0), (1e-3, 1e-4, 10**6, 1e-4, 1e-4)])
def test_lazy_regularisation_equals_that_many_eager_steps(w, acc, steps, l1, l2):
    lr, eps = 0.1, 1e-8
    eta = lr / (math.sqrt(np.float32(acc)) + eps)
    expected = float(np.float32(w))
    for _ in range(min(steps, 10**6)):
        expected = math.copysign(max(abs(expected) - eta * l1, 0.0), expected) / (1 + eta * l2)
    got = kernels.regularised(np.float32(w), np.float32(acc), steps, lr, l1, l2, eps)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_logistic_loss_is_finite_and_exact_at_extreme_margins():
    for z in (-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4):
        for y in (0.0, 1.0):
            loss = kernels.logistic_loss(z, y)
            assert math.isfinite(loss)
            exact = max(z, 0) - y * z + math.log1p(math.exp(-abs(z)))
            assert loss == pytest.approx(exact, rel=1e-12, abs=1e-300)


def test_loss_and_gradient_from_one_exponential_are_the_two_functions_bit_for_bit(rng):
    margins = np.concatenate([[-1e4, -800.0, -40.0, -0.0, 0.0, 40.0, 800.0, 1e4], rng.normal(0, 5, 2000)])
    for z in margins:
        for y in (0.0, 1.0):
            loss, gradient = kernels.loss_and_gradient(float(z), y)
            assert loss == kernels.logistic_loss(float(z), y)
            assert gradient == kernels._sigmoid(float(z)) - y


def test_one_thread_is_bit_for_bit_repeatable(rng):
    table = small_table(rng, n=2000)
    a = fastada.train(table, label="label", bits=12, l1=0.001, l2=0.01, threads=1, epochs=2, shuffle=True, seed=3)
    b = fastada.train(table, label="label", bits=12, l1=0.001, l2=0.01, threads=1, epochs=2, shuffle=True, seed=3)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.accumulators, b.accumulators)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from fastada.synth import generate
    out = tmp_path_factory.mktemp("gen")
    truth = generate(str(out), rows=200_000, test_rows=50_000, seed=7)
    return out, truth


def test_hogwild_two_threads_reaches_one_thread_quality(generated):
    """Hogwild's runs differ from each other (the threads' timing orders their steps): on these
    rows ten runs of 2 threads alone were 0.0002-0.0019 behind one thread's test logloss, and in
    clean-clone CI runs of the whole suite 0.0024, then 0.0012 / 0.0018 / 0.0033 (mean 0.0021), so
    the stated tolerance (README) is for their mean and for each run."""
    out, _ = generated
    one = fastada.train(str(out / "train.parquet"), bits=20, threads=1).evaluate(str(out / "test.parquet"))
    two = [fastada.train(str(out / "train.parquet"), bits=20, threads=2).evaluate(str(out / "test.parquet"))
           for _ in range(3)]
    gaps = [abs(run["logloss"] - one["logloss"]) for run in two]
    assert np.mean(gaps) < 0.003 and max(gaps) < 0.004, gaps
    assert max(abs(run["auc"] - one["auc"]) for run in two) < 0.003


def batch_logistic_reference(model, train, test, l2_grid=(3.0, 10.0)):
    """Best test logloss of a batch L2 logistic regression (L-BFGS) on the same hashed features."""
    from scipy.optimize import minimize
    from scipy.sparse import csr_matrix

    f = Featurizer(model.spec)

    def design(path):
        import pyarrow.parquet as pq
        t = pq.read_table(path)
        block = f(t.combine_chunks().to_batches()[0], path)
        n = block.rows
        slots = np.concatenate([block.cat, block.num], axis=1).astype(np.int64) & (model.spec.slots - 1)
        index = np.minimum(np.searchsorted(used, slots), len(used) - 1)  # only slots seen in training
        slots = np.where(used[index] == slots, index, len(used) - 1)      # unseen: the all-zero column
        values = np.concatenate([np.ones_like(block.cat, np.float64), block.num_values], axis=1)
        x = csr_matrix((values.ravel(), slots.ravel(), np.arange(0, slots.size + 1, slots.shape[1])),
                       shape=(n, len(used)))
        return x, block.labels.astype(np.float64)

    import pyarrow.parquet as pq
    b = f(pq.read_table(train).combine_chunks().to_batches()[0], train)
    used = np.unique(np.concatenate([b.cat, b.num], axis=1).astype(np.int64) & (model.spec.slots - 1))
    used = np.append(used, model.spec.slots)  # test slots unseen in training map to one zero column
    x, y = design(train)
    xt, yt = design(test)
    best = np.inf
    for l2 in l2_grid:
        def objective(theta):
            z = x @ theta[:-1] + theta[-1]
            loss = np.logaddexp(0, z) - y * z
            g = 1 / (1 + np.exp(-z)) - y
            grad = np.append(x.T @ g + l2 * theta[:-1], g.sum())
            return loss.sum() + 0.5 * l2 * theta[:-1] @ theta[:-1], grad
        theta = minimize(objective, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
                         options={"maxiter": 200}).x
        zt = xt @ theta[:-1] + theta[-1]
        best = min(best, float(np.mean(np.logaddexp(0, zt) - yt * zt)))
    return best


def test_generated_data_reaches_the_linear_optimum_within_0_005(generated):
    out, truth = generated
    train, test = str(out / "train.parquet"), str(out / "test.parquet")
    # one thread: what the learner reaches, without Hogwild's run-to-run spread in calibration
    # (the Hogwild test above holds the threads to this within its tolerance)
    model = fastada.train(train, bits=20, threads=1)
    result = model.evaluate(test)
    reference = batch_logistic_reference(model, train, test)
    constant = truth["test_base_rate"]
    entropy = -(constant * math.log(constant) + (1 - constant) * math.log(1 - constant))
    print(f"fastada {result['logloss']:.5f}, batch L-BFGS {reference:.5f}, Bayes {truth['bayes_test_logloss']:.5f}")
    assert result["logloss"] < reference + 0.005, (result, reference)
    assert result["logloss"] > truth["bayes_test_logloss"]  # nothing beats the planted truth
    assert result["auc"] > 0.70 and result["ne"] < 0.92
    assert result["logloss"] < entropy - 0.04
    assert 0.95 < result["calibration"] < 1.05


@pytest.mark.parametrize("accumulator,l2", [(1e12, 1e-12), (1e16, 1e-10), (4.0, 1e-300)])
def test_lazy_regularisation_stays_finite_when_eta_l2_is_tiny(accumulator, l2):
    """eta * l2 far below float64's epsilon (a huge accumulator, a tiny l2) is still that many
    proximal steps, not 0 / 0."""
    lr, eps, l1, steps = 0.1, 1e-8, 1e-6, 1000
    eta = lr / (math.sqrt(np.float32(accumulator)) + eps)
    got = kernels.regularised(np.float32(0.5), np.float32(accumulator), steps, lr, l1, l2, eps)
    # (1 + x)^-k ~ 1 - k x and the l1 part is then k steps of eta l1
    expected = 0.5 * (1 - steps * eta * l2) - steps * eta * l1 * (1 - (steps + 1) * eta * l2 / 2)
    assert math.isfinite(got) and got == pytest.approx(expected, rel=1e-6)


def test_the_planted_pairs_are_worth_more_than_additive_effects_can_take_of_them():
    """pair_gap: the logloss a model without the interactions loses against the truth, and what
    is left once per-value effects take their additive part: the most a learner of pairs can
    gain over a linear one."""
    from fastada.synth import pair_gap
    table = pair_gap(seed=4, zipf=(1.05, 1.05), pairs="table", rows=200_000)
    latent = pair_gap(seed=4, zipf=(1.05, 1.05), pairs="latent", rows=200_000)
    for gap in (table, latent):
        assert 0.001 < gap["linear_best"] < gap["without_pairs"] < 0.05, gap
    assert pair_gap(seed=4, zipf=(1.05, 1.05), pairs="table", rows=200_000) == table  # drawn from the seed


def test_latent_pairs_change_only_the_planted_interactions(tmp_path):
    """``pairs="latent"``: the same rows (values drawn alike), only the two planted interactions
    made another way, so the click rate moves little and the labels of some rows differ."""
    import json
    from fastada.synth import generate
    tables = {}
    for pairs in ("table", "latent"):
        truth = generate(str(tmp_path / pairs), rows=0, test_rows=20_000, seed=4, pairs=pairs)
        assert json.loads((tmp_path / pairs / "truth.json").read_text())["pairs"] == pairs
        tables[pairs] = pq.read_table(tmp_path / pairs / "test.parquet")
        assert 0.2 < truth["test_base_rate"] < 0.3
    table, latent = tables["table"], tables["latent"]
    assert table.drop_columns(["label"]).equals(latent.drop_columns(["label"]))
    assert 0 < np.mean(table["label"].to_numpy() != latent["label"].to_numpy()) < 0.2
    with pytest.raises(FastadaError, match="pairs must be one of table, latent"):
        generate(str(tmp_path / "x"), rows=0, test_rows=10, pairs="random")


def test_generated_click_rate_is_the_one_asked_for_and_the_default_data_is_unchanged(tmp_path):
    """``click_rate`` moves only the truth's intercept: the same rows, their clicks at the rate asked
    for (display-ad logs: 0.1-5%), from 0.01% to 90%; the default (25%) intercept is the one made before
    the option existed, bit for bit, so every generated data set and figure stays reproducible."""
    import json
    from fastada.synth import _Truth, generate
    assert _Truth(11, (1.05, 1.05), "table").bias == 0.12444738975870363  # (as before click_rate)
    tables = {}
    for rate in (0.001, 0.01, 0.5, 0.9):
        truth = generate(str(tmp_path / str(rate)), rows=0, test_rows=40_000, seed=4, click_rate=rate)
        assert json.loads((tmp_path / str(rate) / "truth.json").read_text())["click_rate"] == rate
        assert abs(truth["test_base_rate"] - rate) < 0.1 * rate + 0.0005
        tables[rate] = pq.read_table(tmp_path / str(rate) / "test.parquet")
    assert tables[0.001].drop_columns(["label"]).equals(tables[0.9].drop_columns(["label"]))
    for bad in (0.0, 0.95, True, "0.1"):
        with pytest.raises(FastadaError, match=r"click_rate must be a number in \[0.0001, 0.9\]"):
            generate(str(tmp_path / "x"), rows=0, test_rows=10, click_rate=bad)
    assert not (tmp_path / "x").exists()
