"""FTRL-Proximal (``learner="ftrl"``): the paper's algorithm, sparse by L1, with everything else."""

import numpy as np
import pyarrow as pa
import pytest

import fastada
import naive
from conftest import small_table


def ftrl_reference(table, spec, alpha, beta, l1, l2, weights=None):
    rows = [[(h & (spec.slots - 1), x) for h, x in naive.row_features(r, spec)] for r in table.to_pylist()]
    labels = [float(y > 0) for y in table.column(spec.label).to_pylist()]
    new = [h & (spec.slots - 1) for h in naive.new_value_hashes(spec)]
    return naive.ftrl_proximal(rows, labels, weights or [1.0] * len(rows), spec.slots, alpha, beta, l1, l2, new)


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (0.5, 0.0), (0.2, 1.0)])
def test_one_thread_matches_the_papers_algorithm(rng, l1, l2):
    table = small_table(rng, n=600)
    model = fastada.train(table, label="label", bits=6, learner="ftrl", lr=0.3, beta=1.0, l1=l1, l2=l2,
                          threads=1, crosses=[("word", "code")], chunk_rows=128)  # bits=6: collisions
    w_ref, n_ref, loss_ref = ftrl_reference(table, model.spec, 0.3, 1.0, l1, l2)
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(model.accumulators, n_ref, rtol=2e-4, atol=1e-5)
    assert model.summary["progressive_logloss"] == pytest.approx(loss_ref, rel=1e-5)
    assert model.summary["learner"] == "ftrl" and model.learn["learner"] == "ftrl"


def test_row_weights_scale_the_gradient(rng):
    table = small_table(rng, n=300)
    w = list(rng.uniform(0, 3, table.num_rows))
    model = fastada.train(table.append_column("w", pa.array(w)), label="label", weight="w", bits=8,
                          learner="ftrl", lr=0.2, beta=0.5, l1=0.1, threads=1)
    w_ref, _, _ = ftrl_reference(table, model.spec, 0.2, 0.5, 0.1, 0.0, weights=w)
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)


def test_l1_gives_exact_zeros_and_more_of_them_as_it_grows(rng):
    table = small_table(rng, n=2000)
    zeros = []
    for l1 in (0.0, 1.0, 5.0):
        model = fastada.train(table, label="label", bits=12, learner="ftrl", lr=0.1, l1=l1, threads=1)
        touched = model.accumulators[:-1] > 0
        zeros.append(int((model.weights[:-1][touched] == 0.0).sum()))
    assert zeros[0] == 0 and 0 < zeros[1] < zeros[2]


def test_ftrl_learns_generated_data_as_well_as_adagrad(tmp_path):
    from fastada.synth import generate
    generate(str(tmp_path), rows=60_000, test_rows=10_000, seed=3)
    test = str(tmp_path / "test.parquet")
    adagrad = fastada.train(str(tmp_path / "train.parquet"), bits=18, threads=1).evaluate(test)["logloss"]
    by_ftrl = fastada.train(str(tmp_path / "train.parquet"), bits=18, threads=1, learner="ftrl", l1=1.0)
    assert by_ftrl.evaluate(test)["logloss"] < adagrad + 0.005
    assert by_ftrl.summary["lr_race"] is not None  # alpha raced like Adagrad's rate


def test_hogwild_ftrl_reaches_one_thread_quality(tmp_path):
    from fastada.synth import generate
    generate(str(tmp_path), rows=60_000, test_rows=10_000, seed=4)
    test = str(tmp_path / "test.parquet")
    kw = dict(bits=18, learner="ftrl", lr=0.1, l1=0.5, chunk_rows=4096)
    one = fastada.train(str(tmp_path / "train.parquet"), threads=1, **kw).evaluate(test)["logloss"]
    two = fastada.train(str(tmp_path / "train.parquet"), threads=2, **kw).evaluate(test)["logloss"]
    assert abs(two - one) < 0.002


def test_ftrl_resumes_bit_for_bit_and_stops_early_with_its_best_model(tmp_path, rng):
    import threading
    from fastada.train import Stopped
    table = small_table(rng, n=3000)
    kw = dict(label="label", bits=12, learner="ftrl", lr=0.2, l1=0.1, threads=1, epochs=3, shuffle=True,
              chunk_rows=256, holdout_every=5, early_stop=2, eval_every_rows=1000)
    reference = fastada.train(table, **kw)
    stop, seen = threading.Event(), []

    def count(progress):
        seen.append(1)
        if len(seen) == 7:
            stop.set()

    with pytest.raises(Stopped):
        fastada.train(table, **kw, checkpoint_dir=tmp_path / "ck", checkpoint_every_rows=500, on_chunk=count, stop=stop)
    resumed = fastada.train(table, **kw, checkpoint_dir=tmp_path / "ck", checkpoint_every_rows=500, resume=True)
    assert np.array_equal(resumed.weights, reference.weights)


def test_a_checkpoint_of_another_learner_is_refused(tmp_path, rng):
    table = small_table(rng, n=500)
    fastada.train(table, label="label", bits=10, threads=1, lr=0.1, checkpoint_dir=tmp_path / "ck")
    with pytest.raises(fastada.FastadaError, match="learner: checkpoint 'adagrad', this run 'ftrl'"):
        fastada.train(table, label="label", bits=10, threads=1, lr=0.1, learner="ftrl", checkpoint_dir=tmp_path / "ck",
                      resume=True)


def test_new_value_features_are_the_linear_learners_alone(rng):
    table = small_table(rng, n=200)
    assert fastada.train(table, label="label", bits=10, threads=1, learner="ftrl").spec.new_values is True
    assert fastada.train(table, label="label", bits=10, threads=1, learner="fm").spec.new_values is False
    with pytest.raises(fastada.FastadaError, match="only learner='adagrad' and 'ftrl' have new-value features, not 'ffm'"):
        fastada.train(table, label="label", bits=10, threads=1, learner="ffm", new_values=True)


def test_without_new_values_one_thread_matches_the_plain_algorithm(rng):
    table = small_table(rng, n=600)
    model = fastada.train(table, label="label", bits=6, learner="ftrl", lr=0.3, l1=0.2, threads=1, new_values=False)
    rows = [[(h & (model.spec.slots - 1), x) for h, x in naive.row_features(r, model.spec)] for r in table.to_pylist()]
    labels = [float(y > 0) for y in table.column("label").to_pylist()]
    w_ref, _, _ = naive.ftrl_proximal(rows, labels, [1.0] * len(rows), model.spec.slots, 0.3, 1.0, 0.2, 0.0)
    np.testing.assert_allclose(model.weights, w_ref, rtol=2e-4, atol=2e-5)
