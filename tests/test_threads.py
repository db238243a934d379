"""Hogwild across cores: hot slots in per-thread views, where features learn, the automatic split."""

import json
import os
import numpy as np
import pyarrow as pa
import pytest

import fastada
from conftest import small_table
from fastada import kernels
from fastada.train import split_cores

NO_ORIGIN = np.zeros((0, 0), np.int16)  # (features in their columns' order)
NO_NEW = np.zeros(0, np.int64)  # (no new-value features)


def hashes(rng, rows, k, hot_values=(), hot_share=0.5):
    """(rows, k) uint32 hashes: mostly random, with ``hot_values`` in column 0 on about
    ``hot_share`` of the rows."""
    cat = rng.integers(0, 2**32, (rows, k), dtype=np.uint64).astype(np.uint32)
    if len(hot_values):
        pick = rng.random(rows) < hot_share
        cat[pick, 0] = rng.choice(np.asarray(hot_values, np.uint32), pick.sum())
    return cat


def test_hot_slots_are_those_written_by_more_than_their_share_of_rows_plus_the_bias(rng):
    bits = 16
    table_rows = (1 << bits) + 1
    cat = hashes(rng, 20_000, 5, hot_values=[7, 70_000, 123_456], hot_share=0.9)
    num = np.full((20_000, 1), 99, dtype=np.uint32)  # a numeric column's value feature: every row
    hot = kernels.choose_hot_slots(cat, num, (1 << bits) - 1, table_rows, share=1e-2)
    mask = (1 << bits) - 1
    assert hot.slots[0] == table_rows - 1  # the bias first, always
    assert set(hot.slots[1:].tolist()) == {99, 7, 70_000 & mask, 123_456 & mask}
    # a random slot is reached by about 5 * 16384 / 65536 = 1.25 features: far below 1 in 100 rows


def test_hot_slots_are_capped_most_written_first(rng):
    cat = hashes(rng, 16_384, 2, hot_values=np.arange(1, 60), hot_share=1.0)
    hot = kernels.choose_hot_slots(cat, np.zeros((16_384, 0), np.uint32), (1 << 20) - 1, (1 << 20) + 1,
                                   share=1e-4, cap=11)
    assert hot.count == 11  # the bias and the 10 most written
    counts = np.bincount(cat[:, 0], minlength=60)
    assert set(hot.slots[1:].tolist()) == set(np.argsort(-counts, kind="stable")[:10].tolist())


def test_locate_gives_each_feature_its_slot_or_its_hot_position_hot_categorical_ones_first(rng):
    bits = 12
    mask = (1 << bits) - 1
    cat = hashes(rng, 3000, 4, hot_values=[5, 6, 4100], hot_share=0.7)
    cat[rng.random(3000) < 0.3, 2] = 6  # a hot value after a cold one
    num = hashes(rng, 3000, 2)
    num[:, 1] = 17
    hot = kernels.hot_slots(mask + 2, [5, 6, 17, 4100 & mask])
    out = np.empty((3000, 6), np.int32)
    kernels.locate(cat, num, mask, hot.lookup, out, NO_ORIGIN)
    position = {int(s): h for h, s in enumerate(hot.slots)}

    def where(h):
        slot = int(h) & mask
        return -1 - position[slot] if slot in position else slot

    mixed = 0
    for r in range(3000):
        located = [where(h) for h in cat[r]]
        # categorical features (value 1): hot ones first, then cold, each in column order
        assert list(out[r, :4]) == [t for t in located if t < 0] + [t for t in located if t >= 0]
        mixed += located != list(out[r, :4])
        # numeric features keep their columns' places (their values are given by column)
        assert list(out[r, 4:]) == [where(h) for h in num[r]]
    assert mixed > 100  # the test saw rows that needed reordering


def test_with_one_thread_locate_keeps_every_feature_in_column_order(rng):
    mask = (1 << 12) - 1
    cat, num = hashes(rng, 500, 4), hashes(rng, 500, 2)
    out = np.empty((500, 6), np.int32)
    kernels.locate(cat, num, mask, kernels.hot_slots(mask + 2).lookup, out, NO_ORIGIN)
    assert (out == (np.concatenate([cat, num], axis=1) & mask)).all()


