"""The learners behind the one small interface the driver uses.

Each learner's module keeps its state layout and kernels over plain arrays (:mod:`fastada.kernels`
for Adagrad, :mod:`fastada.ftrl`, :mod:`fastada.ffm` for FM and FFM); a :class:`Learner` here
adapts it to the driver: the arrays it keeps beside the slot table, one chunk learned, one rate
raced, the weights and factors a model is made of. The driver (:mod:`fastada.train`) composes
reading, epochs, evaluation and checkpoints around it and never asks which learner runs.
"""

from __future__ import annotations

import numpy as np

from . import ffm, ftrl, kernels
from .config import FeatureSpec, LearnConfig


class Learner:
    """What the driver asks of a learner; the base holds what most share."""

    views = False               # the driver's hot slots and per-thread views (else its own, in its kernel)
    heavy = False               # a row costs far more to learn than to read and hash (FFM: features^2 pairs)
    lazy_regularisation = True  # slots owe L1/L2 steps until touched (kernels.catch_up_all settles them)
    continuable = False         # a model of it can go on learning (train(init=...))
    factored = False            # it has latent factors, with a rate of their own (FM, FFM)
    state_what = ""             # what its own arrays are, and how to make them smaller (for memory errors)
    state_advice = ""

    def __init__(self, learn: LearnConfig, spec: FeatureSpec, featurizer):
        self.learn = learn

    def state_bytes(self) -> int:
        """Memory of the arrays the learner keeps beside the slot table."""
        return 0

    def passing_bytes(self, threads: int) -> int:
        """Memory the learner holds for a moment on top of :meth:`state_bytes` with up to
        ``threads`` learner threads."""
        return 0

    def describe(self) -> str | None:
        """A note on what the learner holds, said before training."""
        return None

    def new_arrays(self) -> dict[str, np.ndarray]:
        """The arrays it keeps beside the slot table, as a run starts (checkpointed with it)."""
        return {}

    def learn_chunk(self, chunk, table, clock, step: int, lr: float, blocks: int, block_loss, arrays: dict,
                    views) -> int:
        """Learn ``chunk`` (rows at steps ``step + 1 ..``) into ``table`` and ``arrays`` with
        ``blocks`` threads; ``views``: (hot slots, private views, taken, shared) for a learner
        with views. Returns a kernel status."""
        raise NotImplementedError

    def race(self, slots, values, labels, weights, schedule, table, rate, step0, score_from, scores,
             new_where) -> None:
        """One candidate rate of the learning-rate race, on a table of its own (see
        :func:`kernels.race_rate`; ``new_where``: its new-value slots, for a learner that has them)."""
        raise NotImplementedError

    def weights(self, table: np.ndarray, lr: float) -> np.ndarray:
        """The model's weights (float32, the bias last) from a settled slot table (or early
        stopping's copy of its first two fields)."""
        return np.array(table[:, kernels.WEIGHT])

    def model_factors(self, arrays: dict) -> np.ndarray | None:
        """What a model keeps of ``arrays`` (None: nothing)."""
        return None

    def summary(self) -> dict:
        """What the model's summary says of the learner."""
        return {}


class Adagrad(Learner):
    """Per-coordinate Adagrad on the slot table (weight, G, clock), lazy L1/L2, hot slots in
    per-thread views: what :func:`kernels.train_chunk` does."""

    views = True
    continuable = True

    def learn_chunk(self, chunk, table, clock, step, lr, blocks, block_loss, arrays, views):
        learn = self.learn
        hot, private, taken, shared = views
        return kernels.train_chunk(chunk.slots, chunk.num_values, chunk.labels, chunk.weights, chunk.held,
                                   table, clock, np.int64(step), lr, learn.l1, learn.l2, learn.eps, blocks,
                                   block_loss, hot.slots, private, taken, shared, hot.fold_ends, kernels.FOLD_ROWS,
                                   kernels.REFRESH_ROWS, chunk.origin, chunk.new_where)

    def race(self, slots, values, labels, weights, schedule, table, rate, step0, score_from, scores, new_where):
        learn = self.learn
        kernels.race_rate(slots, values, labels, weights, schedule, table, rate, learn.l1, learn.l2, learn.eps,
                          np.int64(step0), np.int64(score_from), scores, new_where)


