"""Streaming metrics against direct formulas and scikit-learn's, and their edges."""

import math

import numpy as np
import pytest

from fastada.metrics import Evaluation, evaluate


def test_logloss_and_auc_equal_the_direct_formulas(rng):
    p = rng.uniform(0.01, 0.99, 5000)
    y = (rng.random(5000) < p).astype(np.float32)
    got = evaluate(p, y)
    logloss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    assert got["logloss"] == pytest.approx(logloss, rel=1e-9)
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert got["auc"] == pytest.approx(pairs, abs=2e-3)  # histogram bins: float32 keys, 2^-15 wide at most
    assert got["calibration"] == pytest.approx(p.mean() / y.mean(), rel=1e-6)


def test_streaming_in_chunks_equals_one_call(rng):
    p = rng.uniform(0, 1, 3000)
    y = (rng.random(3000) < p).astype(np.float32)
    e = Evaluation()
    for lo in range(0, 3000, 700):
        e.add(p[lo:lo + 700], y[lo:lo + 700])
    one = evaluate(p, y)
    for key, value in e.result().items():
        assert value == pytest.approx(one[key], rel=1e-12)


def test_a_confident_mistake_costs_its_true_logloss_not_a_float32_rounding():
    # 1 - 1e-9 is 1.0 in float32: its loss would be clipped at -log(1e-15) = 34.5 instead of 20.7
    got = evaluate(np.array([1 - 1e-9]), np.array([0.0]))
    assert got["logloss"] == pytest.approx(-math.log(1e-9), rel=1e-6)


def test_non_finite_probabilities_are_refused_not_scored():
    with pytest.raises(ValueError, match="finite"):
        Evaluation().add(np.array([0.5, np.nan]), np.array([1.0, 0.0]))


def test_ties_count_half(rng):
    got = evaluate(np.full(1000, 0.3), (rng.random(1000) < 0.3).astype(np.float32))
    assert got["auc"] == pytest.approx(0.5)


def test_auc_agrees_with_scikit_learn_where_installed(rng):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    p = rng.uniform(0, 1, 4000) ** 2
    y = (rng.random(4000) < p).astype(np.float32)
    w = rng.uniform(0.5, 2, 4000)
    got = evaluate(p, y, w)
    assert got["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, p, sample_weight=w), abs=2e-3)
    assert got["logloss"] == pytest.approx(sklearn_metrics.log_loss(y, p, sample_weight=w), rel=1e-9)