def run_kernel(chunks, hot, blocks, shared, table_rows, lr=0.1, fold=kernels.FOLD_ROWS, refresh=64):
    table = kernels.new_table(table_rows - 1)
    clock = table.view(np.int64)
    private, taken = kernels.private_state(blocks, hot)
    loss = np.zeros((blocks, 4))
    step = 0
    for slots, values, labels in chunks:
        kernels.train_chunk(slots, values, labels, np.ones(len(labels), np.float32), np.zeros(0, np.uint8), table,
                            clock, np.int64(step), lr, 0.0, 0.0, 1e-8, blocks, loss, hot.slots, private, taken,
                            shared, hot.fold_ends, fold, refresh, NO_ORIGIN, NO_NEW)
        step += len(labels)
    kernels.fold_views(table, clock, hot.slots, private, taken, shared, np.int64(step), lr, 0.0, 0.0, 1e-8)
    return table


def planted_chunks(rng, hot, bits, chunks=4, rows=4000):
    """Chunks whose rows carry hot slots 1..5 and random cold slots, labels from a planted model."""
    mask = (1 << bits) - 1
    truth = rng.normal(0, 1, mask + 1)
    out = []
    for _ in range(chunks):
        cat = rng.integers(0, mask + 1, (rows, 6)).astype(np.uint32)
        cat[:, 0] = rng.integers(1, 6, rows)
        slots = np.empty((rows, 6), np.int32)
        kernels.locate(cat, np.zeros((rows, 0), np.uint32), mask, hot.lookup, slots, NO_ORIGIN)
        z = truth[cat].sum(axis=1) * 0.5
        labels = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float32)
        out.append((slots, np.zeros((rows, 0), np.float32), labels))
    return out


def test_one_block_with_views_is_the_sequential_update_bit_for_bit(rng):
    bits = 10
    hot = kernels.hot_slots((1 << bits) + 1, [1, 2, 3, 4, 5])
    plain = kernels.hot_slots((1 << bits) + 1)
    chunks = planted_chunks(rng, hot, bits)
    # the same rows, every slot in the table (as one thread learns)
    flat = [(np.where(s < 0, hot.slots[np.maximum(-1 - s, 0)], s).astype(np.int32), v, y) for s, v, y in chunks]
    a = run_kernel(chunks, hot, 1, False, (1 << bits) + 1, fold=3)
    b = run_kernel(flat, plain, 1, False, (1 << bits) + 1)
    assert np.array_equal(a, b)


def test_views_folded_by_sums_of_changes_reach_the_sequential_quality(rng):
    """Four blocks learning hot slots in views (folded every few updates) end near one block."""
    bits = 10
    rows = (1 << bits) + 1
    hot = kernels.hot_slots(rows, [1, 2, 3, 4, 5])
    chunks = planted_chunks(rng, hot, bits, chunks=6)
    one = run_kernel(chunks, hot, 1, False, rows)
    four = run_kernel(chunks, hot, 4, True, rows, fold=8)
    hot_rows = hot.slots
    np.testing.assert_allclose(four[hot_rows, kernels.WEIGHT], one[hot_rows, kernels.WEIGHT], atol=0.15)
    # every update counted once: the accumulators of the hot slots agree closely
    np.testing.assert_allclose(four[hot_rows[1:], kernels.ACCUMULATOR], one[hot_rows[1:], kernels.ACCUMULATOR],
                               rtol=0.1)