class Ftrl(Learner):
    """FTRL-Proximal (:mod:`fastada.ftrl`): z and n in the slot table; the weight a function of
    them (nothing to catch up); on several threads the bias and hot slots in per-thread views
    that the kernel hands back at the end of each chunk."""

    lazy_regularisation = False

    def __init__(self, learn, spec, featurizer):
        super().__init__(learn, spec, featurizer)
        self.hot = self.private = None  # several threads: the hot slots, the threads' views of them

    def learn_chunk(self, chunk, table, clock, step, lr, blocks, block_loss, arrays, views):
        learn = self.learn
        hot, private = _NO_LINEAR_VIEWS, _NO_PRIVATE
        if blocks > 1:  # (new-value slots forced in: first sightings write them)
            news = chunk.new_where[chunk.new_where >= 0] if chunk.new_where.size else ()
            hot, private = self.hot, self.private = _hot_views(chunk, table, blocks, self.hot, self.private, news)
        return ftrl.train_chunk(chunk.slots, chunk.num_values, chunk.labels, chunk.weights, chunk.held,
                                table, lr, learn.beta, learn.l1, learn.l2, blocks, block_loss, chunk.new_where,
                                hot.slots, hot.lookup, hot.fold_ends, ftrl.FOLD_ROWS, private)

    def race(self, slots, values, labels, weights, schedule, table, rate, step0, score_from, scores, new_where):
        learn = self.learn  # (FTRL has no clock: step0 is not needed)
        ftrl.race_rate(slots, values, labels, weights, schedule, table, rate, learn.beta, learn.l1, learn.l2,
                       np.int64(score_from), scores, new_where)

    def weights(self, table, lr):
        learn = self.learn
        out = np.empty(table.shape[0], dtype=np.float32)
        ftrl.weights(table, lr, learn.beta, learn.l1, learn.l2, out)
        return out


class Factorisation(Adagrad):
    """A factorization machine (``learner="fm"``) or a field-aware one (``"ffm"``) over the Adagrad
    linear model (:mod:`fastada.ffm`): the factor table beside the slot table; the linear part's
    rate is the one raced. On several threads the hot factor slots and the linear part's hot slots
    are learned in per-thread views (the kernel's own)."""

    views = False
    continuable = False
    factored = True
    state_what = "the factor table"
    state_advice = "lower --factor-bits or --factors"

    def __init__(self, learn, spec, featurizer):
        super().__init__(learn, spec, featurizer)
        # the factors' rate: as given, or (factor_lr="auto") set by the driver once raced
        self.factor_rate = None if learn.factor_lr == "auto" else float(learn.factor_lr)
        self.field_aware = learn.learner == "ffm"
        self.heavy = self.field_aware
        # FFM: a vector per feature and field; FM: one per feature (a single field; no field map)
        self.fields = featurizer.fields() if self.field_aware else np.zeros(0, np.int64)
        self.field_count = int(self.fields.max()) + 1 if self.fields.size else 1
        self.factor_bits = min(learn.factor_bits, spec.bits)
        self.fmask = np.int64((1 << self.factor_bits) - 1)
        self.hot = None  # with several threads: the hot factor slots, the table with the
        self.work = self.taken = None  # threads' views of them past its rows, and the views as taken
        self.linear_hot = self.linear_views = None  # ... and the linear part's hot slots, their views

    def state_bytes(self):
        return ffm.factor_bytes(int(self.fmask) + 1, self.field_count, self.learn.factors)

    def passing_bytes(self, threads):
        # on several threads the factor table is copied once, into one with room for the views,
        # and each thread keeps its views and the copies they were taken from
        if threads <= 1:
            return 0
        cap = ffm.hot_cap(self.field_count, self.learn.factors)
        return self.state_bytes() + 2 * threads * ffm.factor_bytes(cap, self.field_count, self.learn.factors)

    def factor_rows_bytes(self, rows: int) -> int:
        """Memory of ``rows`` factor slots' rows (each field's vector and accumulators), at most the
        whole table: what the race of the factors' rate copies to put back."""
        return min(self.state_bytes(), ffm.factor_bytes(rows, self.field_count, self.learn.factors))

    def describe(self):
        fields = f"{self.field_count} field{'s' if self.field_count > 1 else ''}"
        return (f"{self.learn.learner}: {self.learn.factors} factors x {fields} x 2^{self.factor_bits} factor slots: "
                f"{_size(self.state_bytes())} of factors and their accumulators")

    def new_arrays(self):
        learn = self.learn
        return {"factors": ffm.new_factors(int(self.fmask) + 1, self.field_count, learn.factors, learn.seed)}

    def learn_chunk(self, chunk, table, clock, step, lr, blocks, block_loss, arrays, views):
        learn = self.learn
        if blocks > 1:
            factors, hot, taken = self._views(chunk, arrays, blocks)
            linear, private = self.linear_hot, self.linear_views = _hot_views(chunk, table, blocks, self.linear_hot,
                                                                              self.linear_views)
        else:
            factors, hot, taken = arrays["factors"], _NO_VIEWS, _NO_TAKEN
            linear, private = _NO_LINEAR_VIEWS, _NO_PRIVATE
        status = ffm.train_chunk(chunk.slots, chunk.num_values, chunk.labels, chunk.weights, chunk.held,
                                 table, clock, np.int64(step), lr, learn.l1, learn.l2, learn.eps,
                                 factors, self.fields, self.fmask, self.factor_rate, learn.factor_l2,
                                 blocks, block_loss, hot.slots, hot.lookup, hot.fold_ends, kernels.FOLD_ROWS, taken,
                                 linear.slots, linear.lookup, linear.fold_ends, private)
        if hot.count > 1:
            ffm.hand_back_views(factors, taken, hot.slots, self.fmask, blocks)
        return status

    def race_factors(self, slots, values, labels, weights, passes, scored, table, factors, lr: float,
                     factor_rate: float) -> tuple[float, float]:
        """One fold of the factors' rate race, one thread, on the given tables: the rows of each
        of ``passes`` (index arrays, in order) learned, then the rows ``scored`` learned, each
        scored before it is learned. Returns their (weighted loss, weight): inf where learning
        diverged."""
        learn = self.learn
        clock = table.view(np.int64)
        block_loss = np.zeros((1, 4), dtype=np.float64)
        step = 0
        for rows in list(passes) + [scored]:
            block_loss[:] = 0.0
            status = ffm.train_chunk(np.ascontiguousarray(slots[rows]), np.ascontiguousarray(values[rows]),
                                     np.ascontiguousarray(labels[rows]), np.ascontiguousarray(weights[rows]),
                                     _NO_HELD, table, clock, np.int64(step), lr, learn.l1, learn.l2, learn.eps,
                                     factors, self.fields, self.fmask, factor_rate, learn.factor_l2, 1,
                                     block_loss, _NO_VIEWS.slots, _NO_VIEWS.lookup, _NO_VIEWS.fold_ends,
                                     kernels.FOLD_ROWS, _NO_TAKEN, _NO_LINEAR_VIEWS.slots, _NO_LINEAR_VIEWS.lookup,
                                     _NO_LINEAR_VIEWS.fold_ends, _NO_PRIVATE)
            if status != kernels.STATUS_OK:
                return float("inf"), 1.0
            step += len(rows)
        return float(block_loss[0, 0]), float(block_loss[0, 1])

    def _views(self, chunk, arrays, blocks):
        """Several threads: the hot factor slots (counted on the first chunk so learned,
        as the linear learner counts its own), and the factor table with every thread's views of
        them as rows past its own (``arrays["factors"]`` becomes a view of its first rows: what
        checkpoints and the model read)."""
        factors = arrays["factors"]
        slots = int(self.fmask) + 1
        if self.hot is None:
            sample = np.ascontiguousarray(chunk.slots[:kernels.HOT_SAMPLE_ROWS]).view(np.uint32)
            self.hot = kernels.choose_hot_slots(sample, np.zeros((sample.shape[0], 0), np.uint32), int(self.fmask),
                                                slots + 1, share=ffm.HOT_SHARE,
                                                cap=ffm.hot_cap(self.field_count, self.learn.factors))
        rows = slots + blocks * self.hot.count
        if self.work is None or self.work.shape[0] < rows or factors.base is not self.work:
            work = np.empty((max(rows, 0 if self.work is None else self.work.shape[0]),) + factors.shape[1:],
                            np.float32)
            work[:slots] = factors
            self.work = work
            arrays["factors"] = work[:slots]
            self.taken = np.zeros((blocks, self.hot.count) + factors.shape[1:], np.float32)
        return self.work, self.hot, self.taken

    def model_factors(self, arrays):
        factors = arrays.get("factors")
        return None if factors is None else np.ascontiguousarray(factors[:, :, :self.learn.factors])

    def summary(self):
        return {"fields": self.field_count}


