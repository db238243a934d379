"""fastada.sklearn.AdagradClassifier: scikit-learn's own estimator checks, pipelines, search,
pickling, and the same model as fastada.train learns."""

import pickle

import numpy as np
import pyarrow as pa
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastada  # noqa: E402
from fastada.sklearn import AdagradClassifier  # noqa: E402

EXPECTED_FAILED_CHECKS = {
    # An online learner: a row of weight 2 is one Adagrad step of twice the gradient (G grows by
    # 4 g^2), not two steps (G grows by 2 g^2, and the second step sees the first), so weights are
    # not repeated rows. It is how Vowpal Wabbit and every per-coordinate-rate learner weigh rows.
    "check_sample_weight_equivalence_on_dense_data": "an online learner: a weight is not a repeated row",
    "check_sample_weight_equivalence_on_sparse_data": "an online learner: a weight is not a repeated row",
    # The check fits the same small integers as an array and as a DataFrame. An array's columns
    # are numbers; a DataFrame's columns take roles as on the command line, where integer columns
    # of few values are codes (categorical): other features, other predictions, by design.
    "check_classifier_data_not_an_array": "a DataFrame's integer columns take roles by their values",
}


@parametrize_with_checks([AdagradClassifier()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def ctr_frame(rng, n=3000):
    """A DataFrame as CTR logs look: string and id columns, a count, a label."""
    pd = pytest.importorskip("pandas")
    site = rng.choice([f"s{i}" for i in range(30)], n)
    device = rng.integers(0, 5, n)
    count = rng.exponential(5, n).round()
    logit = (np.char.startswith(site.astype(str), "s1") * 1.5 - 1) + 0.3 * (device == 2) + 0.05 * count
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"site": site, "device_id": device, "count": count}), y


def test_a_frame_fits_in_a_pipeline_with_column_roles_as_on_the_command_line(rng):
    X, y = ctr_frame(rng)
    pipe = Pipeline([("pass", FunctionTransformer(validate=False)), ("ctr", AdagradClassifier(bits=16, n_jobs=1))])
    pipe.fit(X, y)
    model = pipe.named_steps["ctr"].model_
    assert model.spec.categorical == ("site", "device_id") and model.spec.numeric == ("count",)
    assert list(pipe.named_steps["ctr"].feature_names_in_) == ["site", "device_id", "count"]
    p = pipe.predict_proba(X)
    assert p.shape == (len(y), 2) and np.allclose(p.sum(axis=1), 1)
    # the estimator is fastada.train on the same data
    table = pa.Table.from_pandas(X, preserve_index=False).append_column("y", pa.array(y))
    direct = fastada.train(table, label="y", bits=16, threads=1)
    np.testing.assert_allclose(p[:, 1], direct.predict(table), rtol=1e-6)


def test_grid_search_picks_among_settings_and_refits(rng):
    X, y = ctr_frame(rng, 2000)
    search = GridSearchCV(AdagradClassifier(bits=14), {"lr": [0.01, 0.3], "epochs": [1, 2]}, cv=2,
                          scoring="neg_log_loss").fit(X, y)
    assert search.best_params_["lr"] in (0.01, 0.3)
    assert search.best_estimator_.predict(X).shape == (2000,)


def test_clone_and_pickle_give_the_same_estimator(rng):
    X, y = make_classification(500, random_state=0)
    fitted = AdagradClassifier(bits=12, l2=1e-4).fit(X, y)
    assert clone(fitted).get_params() == fitted.get_params() and not hasattr(clone(fitted), "model_")
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))


def test_partial_fit_batch_by_batch_equals_one_pass(rng):
    X, y = make_classification(4000, n_features=12, random_state=1)
    settings = dict(bits=12, lr=0.1, l1=1e-4, l2=1e-3)
    whole = AdagradClassifier(**settings).fit(X, y)
    online = AdagradClassifier(**settings)
    for part in range(4):
        rows = slice(part * 1000, (part + 1) * 1000)
        online.partial_fit(X[rows], y[rows], classes=[0, 1])
    np.testing.assert_allclose(online.model_.weights, whole.model_.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(online.decision_function(X), whole.decision_function(X), rtol=1e-4, atol=1e-5)


def test_partial_fit_keeps_the_rate_raced_on_the_first_batch(rng):
    X, y = make_classification(3000, random_state=2)
    online = AdagradClassifier(bits=12)
    online.partial_fit(X[:1500], y[:1500], classes=[0, 1])
    raced = online.model_.summary["lr"]
    online.partial_fit(X[1500:], y[1500:])
    assert online.model_.summary["lr"] == raced
    with pytest.raises(ValueError, match="classes must be given"):
        AdagradClassifier().partial_fit(X, y)


def test_a_sparse_matrix_learns_each_column_weighted_by_its_entry(rng):
    sp = pytest.importorskip("scipy.sparse")
    X, y = make_classification(2000, n_features=30, random_state=3)
    X[np.abs(X) < 0.8] = 0  # sparse
    fitted = AdagradClassifier(bits=14, lr=0.1).fit(sp.csr_matrix(X), y)
    assert fitted.score(sp.csr_matrix(X), y) > 0.8
    # the same rows dense are scored as the sparse matrix they were fitted as
    np.testing.assert_allclose(fitted.predict_proba(X), fitted.predict_proba(sp.csr_matrix(X)))
    # a column's entry scales its feature: the margin is linear in it (the row's other features fixed)
    one = sp.csr_matrix(([1.0], ([0], [5])), shape=(1, 30))
    margins = [fitted.decision_function(one * k)[0] for k in (1.0, 2.0, 3.0)]
    assert margins[2] - margins[1] == pytest.approx(margins[1] - margins[0], rel=1e-5)


def test_labels_of_any_two_values_and_one_class_refused():
    X, y = make_classification(300, random_state=4)
    names = np.where(y == 1, "click", "none")
    fitted = AdagradClassifier(bits=10).fit(X, names)
    assert list(fitted.classes_) == ["click", "none"] and set(fitted.predict(X)) <= {"click", "none"}
    with pytest.raises(ValueError, match="one class"):
        AdagradClassifier().fit(X, np.zeros(300))
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        AdagradClassifier().fit(X, np.arange(300) % 3)


def test_every_learner_fits_a_frame_and_only_adagrad_goes_on_batch_by_batch(rng):
    X, y = ctr_frame(rng, 2000)
    for learner in ("adagrad", "ftrl", "fm", "ffm"):
        fitted = AdagradClassifier(bits=14, learner=learner, factor_bits=10).fit(X, y)
        assert fitted.model_.learn["learner"] == learner and fitted.score(X, y) > 0.6
    with pytest.raises(ValueError, match="partial_fit needs learner='adagrad'"):
        AdagradClassifier(learner="ffm").partial_fit(X, y, classes=[0, 1])


def test_arrow_tables_and_polars_frames_fit_as_the_pandas_frame_does(rng):
    pl = pytest.importorskip("polars")
    X, y = ctr_frame(rng, 2000)
    reference = AdagradClassifier(bits=14).fit(X, y).predict_proba(X)
    table = pa.Table.from_pandas(X, preserve_index=False)
    for frame in (table, pl.from_arrow(table)):
        fitted = AdagradClassifier(bits=14).fit(frame, y)
        assert list(fitted.feature_names_in_) == list(X.columns)
        np.testing.assert_allclose(fitted.predict_proba(frame), reference, rtol=1e-6)