def test_views_reach_the_table_every_few_rows_the_rarer_the_slot_the_later(rng):
    """A thread hands its view of a hot slot back every FOLD_ROWS * 2^c rows, c by how often rows
    write the slot, so other threads see about the same number of its updates late; a slot too
    rare for any period waits for the refresh."""
    bits, fold = 10, 8
    rows = (1 << bits) + 1
    hot = kernels.hot_slots(rows, [1, 2, 3, 4, 5], shares=[0.6, 0.6, 0.2, 0.2, 1e-3])
    every = {0: fold, 1: fold, 2: fold, 3: 4 * fold, 4: 4 * fold}  # rows between folds, by position
    assert hot.fold_ends.tolist()[:3] == [3, 3, 5]
    (slots, values, labels), = planted_chunks(rng, hot, bits, chunks=1)
    table = kernels.new_table(rows - 1)
    private, taken = kernels.private_state(2, hot)
    kernels.train_chunk(slots, values, labels, np.ones(len(labels), np.float32), np.zeros(0, np.uint8), table,
                        table.view(np.int64), np.int64(10**11), 0.1, 0.0, 0.0, 1e-8, 2, np.zeros((2, 4)), hot.slots,
                        private, taken, True, hot.fold_ends, fold, 10**9, NO_ORIGIN, NO_NEW)  # late in a run: no refresh in reach
    for b in range(2):
        waiting = private[b, :, kernels._G] - private[b, :, kernels._G0]  # G learned since the last fold
        for h, most in every.items():  # each row adds at most 1 to G (|p - y| < 1)
            assert 0 <= waiting[h] <= most, (b, h, waiting[h])
        assert waiting[5] > 0 and table[5, kernels.ACCUMULATOR] == 0.0  # slot 5: not yet handed back
    assert table[rows - 1, kernels.ACCUMULATOR] > 0.9 * (len(labels) - 2 * fold) * 0.1  # the bias: most of it there