_NO_VIEWS = kernels.hot_slots(2)  # (the bias alone: an empty lookup)
_NO_TAKEN = np.zeros((1, 1, 1, 1), np.float32)
_NO_HELD = np.zeros(0, np.uint8)
_NO_LINEAR_VIEWS = kernels.HotSlots(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64))
_NO_PRIVATE = np.zeros((1, 16, 4), np.float32)


def _hot_views(chunk, table, blocks: int, hot, private, forced=()):
    """The slot table's hot slots for a learner whose kernel keeps its own views of them (FTRL,
    FFM's linear part): ``hot``, or if None counted on ``chunk`` (its first rows, as the linear
    learner counts them; ``forced`` hot whatever the count), and ``blocks`` threads' views of
    them: ``private``, or new ones if it has too few. The kernel hands them back at the end of
    each chunk."""
    if hot is None:
        sample = np.ascontiguousarray(chunk.slots[:kernels.HOT_SAMPLE_ROWS]).view(np.uint32)
        hot = kernels.choose_hot_slots(sample, np.zeros((sample.shape[0], 0), np.uint32), table.shape[0] - 2,
                                       table.shape[0], forced=forced)
    if private is None or private.shape[0] < blocks:
        private = kernels.private_state(blocks, hot)[0]
    return hot, private


def make(learn: LearnConfig, spec: FeatureSpec, featurizer) -> Learner:
    """The learner ``learn.learner`` names."""
    kind = {"adagrad": Adagrad, "ftrl": Ftrl, "fm": Factorisation, "ffm": Factorisation}[learn.learner]
    return kind(learn, spec, featurizer)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