def test_views_are_taken_again_after_a_quarter_of_the_rows_seen_so_far(rng):
    """Early in a run each block refreshes all its views after 1/4 of its share of the rows seen,
    decided at each refresh: within a first chunk the period grows with the rows (a period fixed
    at the chunk's first step refreshed every 256 rows through the whole chunk), up to the longest."""
    bits = 10
    rows = (1 << bits) + 1
    hot = kernels.hot_slots(rows, [1, 2, 3, 4, 5])
    (slots, values, labels), = planted_chunks(rng, hot, bits, chunks=1, rows=32000)
    for longest, expected in ((10**9, [(16000 * 8 // 9) // 8, (32000 * 8 // 9) // 8]), (1000, [1000, 1000])):
        table = kernels.new_table(rows - 1)
        private, taken = kernels.private_state(2, hot)
        kernels.train_chunk(slots, values, labels, np.ones(len(labels), np.float32), np.zeros(0, np.uint8), table,
                            table.view(np.int64), np.int64(0), 0.1, 0.0, 0.0, 1e-8, 2, np.zeros((2, 4)), hot.slots,
                            private, taken, True, hot.fold_ends, kernels.FOLD_ROWS, longest, NO_ORIGIN, NO_NEW)
        for b in range(2):  # the last refresh came after 8/9 of the block's last row's step or later
            assert expected[b] <= taken[b, kernels._PERIOD] <= max(expected[b], (16000 * (b + 1)) // 8), (longest, b)
        assert kernels.refresh_period(0, 2, longest) == min(256, longest)


def test_views_are_handed_back_before_the_model_is_read(rng):
    """Training with several threads leaves no update behind in a view: the model's G of every
    slot counts every row's gradient. (A tiny rate keeps every prediction at 1/2, so each row adds
    1/4 to each categorical slot it has, whatever the order; Hogwild's races may lose a few. Without
    new-value features: each thread sees a value's first sighting in its own views.)"""
    table = small_table(rng, n=3000, with_nulls=False)
    one = fastada.train(table, label="label", bits=8, threads=1, chunk_rows=500, lr=1e-7, new_values=False)
    two = fastada.train(table, label="label", bits=8, threads=2, chunk_rows=500, lr=1e-7, new_values=False)
    assert two.summary["threads"] == 2
    np.testing.assert_allclose(two.accumulators, one.accumulators, rtol=1e-2, atol=1e-3)


def test_new_value_features_learn_in_views_and_reach_the_table(rng):
    """Several threads learn the new-value slots in their views (first sightings are frequent
    early on) and hand them back: each value's first sighting counts once, or once a thread that
    met it before the others' views showed it. (A tiny rate: each such row adds 1/4 to G.)"""
    import naive
    table = small_table(rng, n=3000, with_nulls=False)
    one = fastada.train(table, label="label", bits=12, threads=1, chunk_rows=500, lr=1e-7)
    two = fastada.train(table, label="label", bits=12, threads=2, chunk_rows=500, lr=1e-7)
    new = [h & (one.spec.slots - 1) for h in naive.new_value_hashes(one.spec)]
    assert len(new) == 3  # the word and code columns, the count column's buckets
    for slot in new:
        assert one.accumulators[slot] > 0
        assert one.accumulators[slot] * 0.99 <= two.accumulators[slot] <= 2 * one.accumulators[slot] + 1e-6


def test_a_first_sighting_is_credited_to_its_own_column_when_hot_features_come_first(rng):
    """With views, a row's hot features are listed first (kernels.locate): a new value of the
    first column, listed after the second column's hot one, still teaches the first column's
    new-value feature. (A tiny rate: each first sighting adds 1/4 to that slot's G.)"""
    import naive
    n = 4000
    table = pa.table({"label": (rng.random(n) < 0.3).astype(np.int8),
                      "ad": [f"ad{i}" for i in range(n)],               # every value new: cold
                      "site": [f"s{i % 3}" for i in range(n)]})         # three values: hot
    model = fastada.train(table, label="label", categorical=["ad", "site"], bits=20, threads=2, lr=1e-7,
                          chunk_rows=1000)
    new_ad, new_site = (h & (model.spec.slots - 1) for h in naive.new_value_hashes(model.spec))
    assert model.accumulators[new_ad] == pytest.approx(n / 4, rel=0.02)
    assert model.accumulators[new_site] <= 3 * 2 / 4 + 1e-6  # each site's first sighting, once a thread


@pytest.mark.parametrize("cores,read,learn,expected", [
    (2, 1.0e6, 2.5e6, (1, 2)),      # reading is slower: one learner, the rest read
    (16, 1.5e6, 3.0e6, (5, 12)),    # 5 learn 15M rows/s, 11 read 16.5M (+1: a learner waits on memory)
    (16, 3.0e6, 3.0e6, (8, 9)),
    (16, 1e5, 1e7, (1, 16)),
    (64, 1.0e7, 1.0e6, (58, 7)),
    (1, 1.0e6, 1.0e6, (1, 1)),
    (2, 2.7e6, 1.3e5, (2, 1)),      # FFM: one reader keeps both cores learning
    (16, 2.7e6, 1.3e5, (16, 1)),
])
def test_the_automatic_split_balances_reading_and_learning(cores, read, learn, expected):
    assert split_cores(cores, read, learn) == expected


def test_auto_threads_says_what_it_chose_in_the_summary(rng):
    table = small_table(rng, n=2000)
    model = fastada.train(table, label="label", bits=10)  # threads="auto", the default
    split = model.summary["split"]
    assert split["learners"] >= 1 and split["readers"] >= 1
    assert model.summary["threads"] == split["learners"]


@pytest.mark.parametrize("learner,cores,learners", [("ffm", 2, 2), ("ffm", 4, "several")])
def test_auto_gives_ffm_both_cores_of_two_and_splits_more_by_the_measured_rates(tmp_path, rng, learner, cores,
                                                                                 learners):
    """FFM learns a row of many fields far slower than one reader reads it: on 2 cores both
    learn and one reads; on more, the measured rates split them."""
    import subprocess
    import sys
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "d.parquet"
    n = 20_000
    columns = {"label": rng.integers(0, 2, n).astype(np.int8)}
    for j in range(30):  # 30 fields: 435 pairs a row
        columns[f"c{j}"] = pa.array([f"v{v}" for v in rng.integers(0, 50, n)])
    pq.write_table(pa.table(columns), path, row_group_size=5_000)
    code = ("import json, fastada\n"
            f"m = fastada.train({str(path)!r}, label='label', bits=12, learner={learner!r}, chunk_rows=2000)\n"
            "print(json.dumps(m.summary['split']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_NUM_THREADS": str(cores)})
    assert done.returncode == 0, done.stderr
    split = json.loads(done.stdout.strip().splitlines()[-1])
    assert split["cores"] == cores, split
    if learners == "several":
        assert 2 <= split["learners"] <= cores and split["readers"] == cores - split["learners"] + 1, split
    else:
        assert split["learners"] == learners and split["readers"] == (cores if learners == 1 else 1), split


def test_a_heavy_learner_on_fewer_threads_than_cores_reads_on_the_cores_it_leaves(rng):
    """The linear learner waits on reading: one reader more than the cores it leaves. FFM reads
    far faster than it learns: a reader more would take turns with it on its core."""
    table = small_table(rng, n=500)
    cores = os.cpu_count() or 1
    for learner, extra in (("adagrad", 1), ("ffm", 0)):
        model = fastada.train(table, label="label", bits=10, learner=learner, threads=1, factor_bits=6)
        assert model.summary["readers"] == max(1, cores - 1 + extra), learner


@pytest.mark.parametrize("mode", ["blend", "steps", "average"])
def test_combining_learners_changes_equals_the_numpy_reference(rng, mode):
    """kernels.combine_changes (what the Dask coordinator runs) against the formulas in NumPy."""
    slots = 1000
    table = kernels.new_table(slots)
    table[:, kernels.WEIGHT] = rng.normal(0, 1, slots + 1)
    table[:, kernels.ACCUMULATOR] = rng.uniform(0, 5, slots + 1)
    clock = table.view(np.int64)
    before = table.copy()
    parts = []
    for _ in range(3):  # three learners, each changing 300 distinct slots (many shared)
        index = np.sort(rng.choice(slots + 1, 300, replace=False)).astype(np.uint32)
        g = before[index, kernels.ACCUMULATOR] + rng.uniform(0, 2, 300).astype(np.float32)
        w = before[index, kernels.WEIGHT] + rng.normal(0, 0.5, 300).astype(np.float32)
        parts.append((index, w.astype(np.float32), g.astype(np.float32), rng.integers(0, 10**6, 300)))
    index, weight, accum, clocks = (np.concatenate(a) for a in zip(*parts))
    position = np.full(slots + 1, -1, np.int32)
    n = index.size
    out = np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.int64)
    count = kernels.combine_changes(index, weight, accum, clocks, table, clock, position,
                                    ["blend", "steps", "average"].index(mode), *out)
    assert (position == -1).all()
    got = np.sort(out[0][:count])
    expected_slots, where = np.unique(index, return_inverse=True)
    assert np.array_equal(got, expected_slots) and count == expected_slots.size
    g0 = before[expected_slots, kernels.ACCUMULATOR].astype(np.float64)
    w0 = before[expected_slots, kernels.WEIGHT].astype(np.float64)
    w, a = weight.astype(np.float64), accum.astype(np.float64)
    g = g0 + np.bincount(where, a - g0[where])
    average = np.bincount(where, a * w) / np.bincount(where, a)
    steps = w0 + np.bincount(where, (w - w0[where]) * np.sqrt(a / g[where]))
    expected = {"average": average, "steps": steps, "blend": g0 / g * steps + (1 - g0 / g) * average}[mode]
    np.testing.assert_allclose(table[expected_slots, kernels.WEIGHT], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table[expected_slots, kernels.ACCUMULATOR], g, rtol=1e-6)
    latest = np.zeros(expected_slots.size, np.int64)
    np.maximum.at(latest, where, clocks)
    assert np.array_equal(clock[expected_slots, kernels.CLOCK], latest)
    untouched = np.setdiff1d(np.arange(slots + 1), expected_slots)
    assert np.array_equal(table[untouched], before[untouched])


def test_a_slot_one_learner_changed_keeps_its_values_exactly(rng):
    table = kernels.new_table(100)
    table[:, kernels.ACCUMULATOR] = 1.0
    index = np.array([3, 7], np.uint32)
    weight, accum = np.array([0.25, -1.5], np.float32), np.array([1.75, 2.5], np.float32)
    out = np.empty(2, np.int64), np.empty(2, np.float32), np.empty(2, np.float32), np.empty(0, np.int64)
    for mode in range(3):
        kernels.combine_changes(index, weight, accum, np.zeros(0, np.int64), table, table.view(np.int64),
                                np.full(101, -1, np.int32), mode, *out)
        assert table[3, kernels.WEIGHT] == np.float32(0.25) and table[7, kernels.ACCUMULATOR] == np.float32(2.5)
