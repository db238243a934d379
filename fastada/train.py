"""The driver: composes the reader, the featurizer, the kernels and the model.

It owns what the kernels must not know: column roles, epochs and shuffling, the global step
clock, threads, progress, and turning kernel status codes into errors. Reading and hashing the
next chunk run on a background thread while the current chunk is learned (both release the GIL);
only this thread calls the parallel kernels.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import threading
import time
from typing import Callable, Iterator, Sequence

import numba
import numpy as np

from . import checkpoint, kernels, learners
from .config import FastadaError, FeatureSpec, LearnConfig, RunConfig, UnreadableData
from .features import FeatureBlock, Featurizer
from .model import Model, atomic_write
from .reader import DataSet
from .roles import roles_line
from .score import calibrating_shift, evaluate_model
from .stream import _string_columns, check_data, read_ahead, read_workers, set_threads


# A model this large (1 GiB as a file) that dwarfs its data is said to be so.
LARGE_MODEL_SLOTS = 1 << 27


def memory_needed(bits: int, features: int, chunk_rows: int, readers: int, best_copy: bool,
                  race: bool = False) -> int:
    """Bytes a training run holds at its peak: the slot table (16 bytes a slot), the model built
    from it (8), the best model's copy for early stopping (8), and the chunks in flight (two a reader
    and two learning: hashes, values, located slots, their column positions and Arrow's columns,
    ~18 bytes a feature);
    with lr="auto", the race's tables and rows."""
    slots = (1 << bits) + 1
    need = slots * (16 + 8 + (8 if best_copy else 0)) + (2 * readers + 2) * chunk_rows * (18 * features + 64)
    if race:
        need += len(RACE_RATES) * 16 * ((1 << min(bits, RACE_BITS)) + 1) + RACE_ROWS * (8 * features + 64)
    return need


def memory_available() -> int | None:
    """Bytes this process may still take: the kernel's MemAvailable, or less under an address-space
    limit (ulimit -v). None where neither can be read."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
            room = max(0, limit - used)
            available = room if available is None else min(available, room)
    except (OSError, ValueError, StopIteration, ImportError):
        pass
    return available


def check_memory(bits: int, features: int, chunk_rows: int, readers: int, best_copy: bool,
                 race: bool = False, extra: int = 0, extra_what: str = "", extra_advice: str = "") -> None:
    """Refuse, before anything is allocated, a run that cannot fit in memory, saying what it needs,
    what there is, and the largest --bits that fits. ``extra``: bytes of a learner's own arrays
    (``extra_what``, made smaller as ``extra_advice`` says), which --bits does not size."""
    available = memory_available()
    need = memory_needed(bits, features, chunk_rows, readers, best_copy, race) + extra
    if available is None or need <= available:
        return
    fits = [b for b in range(bits - 1, 0, -1)
            if memory_needed(b, features, chunk_rows, readers, best_copy, race) + extra <= available]
    advice = f"use --bits {fits[0]} or less" if fits else "free memory or lower --chunk-rows"
    if extra:
        advice += f" (or {extra_advice}: {extra_what} takes {_gib(extra)})"
    raise FastadaError(f"--bits {bits} needs about {_gib(need)} of memory (a 2^{bits}-slot table at 16 bytes a slot, "
                       f"the model built from it{', the best model kept for early stopping' if best_copy else ''}"
                       f"{', the learning-rate race' if race else ''}{', ' + extra_what if extra else ''}, "
                       f"chunks in flight) but {_gib(available)} is available; {advice}")


def fitting_bits(features: int) -> int:
    """Bits that give ``features`` distinct features few collisions (slots >= 8 x features)."""
    return max(10, int(8 * max(features, 1) - 1).bit_length())


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def split_cores(cores: int, read_rate: float, learn_rate: float) -> tuple[int, int]:
    """(learners, readers) for ``cores`` when one thread reads and hashes ``read_rate`` rows/s and
    one learns ``learn_rate``: learners take the share of the cores that balances the two,
    L * learn_rate = (cores - L) * read_rate, rounded and at least 1; the readers are the rest plus
    one (a learner waits on memory more than it computes: on 2 cores, 1 learner + 2 readers beat
    1 + 1 by 16%). Where one reader outpaces every core learning, all learn and one reads."""
    if cores <= 1:
        return 1, 1
    if read_rate >= cores * learn_rate:  # one reader keeps every core learning (FFM): all learn
        return cores, 1
    learners = int(round(cores * read_rate / (read_rate + learn_rate)))
    learners = max(1, min(cores - 1, learners))
    return learners, cores - learners + 1


@dataclasses.dataclass
class Progress:
    """What a progress callback receives after each chunk."""

    epoch: int
    rows: int
    seconds: float
    progressive_logloss: float
    total_rows: int


class Stopped(FastadaError):
    """Training stopped on request (a signal) after writing a checkpoint where one was asked for."""


@dataclasses.dataclass
class _State:
    """Where training is and what it has measured: with the slot table, the whole training state.

    The position (epoch, unit_pos, row) says which chunk comes next: row ``row`` of the
    ``unit_pos``-th row group in the epoch's order. ``step`` counts rows passed through learning
    (learned and held out), the clock of lazy regularisation.
    """

    epoch: int = 0
    unit_pos: int = 0
    row: int = 0
    step: int = 0
    train_loss: float = 0.0          # progressive loss of learned rows, whole run
    train_weight: float = 0.0
    epoch_loss: list = dataclasses.field(default_factory=list)  # [loss, weight] of learned rows, by epoch
    interval: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # since last evaluation
    next_eval: int = 0               # step at which the next periodic evaluation is due
    seconds: float = 0.0             # training time before this process
    history: list = dataclasses.field(default_factory=list)
    best: float | None = None        # best validation logloss so far
    best_rows: int = 0
    since_best: int = 0
    stopped_early: bool = False
    bad_rows: int = 0                # rows learned with weight 0 (bad label or weight; skip mode)
    skipped_rows: int = 0            # rows of row groups that could not be read (skip mode)
    skipped_row_groups: int = 0
    label_kinds: list = dataclasses.field(default_factory=list)  # negatives seen so far: -1 and/or 0
    lr: float | None = None          # the learning rate (of the first epoch): given, or raced
    lr_race: dict | None = None      # how lr="auto" chose it
    factor_lr: float | None = None   # FM, FFM: the factors' rate: given, or raced
    factor_lr_race: dict | None = None  # how factor_lr="auto" chose it
    epochs: int | None = None        # epochs to learn, if the race chose fewer than LearnConfig.epochs
    read_retries: int = 0            # reads retried on Dask workers (the network or the store failed)
    pieces_epoch: int = -1           # distributed runs: the epoch whose pieces ``pieces_done`` lists,
    pieces_done: list = dataclasses.field(default_factory=list)  # as [unit position, first row] (combined)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def start_numba() -> None:
    """Set Numba up on a thread (:func:`kernels.ready`) while the caller reads the data's roles:
    that reading mostly releases the GIL, so part of Numba's 0.2-0.3 s of set-up is hidden."""
    threading.Thread(target=kernels.ready, name="fastada-numba", daemon=True).start()


def fit(dataset: DataSet, spec: FeatureSpec, learn: LearnConfig, run: RunConfig | None = None, *,
        valid: DataSet | None = None, on_chunk: Callable[[Progress], None] | None = None,
        on_evaluation: Callable[[dict], None] | None = None, on_note: Callable[[str], None] | None = None,
        stop: threading.Event | None = None, roles: dict | None = None, init: Model | None = None) -> Model:
    """Train a model on ``dataset``: ``learn.epochs`` passes of Hogwild lazy Adagrad.

    ``run`` adds periodic evaluation (on ``valid`` and/or the holdout), early stopping that keeps
    the best model, checkpoints and resuming. ``on_evaluation`` receives each evaluation record,
    ``on_note`` one-line remarks (a resumed checkpoint, a skipped damaged one); setting ``stop``
    ends the run after the current chunk with a checkpoint, raising :class:`Stopped`. ``roles``
    (from :func:`roles.resolve_roles`) is said in a note once the run starts and kept in the
    model's summary. ``init``: a model of the same spec to continue (see :func:`fastada.train`).
    """
    return _Training(dataset, spec, learn, run or RunConfig(), valid, on_chunk, on_evaluation,
                     on_note or (lambda text: None), stop, roles, init).run()


class _Training:
    """One training run: the slot table and :class:`_State`, and what happens at each chunk,
    evaluation, epoch end and checkpoint. Everything that decides the model's bits is a function of
    the table, the state and the data, so a run resumed from a checkpoint continues exactly."""

    distributed = False  # a run whose epochs are learned by Dask workers (fastada.distributed)

    def __init__(self, dataset, spec, learn, run, valid, on_chunk, on_evaluation, note, stop, roles=None, init=None):
        if dataset.num_rows == 0:
            raise FastadaError(f"{dataset.name(0)}: the data set has no rows")
        if run.early_stop and valid is None and not learn.holdout_every:
            raise FastadaError("early stopping needs validation data (--valid) or a holdout (--holdout-every)")
        check_data(dataset, spec)
        if valid is not None:
            check_data(valid, spec)
        self.dataset, self.spec, self.learn, self.run_config, self.valid = dataset, spec, learn, run, valid
        self.on_chunk, self.on_evaluation, self.note, self.stop = on_chunk, on_evaluation, note, stop
        # threads: learners now; max_threads: the most there can be (what views and scratch are
        # sized for); readers[0]: reader threads allowed to take work (auto lowers it once measured)
        cores = numba.config.NUMBA_NUM_THREADS
        # auto on 2 cores needs no measuring: a second learner pays only if reading were 2x faster
        # than learning (split_cores), which only a heavy learner's is (FFM: 20x); it takes both
        # cores and one reader
        self.skip = learn.bad_rows == "skip"
        self.learner = learners.make(learn, spec, Featurizer(spec, self.skip))
        self.auto = learn.threads == "auto" and cores > 2
        both = learn.threads == "auto" and cores == 2 and self.learner.heavy
        self.max_threads = cores if self.auto or both else set_threads(1 if learn.threads == "auto" else learn.threads)
        self.threads = set_threads(1) if self.auto else self.max_threads
        self.readers = [cores if self.auto else 1 if both else read_workers(self.threads, self.learner.heavy)]
        self.split: dict | None = None
        self.roles = roles
        if learn.threads == "auto" and not self.auto:
            self.split = {"cores": cores, "learners": self.threads, "readers": self.readers[0]}
        self.featurizers = [Featurizer(spec, self.skip) for _ in range(self.readers[0])]
        self.columns = self.featurizers[0].columns
        # the hashed chunks of whole row groups, kept for the later epochs (_plan_keeping)
        self.kept: dict[tuple[int, int], list] = {}
        self.kept_bytes = self.keep_room = 0
        self.kept_lock = threading.Lock()
        self.dictionary = _string_columns(dataset, spec)
        self.mask = np.uint32(spec.slots - 1)
        self.new_hashes = self.featurizers[0].new_hashes  # (none without spec.new_values)
        self.block_loss = np.zeros((self.max_threads, 4), dtype=np.float64)
        self.sequential_chunks = 0  # chunks learned by one block (the first; with auto, until measured)
        self.hot = self.private = None  # kernels.HotSlots and the threads' views of them (_choose_hot)
        self.arrays = self.best_arrays = None  # the learner's own arrays beside the table (and early stopping's copy)
        if self.learner.describe():
            note(self.learner.describe())
        self.regularise = (learn.l1 > 0 or learn.l2 > 0) and self.learner.lazy_regularisation
        self.unit_start = dict(zip(dataset.units, np.cumsum([0] + [u.rows for u in dataset.units]).tolist()))
        # (all_epochs only when set: checkpoints written before it existed still resume)
        identity = {"spec": spec.to_dict(), "learn": {k: v for k, v in learn.to_dict().items()
                                                      if k != "threads" and (k != "all_epochs" or v)},
                    "data": dataset.fingerprint(), "valid": valid.fingerprint() if valid is not None else None,
                    "eval_every_rows": run.eval_every_rows, "early_stop": run.early_stop,
                    "distributed": self.distributed}
        self.identity = json.loads(json.dumps(identity))  # as a checkpoint gives it back (lists, not tuples)
        for problem in dataset.unreadable:
            note(f"skipped an unreadable file: {problem}")
        features = self.featurizers[0].k_cat + self.featurizers[0].k_num
        passing = self.learner.passing_bytes(self.max_threads)
        # (the factors' race, before training, keeps a copy of the factor rows its rows touch)
        race_copy = (self.learner.factor_rows_bytes(min(FACTOR_RACE_ROWS, dataset.num_rows) * features)
                     if self.learner.factored and learn.factor_lr == "auto" else 0)
        copied = ("" if not max(passing, race_copy)
                  else f" (copied once, with room for {self.max_threads} learner threads' views)" if passing >= race_copy
                  else " (and a copy of the rows the race of its rate touches)")
        check_memory(spec.bits, features, learn.chunk_rows, self.readers[0], run.early_stop > 0, learn.lr == "auto",
                     extra=self.learner.state_bytes() * (2 if run.early_stop else 1) + max(passing, race_copy),
                     extra_what=self.learner.state_what + copied,
                     extra_advice=self.learner.state_advice + (" or use fewer --threads" if passing else ""))
        if spec.slots >= LARGE_MODEL_SLOTS and spec.slots > 16 * dataset.num_rows * max(1, features):
            note(f"2^{spec.bits} slots for at most {dataset.num_rows * features:,} distinct features: training "
                 f"holds {_gib(16 * spec.slots)} of table and a model loads as {_gib(4 * spec.slots)} of weights "
                 f"(its file is written sparse); --bits {fitting_bits(dataset.num_rows * features)} holds them "
                 f"with few collisions")
        self.state = _State(next_eval=run.eval_every_rows)
        self.table = self.best_table = None
        if run.resume:
            self._resume()
        elif run.checkpoint_dir is not None and checkpoint.existing(run.checkpoint_dir):
            # a folder holds one run's checkpoints: a new run would mix its own with them (and
            # the newest-K pruning would delete its own first, as the older run's count more rows)
            found = checkpoint.existing(run.checkpoint_dir)
            raise FastadaError(f"--checkpoint-dir {run.checkpoint_dir} holds another run's checkpoints ({len(found)}, "
                               f"newest {os.path.basename(found[-1])}): continue that run with --resume, or give "
                               f"this one a folder of its own")
        if self.table is None and init is not None:
            self._continue(init)
        self._untouched = False  # the table as new_table made it: the races' tables may lie in it
        self._scratch_rows = 0  # (rows of it the races wrote, zeroed again after them)
        if self.table is None:
            self.table = kernels.new_table(spec.slots, learn.initial_accumulator)
            self._untouched = True
        if self.arrays is None:
            self.arrays = self.learner.new_arrays()
        if self.table.shape != (spec.slots + 1, kernels.SLOT_WIDTH):
            raise FastadaError(f"checkpoint table has shape {self.table.shape}, "
                               f"expected {(spec.slots + 1, kernels.SLOT_WIDTH)}")
        self.clock = self.table.view(np.int64)
        self.log = _JsonLog(run.log_json, self.state.history) if run.log_json else None
        self._race_rows = None  # (the races' rows, read by the first that needs them)
        self.begun = time.perf_counter()
        self.last_checkpoint = (self.state.step, self.begun)

    def _continue(self, init: Model) -> None:
        """Start from ``init``'s weights and accumulators (settled: every slot's regularisation is
        paid up to its last step, so this run's clock starts at 0 for all of them) and, with
        lr="auto", its learning rate."""
        learn = self.learn
        if not self.learner.continuable or init.learn.get("learner", "adagrad") != learn.learner:
            raise FastadaError(f"init: only an adagrad model can be continued by an adagrad run (the model's learner: "
                               f"{init.learn.get('learner', 'adagrad')}, this run's: {learn.learner}); the others "
                               f"keep their whole state (FTRL's z and n, factor accumulators) only in checkpoints: "
                               f"continue them with --resume")
        if init.spec != self.spec:
            raise FastadaError("init: the model was trained with other columns, bits or hash seed than this run's")
        if init.accumulators is None:
            raise FastadaError("init: the model has no accumulators (was it loaded from a file without them?)")
        self.table = kernels.new_table(self.spec.slots)
        self.table[:, kernels.WEIGHT] = init.weights
        self.table[:, kernels.ACCUMULATOR] = init.accumulators
        if learn.negative_rate < 1:  # the model's bias is at the data's odds; this run learns at its sampled odds
            self.table[-1, kernels.WEIGHT] -= np.float32(math.log(learn.negative_rate))
        if learn.lr == "auto" and init.summary.get("lr"):
            self.state.lr = float(init.summary["lr"])
            self.state.lr_race = {"continued": True, "lr": self.state.lr}
            self.note(f"lr auto: {self.state.lr:.3g}, the continued model's rate (--lr fixes it)")

    def _resume(self) -> None:
        found, skipped = checkpoint.newest(self.run_config.checkpoint_dir)
        for reason in skipped:
            self.note(f"skipped a damaged checkpoint: {reason}")
        if found is None:
            self.note(f"no checkpoint in {self.run_config.checkpoint_dir}: starting from the beginning")
            return
        _check_identity(found.path, found.state.get("identity", {}), self.identity)
        try:
            self.state = _State(**found.state["progress"])
            self.table = found.arrays["table"]
            # the learner's own arrays under their names, early stopping's copies as best_<name>
            self.arrays = {n: a for n, a in found.arrays.items() if n not in ("table", "best") and not n.startswith("best_")}
            self.best_arrays = {n[len("best_"):]: a for n, a in found.arrays.items() if n.startswith("best_")} or None
        except (KeyError, TypeError) as e:
            raise FastadaError(f"{found.path}: a checkpoint this fastada cannot resume "
                               f"({type(e).__name__}: {e}); was it written by another version?") from None
        self.best_table = found.arrays.get("best")
        self.note(f"resumed from {found.path}: epoch {self.state.epoch + 1}, {self.state.step:,} rows seen")

    # -- the run -------------------------------------------------------------------------------

    @property
    def epochs(self) -> int:
        """Epochs this run learns: ``learn.epochs``, or fewer where lr="auto"'s race found that
        more would predict held-out rows worse (see :meth:`_pick_rate`)."""
        return self.state.epochs or self.learn.epochs

    def run(self) -> Model:
        state, learn = self.state, self.learn
        if self.roles:
            self.note(roles_line(self.roles))
        news = int((self.new_hashes >= 0).sum())
        if news and state.step == 0:
            self.note(f"new-value features: {news} (one for each categorical column, numeric bucket and cross: "
                      f"values never learned score with what first sightings were worth; --no-new-values)")
        if state.lr is None:
            self._pick_rate()
        if self.learner.factored:
            self._pick_factor_rate()
        self._race_rows = None  # (the races are over: their rows go)
        self._choose_hot()
        self._plan_keeping()
        while state.epoch < self.epochs and not state.stopped_early:
            self._epoch(state.epoch)
            if state.stopped_early:
                break
            if self.stop is not None and self.stop.is_set():
                self._stop()
            self._evaluate("epoch", state.epoch)
            self._settle(state.epoch)  # the next epoch learns at another rate (or not at all)
            state.epoch, state.unit_pos, state.row = state.epoch + 1, 0, 0
            if self._checkpoint_due(epoch_ended=True) or (
                    self.run_config.checkpoint_dir is not None and state.epoch == self.epochs):
                self._save_checkpoint()
        self.kept = {}  # (the epochs are over)
        if state.stopped_early and self.run_config.checkpoint_dir is not None:
            self._save_checkpoint()
        if state.step == 0:
            raise FastadaError(f"{self.dataset.name(0)}: no rows could be read "
                               f"({state.skipped_row_groups} row groups skipped as unreadable)")
        if state.train_weight == 0:
            raise FastadaError(f"{self.dataset.name(0)}: no row was learned: {state.bad_rows:,} of {state.step:,} rows "
                               f"had a bad label or weight (skipped), the rest weight 0 or held out; no model written")
        self._settle(min(state.epoch, self.epochs - 1))
        if not np.isfinite(self.table[:, kernels.WEIGHT]).all():
            raise FastadaError(f"training diverged (non-finite weights); lower --lr (now {state.lr:g})")
        return self._model()

    def _epoch(self, epoch: int) -> None:
        """Learn the rest of ``epoch`` from the state's position, chunk by chunk, until its end,
        early stopping or a stop request."""
        state, learn, run = self.state, self.learn, self.run_config
        units = self._units(epoch)
        tasks = [(epoch, pos, units[pos], state.row if pos == state.unit_pos else 0)
                 for pos in range(state.unit_pos, len(units))]
        for block, where, pos, row in read_ahead(tasks, self._blocks, len(self.featurizers), limit=self.readers):
            unit = units[pos]
            if block is None:  # skip mode: the rest of this row group cannot be read
                self.note(f"skipped {unit.rows - row:,} rows: {where}")
                state.skipped_rows += unit.rows - row
                state.skipped_row_groups += 1
                state.unit_pos, state.row = pos + 1, 0
                continue
            state.bad_rows += block.bad_rows
            self._check_labels(block.label_kinds, where)
            if block.rows:
                self._learn(block, where, epoch)
            state.unit_pos, state.row = pos, row + block.rows
            if state.row >= unit.rows:
                state.unit_pos, state.row = pos + 1, 0
            if self.on_chunk is not None:
                self.on_chunk(Progress(epoch + 1, state.step, self._seconds(), self._progressive_logloss(),
                                       self.dataset.num_rows * self.epochs))
            if run.eval_every_rows and state.step >= state.next_eval:
                while state.next_eval <= state.step:
                    state.next_eval += run.eval_every_rows
                if state.unit_pos < len(units):  # else the end-of-epoch evaluation follows now
                    self._evaluate("rows", epoch)
            if state.stopped_early or (self.stop is not None and self.stop.is_set()):
                return
            if self._checkpoint_due(epoch_ended=False):
                self._save_checkpoint()

    def _check_labels(self, kinds: frozenset, where: str) -> None:
        """-1 and 0 negatives must not mix in one data set: checked here, on the chunks in stream
        order (a reader thread sees only its own row groups), and kept in checkpoints."""
        seen = set(self.state.label_kinds) | kinds
        if len(seen) > 1:
            raise FastadaError(f"{where}: label column {self.spec.label!r} mixes -1 and 0 labels; "
                               f"use either 0/1 or -1/1 throughout the data set")
        self.state.label_kinds = sorted(seen)

    def _units(self, epoch: int) -> list:
        """The row groups in ``epoch``'s order."""
        units = list(self.dataset.units)
        if self.learn.shuffle:
            units = [units[i] for i in np.random.default_rng([self.learn.seed, epoch]).permutation(len(units))]
        return units

    def _blocks(self, task, worker: int, where_to=None) -> Iterator:
        """The chunks of one row group from ``row`` on, hashed by this worker's featurizer, with
        their held-out rows marked and (with shuffling) their rows in the chunk's own random order:
        all the per-chunk work but learning runs here, on the reader threads. In skip mode, an
        unreadable rest of the row group gives ``(None, error, pos, row)``. A task of five items
        ends at row ``stop`` (a multiple of the chunk size: a piece of a row group). A row group
        read whole in an epoch before the last is kept hashed, while there is room
        (:meth:`_plan_keeping`), and later epochs take its chunks from memory."""
        epoch, pos, unit, row, *stop = task
        stop = stop[0] if stop else unit.rows
        key = (unit.file, unit.row_group)
        kept = self.kept.get(key) if where_to is None and row == 0 else None
        if kept is not None:
            for block, where, at in kept:
                if at >= stop:
                    return
                yield self._arrange(block, epoch, unit, at, where_to), where, pos, at
            return
        keeping = ([] if where_to is None and row == 0 and stop == unit.rows and epoch < self.epochs - 1
                   and self.kept_bytes < self.keep_room else None)
        try:
            for chunk in self.dataset.unit_chunks(unit, self.columns, self.learn.chunk_rows, self.dictionary, row):
                if chunk.row >= stop:
                    return
                block = self.featurizers[worker](chunk.batch, chunk.where, first_row=chunk.row)
                if keeping is not None:
                    keeping = self._keep(keeping, block, chunk.where, chunk.row)
                yield self._arrange(block, epoch, unit, chunk.row, where_to), chunk.where, pos, chunk.row
                row = chunk.row + chunk.batch.num_rows
        except UnreadableData as e:
            if not self.skip:
                raise
            yield None, str(e), pos, row
            return
        if keeping is not None:
            self.kept[key] = keeping

    def _keep(self, keeping: list, block: FeatureBlock, where: str, row: int) -> list | None:
        """``keeping`` with ``block`` added, or None (and its bytes given back) where the room for
        kept chunks has run out."""
        size = _block_bytes(block)
        with self.kept_lock:
            if self.kept_bytes + size > self.keep_room:
                self.kept_bytes -= sum(_block_bytes(b) for b, _, _ in keeping)
                self.keep_room = self.kept_bytes  # (full: nothing more is kept this run)
                return None
            self.kept_bytes += size
        keeping.append((block, where, row))
        return keeping

    def _plan_keeping(self) -> None:
        """With several epochs, the room (bytes) for the first epoch's hashed chunks, which the
        later epochs then learn from without reading and hashing again: ``cache_mb``, or a quarter
        of the memory available now. Said when it is used."""
        self.keep_room = 0
        if self.epochs - self.state.epoch < 2:
            return
        wanted = self.run_config.cache_mb
        available = memory_available()
        room = int(wanted * 2**20) if wanted is not None else (available // 4 if available is not None else 0)
        if room <= 0:
            return
        self.keep_room = room
        featurizer = self.featurizers[0]
        per_row = 4 * featurizer.k_cat + 8 * featurizer.k_num + 8  # (hashes, numeric values, label, weight)
        whole = self.dataset.num_rows * per_row
        later = (f"epoch {self.epochs}" if self.epochs == self.state.epoch + 2
                 else f"epochs {self.state.epoch + 2}-{self.epochs}")
        self.note(f"hashed chunks kept in memory for {later}: about {_gib(whole)}"
                  + (f" (room for {_gib(room)}: {min(1.0, room / whole):.0%} of the rows)" if whole > room else "")
                  + " (--cache-mb 0: none, read and hash every epoch)")

    def _arrange(self, block: FeatureBlock, epoch: int, unit, row: int, where_to=None) -> "_Chunk":
        """``block`` ready to learn: each feature's slot or hot position (:func:`kernels.locate`),
        weights filled in, held-out rows marked, rows shuffled. ``where_to``: (mask, hot slots)
        to locate with instead of the run's."""
        learn = self.learn
        if where_to is None:
            where_to = (self.mask, self.hot if self.threads > 1 or self.split is None else self.bias_only)
        mask, hot = where_to
        n = block.rows
        first = self.unit_start[unit] + row  # the chunk's first row's place in the data set
        cat, num, values, labels = block.cat, block.num, block.num_values, block.labels
        weights = block.weights if block.weights is not None else np.ones(n, np.float32)
        held = _NO_HOLDOUT
        if learn.holdout_every:
            held = ((np.arange(first, first + n) % learn.holdout_every) == learn.holdout_every - 1).view(np.uint8)
        if learn.negative_rate < 1:  # the same rows every epoch: drawn from their place in the data set
            keep = (labels > 0.5) | (row_uniforms(learn.seed, first, n) < learn.negative_rate)
            cat, num, values, labels, weights = cat[keep], num[keep], values[keep], labels[keep], weights[keep]
            if held.size:
                held = held[keep]
            n = int(keep.sum())
        slots = np.empty((n, cat.shape[1] + num.shape[1]), dtype=np.int32)
        news = self.new_hashes.size > 0
        # (the located order is the columns' without hot slots: no origins needed then)
        origin = np.empty((n, cat.shape[1]) if news and hot.lookup.size else (0, 0), dtype=np.int16)
        kernels.locate(cat, num, mask, hot.lookup, slots, origin)
        new_where = kernels.new_value_places(self.new_hashes, np.int64(mask), hot.lookup) if news else _NO_NEW_VALUES
        if learn.shuffle:
            order = np.random.default_rng([learn.seed, epoch, unit.file, unit.row_group, row]).permutation(n)
            slots, values, labels, weights = slots[order], values[order], labels[order], weights[order]
            if held.size:
                held = held[order]
            if origin.size:
                origin = origin[order]
        return _Chunk(slots, values, labels, weights, held, block.bad_rows, block.label_kinds, origin, new_where)

    def _split_cores(self, learn_rate: float) -> None:
        """threads="auto": learners and readers from the measured rates, said in a note and kept
        in the model's summary."""
        cores = self.max_threads
        read_rate = self.read_rate or learn_rate
        learners, readers = split_cores(cores, read_rate, learn_rate)
        self.threads = set_threads(learners)
        self.readers[0] = readers
        self.split = {"cores": cores, "learners": learners, "readers": readers,
                      "read_rows_per_second_per_thread": round(read_rate),
                      "learn_rows_per_second_per_thread": round(learn_rate)}
        self.note(f"threads auto: {learners} learning, {readers} reading and hashing on {cores} cores "
                  f"(measured per thread: reading {read_rate:,.0f} rows/s, learning {learn_rate:,.0f} rows/s)")

    def _pick_rate(self) -> None:
        """The learning rate: as given, or (lr="auto") raced. Each of :data:`RACE_RATES` learns,
        on a table of its own, one half of the first :func:`race_rows` rows (in the first epoch's
        order) as many times as training will learn each row (``epochs`` passes, reshuffled as
        training reshuffles), then the other half once, each of its rows scored before it is
        learned (progressive validation); then again with the halves' roles swapped (two folds:
        every row is scored once, which halves the noise where clicks are rare). With several
        epochs the other half is also scored so after each earlier pass and then forgotten (the
        table rows it wrote put back), so the race also says after how many passes the model
        stops predicting unseen rows better; unless :attr:`LearnConfig.all_epochs` or early
        stopping is asked, training then learns that many epochs (Vowpal Wabbit's passes stop
        early on a holdout by default; this holds no rows out). The best rate is refined between
        its neighbours (a parabola through the three in log rate), and then, for one pass of a
        linear learner (Adagrad, FTRL), raised to the largest rate whose loss on that parabola is
        within the race's noise (the standard error of the loss difference between the best rate
        and the next, over eight parts of each scored half): training learns more rows than the
        race does, and the best rate grows with them (:func:`refine_rate`)."""
        learn, state = self.learn, self.state
        if learn.lr != "auto":
            state.lr = float(learn.lr)
            return
        start = time.perf_counter()
        data = self._race_data()
        if data is None:  # nothing readable: the epoch will say so
            state.lr = RACE_RATES[len(RACE_RATES) // 2]
            return
        slots, values, labels, weights, bits, where_to = data
        rows = len(labels)
        half = rows // 2
        new_where = (kernels.new_value_places(self.new_hashes, np.int64(where_to[0]), where_to[1].lookup)
                     if self.new_hashes.size else _NO_NEW_VALUES)
        # two folds: each half learned, the other scored (twice the rows scored: rare clicks make
        # one half's score noisy); a large data set's race is a small prefix of it, so this is cheap
        folds = [race_schedule(rows, learn.epochs, learn.shuffle, learn.seed, swap) for swap in (False, True)[:RACE_FOLDS]]
        epochs = learn.epochs
        # epochs chosen only where the race reads the whole data set: a prefix overfits in fewer
        # passes than the whole does (on 500k rows the race's 50k chose 1 epoch of 3 for FTRL, and
        # 3 epochs predicted better)
        may_stop = (epochs > 1 and not learn.all_epochs and not self.run_config.early_stop
                    and rows >= self.dataset.num_rows)
        cores = numba.config.NUMBA_NUM_THREADS if learn.threads == "auto" else self.max_threads
        # the table rows a fold's scored half writes (and the bias): saved before it is scored
        # after an epoch that is not the last, and put back after, so the next pass learns on
        # without it
        touched = [_rows_written(slots[scored], 1 << bits) if may_stop else None for _, scored in folds]
        found: dict[float, list[float]] = {}  # rate: the race's logloss after 1, 2, ... epochs
        segments: dict[float, np.ndarray] = {}  # rate: (loss, weight) of each part of the scored rows, by epochs
        # one table for each candidate running at once, handed on to the next: new memory is cleared
        # by the system page by page, which on a virtual machine that gives freed memory back to
        # its host cost more than the race's learning (seven fresh 64 MiB tables: 0.4 s of system time)
        workers = max(1, min(len(RACE_RATES), cores))
        free_tables: list[np.ndarray] = self._scratch_tables(workers, bits)

        def race(rate: float) -> list[float]:  # one candidate on a table of its own; the kernel releases the GIL
            try:
                table = free_tables.pop()
            except IndexError:
                table = np.zeros(((1 << bits) + 1, kernels.SLOT_WIDTH), dtype=np.float32)
            try:
                return race_on(table, rate)
            finally:
                free_tables.append(table)

        def race_on(table: np.ndarray, rate: float) -> list[float]:
            scores = np.zeros((epochs, 2), dtype=np.float64)
            parts = np.zeros((epochs, len(folds) * RACE_SEGMENTS, 2), dtype=np.float64)
            for fold, ((passes, scored), rows_written) in enumerate(zip(folds, touched)):
                table[:] = 0.0
                if learn.initial_accumulator:
                    table[:, kernels.ACCUMULATOR] = learn.initial_accumulator
                saved = np.empty((0 if rows_written is None else len(rows_written), kernels.SLOT_WIDTH), np.float32)
                places = np.arange(len(saved))
                step = 0
                for e, order in enumerate(passes):
                    score = np.zeros(2, dtype=np.float64)
                    self.learner.race(slots, values, labels, weights, order, table, rate, step, len(order), score,
                                      new_where)
                    step += len(order)
                    if e < epochs - 1 and not may_stop:
                        continue  # (only the last pass's score counts)
                    if e < epochs - 1:
                        kernels.copy_rows(table, rows_written, saved, places)
                    at = step  # (the scored half in consecutive parts, each part's score kept: the race's noise)
                    for i, part in enumerate(np.array_split(scored, RACE_SEGMENTS)):
                        self.learner.race(slots, values, labels, weights, part, table, rate, at, 0, score, new_where)
                        parts[e, fold * RACE_SEGMENTS + i] = score
                        at += len(part)
                    if e < epochs - 1:
                        kernels.copy_rows(saved, places, table, rows_written)
                    scores[e] += parts[e, fold * RACE_SEGMENTS:(fold + 1) * RACE_SEGMENTS].sum(axis=0)
            segments[rate] = parts
            return [float(loss / weight) if weight > 0 and math.isfinite(loss) else math.inf for loss, weight in scores]

        def best_epochs(rate: float) -> int:  # index into found[rate]: the last, or the best if training may stop
            return min(range(epochs), key=lambda e: found[rate][e]) if may_stop else epochs - 1

        def loss_of(rate: float) -> float:
            return found[rate][best_epochs(rate)]

        candidates = list(RACE_RATES)
        try:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for _ in range(1 + RACE_WIDENINGS):
                    for rate, loss in zip(candidates, pool.map(race, candidates)):
                        found[rate] = loss
                    rates = sorted(found)
                    best = min(range(len(rates)), key=lambda i: (loss_of(rates[i]), i))
                    # the best at an end of the grid: the best may lie beyond it; race two more there
                    step = math.sqrt(10.0)
                    if best == len(rates) - 1 and rates[-1] < RACE_LIMITS[1]:
                        candidates = [rates[-1] * step, rates[-1] * step * step]
                    elif best == 0 and rates[0] > RACE_LIMITS[0]:
                        candidates = [rates[0] / step, rates[0] / step / step]
                    else:
                        break
        finally:
            self._clear_scratch()  # (a new table's rows again)
        RATES = [float(f"{r:.3g}") for r in rates]
        chosen = best_epochs(rates[best])
        losses = [found[r][chosen] for r in rates]  # at the best rate's number of epochs
        finite = [x for x in losses if math.isfinite(x)]
        scored = int(np.count_nonzero(weights[half:] if RACE_FOLDS == 1 else weights))
        if scored < RACE_MIN_SCORED or not finite or max(finite) - min(finite) <= 1e-9 * abs(min(finite)):
            # a handful of rows, or rates that score alike: the race cannot tell them apart
            state.lr = RACE_FALLBACK
            why = (f"only {scored} rows to score" if scored < RACE_MIN_SCORED else "every rate scored alike")
        else:
            # one pass of a linear learner only: with several, the race weighs the rate against the
            # passes, and a rate raised alone overfits them (2M generated rows, 3 epochs: Adagrad
            # 0.0000-0.0004 and FFM 0.0007-0.0012 worse test logloss; frappe's 5 epochs 1.3%, Criteo's
            # 0.7%); FM's and FFM's factors' rate is raced at this rate next (frappe's FFM, 1 pass: 2.1%
            # worse with the linear rate leaned)
            # ... and only where the race's rows hold RACE_LEAN_LABELS clicks (and non-clicks): its
            # noise is a standard error over RACE_SEGMENTS * 2 parts, which a handful of clicks a
            # part does not give (2M generated rows at 0.01% and 0.03% clicks, 20 and 60 clicks in
            # the race: leaning made test logloss 15% and 7.5% worse than the best fixed rate)
            leans = (epochs == 1 and not self.learner.factored
                     and label_counts(labels, weights).min() >= RACE_LEAN_LABELS)
            noise = race_noise(segments, rates, best, chosen) if leans else 0.0
            state.lr = refine_rate(RATES, losses, best, noise)
            vertex = refine_rate(RATES, losses, best)
            why = None
            if may_stop and chosen + 1 < epochs:
                state.epochs = chosen + 1
        state.lr_race = {"rows": rows, "folds": len(folds), "learned_rows": half, "passes": epochs,
                         "scored_rows": rows if len(folds) == 2 else rows - half,
                         "bits": bits,
                         "logloss": {f"{r:g}": _finite_or_none(x) for r, x in zip(RATES, losses)},
                         "best": RATES[best], "lr": state.lr, "seconds": round(time.perf_counter() - start, 3)}
        if why is None:
            state.lr_race["vertex"] = vertex  # (the parabola's lowest point, before leaning up within the noise)
            state.lr_race["noise"] = _finite_or_none(noise)
        if epochs > 1:
            state.lr_race["epochs"] = self.epochs
        if may_stop:
            state.lr_race["logloss_by_epochs"] = {f"{R:g}": [_finite_or_none(x) for x in found[r]]
                                                  for R, r in zip(RATES, rates)}
        shown = ", ".join(f"{r:g}: {x:.5f}" for r, x in zip(RATES, losses))
        if why is not None:
            state.lr_race["fallback"] = why
            self.note(f"lr auto: {state.lr:g}, the fallback ({why}: the race cannot choose; --lr fixes it)")
            return
        lean = (f"; lowest at {vertex:.3g}, and training learns more rows than the race: the largest rate within "
                f"the race's noise ({noise:.2g})" if state.lr > vertex else "")
        if epochs == 1:
            self.note(f"lr auto: {state.lr:.3g} (logloss on rows 1-{rows:,}, each scored before it is learned, each half "
                      f"after the other was learned, at every rate: {shown}{lean}; --lr fixes it)")
            return
        self.note(f"lr auto: {state.lr:.3g} (logloss on rows 1-{rows:,}, each scored before it is learned, each half "
                  f"after the other was learned {chosen + 1} times, at every rate: {shown}{lean}; --lr fixes it)")
        if state.epochs is not None:
            trend = ", ".join(f"{x:.5f}" for x in found[rates[best]])
            self.note(f"epochs: {state.epochs} of {epochs} (the race's held-out logloss at {RATES[best]:g} after "
                      f"1..{epochs} passes: {trend}; more passes predicted unseen rows worse; "
                      f"--all-epochs learns all {epochs})")

    def _scratch_tables(self, count: int, bits: int) -> list[np.ndarray]:
        """Up to ``count`` zeroed tables of 2^``bits`` slots for the races, in the run's own table
        while nothing has learned in it (its memory is then touched once, by the races, instead of
        once by them and again by training: 1M rows from a cold start, 0.1-0.2 s); none otherwise.
        :meth:`_clear_scratch` makes them a new table's rows again."""
        if not self._untouched:
            return []
        size = (1 << bits) + 1
        n = min(count, self.table.shape[0] // size)
        self._scratch_rows = max(self._scratch_rows, n * size)
        return [self.table[i * size:(i + 1) * size] for i in range(n)]

    def _clear_scratch(self) -> None:
        if self._scratch_rows:
            rows = self.table[:self._scratch_rows]
            rows[:] = 0.0
            if self.learn.initial_accumulator:
                rows[:, kernels.ACCUMULATOR] = self.learn.initial_accumulator
            self._scratch_rows = 0

    def _race_data(self):
        """The rows the races learn, read once: (slots, values, labels, weights, bits, where_to)
        of the first :func:`race_rows` rows in the first epoch's order (more, up to
        :data:`RACE_ROWS`, where those hold fewer than :data:`RACE_MIN_LABELS` clicks or
        non-clicks), located in a table of 2^bits slots (held-out rows weigh 0); None if nothing
        could be read."""
        if self._race_rows is not None:
            return self._race_rows or None
        bits = min(self.spec.bits, RACE_BITS)
        where_to = (np.uint32((1 << bits) - 1), kernels.hot_slots((1 << bits) + 1))
        wanted = race_rows(self.dataset.num_rows)
        most = max(wanted, min(self.dataset.num_rows, RACE_ROWS))
        parts, rows, labelled = [], 0, np.zeros(2, dtype=np.int64)  # (rows learned from: clicks, not)
        for chunk, where, pos, row in self._race_chunks(wanted, where_to):
            if chunk is None or not chunk.rows:
                continue
            weights = chunk.weights if not chunk.held.size else chunk.weights * (chunk.held == 0)
            limit = min(chunk.rows, most - rows)
            take = min(limit, max(wanted - rows, 0))
            counts = labelled + label_counts(chunk.labels[:take], weights[:take])
            if rows + take >= wanted and counts.min() < RACE_MIN_LABELS and take < limit:
                # reading on for clicks (or non-clicks), in order, only as far as the rarer label needs
                take += rows_for_labels(chunk.labels[take:limit], weights[take:limit], counts, RACE_MIN_LABELS)
                counts = labelled + label_counts(chunk.labels[:take], weights[:take])
            parts.append((chunk.slots[:take], chunk.num_values[:take], chunk.labels[:take], weights[:take]))
            rows += take
            labelled = counts
            if rows >= wanted and (labelled.min() >= RACE_MIN_LABELS or rows >= most):
                break
        if not rows:
            self._race_rows = ()
            return None
        width = max(p[1].shape[1] for p in parts)  # list columns: chunks of different widths
        parts = [(np.pad(sl, ((0, 0), (0, width - v.shape[1]))), np.pad(v, ((0, 0), (0, width - v.shape[1]))), y, w)
                 for sl, v, y, w in parts]  # (padding: slot 0 with value 0, which learns nothing)
        self._race_rows = tuple(np.ascontiguousarray(np.concatenate(a)) for a in zip(*parts)) + (bits, where_to)
        return self._race_rows

    def _pick_factor_rate(self) -> None:
        """The factors' rate (FM, FFM): as given, or (factor_lr="auto") raced as the linear rate
        is, at the linear rate chosen: each of :data:`FACTOR_RACE_RATES` learns one half of the
        first :data:`FACTOR_RACE_ROWS` of the race's rows as many times as training will, on the
        run's own fresh factor table (the rows it writes put back after each candidate) and a
        linear table of its own, then scores the other half, each row before it is learned; two
        folds. The best is refined between its neighbours. Factors learn O(features^2) a row, so
        this race reads fewer rows than the linear one, and its candidates run one after another."""
        learn, state, learner = self.learn, self.state, self.learner
        if learn.factor_lr != "auto":
            state.factor_lr = float(learn.factor_lr)
        data = self._race_data() if state.factor_lr is None else None
        if data is None:
            if state.factor_lr is None:  # nothing readable: the epoch will say so
                state.factor_lr = FACTOR_RACE_FALLBACK
            learner.factor_rate = state.factor_lr
            return
        start = time.perf_counter()
        slots, values, labels, weights, bits, _ = data
        rows = min(len(labels), FACTOR_RACE_ROWS)
        slots, values, labels, weights = slots[:rows], values[:rows], labels[:rows], weights[:rows]
        factors = self.arrays["factors"]
        written = _rows_written(slots.astype(np.int64) & int(learner.fmask), int(learner.fmask) + 1)[:-1]
        fresh = factors[written]  # (the run's own start: put back after every candidate)
        scratch = self._scratch_tables(1, bits) if not learn.initial_accumulator else []  # (all zeros)
        table = scratch[0] if scratch else np.zeros(((1 << bits) + 1, kernels.SLOT_WIDTH), dtype=np.float32)
        linear = _rows_written(slots, 1 << bits)  # (the rows to zero again: fewer than the table's)
        folds = [race_schedule(rows, self.epochs, learn.shuffle, learn.seed, swap) for swap in (False, True)]
        found: dict[float, float] = {}

        def race(rate: float) -> float:
            loss = weight = 0.0
            for passes, scored in folds:
                table[linear] = 0.0
                factors[written] = fresh
                fold_loss, fold_weight = learner.race_factors(slots, values, labels, weights, passes, scored, table,
                                                              factors, state.lr, rate)
                loss, weight = loss + fold_loss, weight + fold_weight
            return loss / weight if weight > 0 and math.isfinite(loss) else math.inf

        try:
            candidates = list(FACTOR_RACE_RATES)
            for _ in range(1 + RACE_WIDENINGS):
                found.update((rate, race(rate)) for rate in candidates)
                rates = sorted(found)
                best = min(range(len(rates)), key=lambda i: (found[rates[i]], i))
                if best == len(rates) - 1 and rates[-1] * FACTOR_RACE_STEP <= FACTOR_RACE_LIMITS[1]:
                    candidates = [rates[-1] * FACTOR_RACE_STEP]
                elif best == 0 and rates[0] / FACTOR_RACE_STEP >= FACTOR_RACE_LIMITS[0]:
                    candidates = [rates[0] / FACTOR_RACE_STEP]
                else:
                    break
        finally:
            factors[written] = fresh
            self._clear_scratch()
        losses = [found[r] for r in rates]
        shown = ", ".join(f"{r:.3g}: {x:.5f}" for r, x in zip(rates, losses))
        scored = int(np.count_nonzero(weights))
        finite = [x for x in losses if math.isfinite(x)]
        if scored < RACE_MIN_SCORED or not finite or max(finite) - min(finite) <= 1e-9 * abs(min(finite)):
            state.factor_lr = FACTOR_RACE_FALLBACK
            why = f"only {scored} rows to score" if scored < RACE_MIN_SCORED else "every rate scored alike"
            self.note(f"factor lr auto: {state.factor_lr:g}, the fallback ({why}: the race cannot choose; "
                      f"--factor-lr fixes it)")
        else:
            state.factor_lr = refine_rate(rates, losses, best)
            self.note(f"factor lr auto: {state.factor_lr:.3g} (logloss on rows 1-{rows:,} at the linear rate "
                      f"{state.lr:.3g}, each scored before it is learned, each half after the other was learned "
                      f"{self.epochs} time{'s' * (self.epochs > 1)}, at every rate: {shown}; --factor-lr fixes it)")
        state.factor_lr_race = {"rows": rows, "scored_rows": sum(len(scored) for _, scored in folds),
                                "passes": self.epochs,
                                "logloss": {f"{r:.3g}": _finite_or_none(x) for r, x in zip(rates, losses)},
                                "lr": state.factor_lr, "seconds": round(time.perf_counter() - start, 3)}
        learner.factor_rate = state.factor_lr

    def _race_chunks(self, wanted: int, where_to) -> Iterator:
        """The first epoch's chunks as the race reads them: first those that hold its ``wanted``
        rows and no more (the readers would otherwise take the cores from the race with chunks it
        never learns), then, only if it asks for them (a row group unreadable, negatives
        downsampled), the rest in order."""
        units = self._units(0)
        first, ahead = [], 0
        for pos, unit in enumerate(units):
            if ahead >= wanted:
                break
            chunks = -(-min(unit.rows, wanted - ahead) // self.learn.chunk_rows)
            first.append((0, pos, unit, 0, min(unit.rows, chunks * self.learn.chunk_rows)))
            ahead += unit.rows
        rest = [(0, pos, unit, 0) for pos, unit in enumerate(units) if pos >= len(first)]
        if first and first[-1][4] < first[-1][2].rows:
            rest.insert(0, first[-1][:3] + (first[-1][4],))
        for tasks in (first, rest):
            yield from read_ahead(tasks, lambda task, worker: self._blocks(task, worker, where_to),
                                  len(self.featurizers))

    def _choose_hot(self) -> None:
        """The hot slots, counted on the first chunk of the data (see :mod:`kernels`); with one
        thread only the bias (a sequential learner has nothing to gain). Reading and hashing that
        chunk on one thread is also timed, for threads="auto"."""
        rows = self.table.shape[0]
        self.hot = self.bias_only = kernels.hot_slots(rows)  # a lone learner looks nothing up
        self.read_rate = None
        if self.max_threads > 1:
            unit = self.dataset.units[0]
            try:
                featurizer = Featurizer(self.spec, self.skip)
                start = time.perf_counter()
                chunk = next(self.dataset.unit_chunks(unit, self.columns, kernels.HOT_SAMPLE_ROWS, self.dictionary,
                                                      decode_threads=False), None)
                if chunk is not None:
                    decoded = time.perf_counter()
                    featurizer(chunk.batch.slice(0, 64), chunk.where)  # compiled code loaded, untimed
                    hashing = time.perf_counter()
                    block = featurizer(chunk.batch, chunk.where, first_row=chunk.row)
                    seconds = decoded - start + time.perf_counter() - hashing
                    self.read_rate = block.rows / max(seconds, 1e-9)
                    if self.learner.views:  # (FTRL, FM and FFM choose their own hot slots, in the learner)
                        forced = self.new_hashes[self.new_hashes >= 0] & np.int64(self.mask)
                        self.hot = kernels.choose_hot_slots(block.cat, block.num, int(self.mask), rows, forced=forced)
            except UnreadableData:
                pass  # the epoch will say so (or skip it); the bias alone is hot meanwhile
        self.private, self.taken = kernels.private_state(self.max_threads, self.hot)

    def _learn(self, chunk: "_Chunk", where: str, epoch: int) -> None:
        """One chunk (from :meth:`_arrange`) through the kernel; losses summed."""
        state, learn = self.state, self.learn
        n = chunk.rows
        lr = self._rate(epoch)
        # The first chunk is learned by one thread: Adagrad's first steps are its largest, where
        # Hogwild's delays cost most quality (and with auto, the second is timed on one thread).
        sequential = self.sequential_chunks < (2 if self.auto and self.split is None else 1)
        blocks = 1 if sequential else self.threads
        self.block_loss[:] = 0.0
        start = time.perf_counter()
        status = self.learner.learn_chunk(chunk, self.table, self.clock, state.step, lr, blocks, self.block_loss,
                                          self.arrays, (self.hot, self.private, self.taken, self.max_threads > 1))
        if sequential:
            self.sequential_chunks += 1
            if self.auto and self.split is None and self.sequential_chunks == 2:
                self._split_cores(n / max(time.perf_counter() - start, 1e-9))
        sums = self.block_loss.sum(axis=0)
        if status != kernels.STATUS_OK or sums[0] > DIVERGED_LOSS * sums[1]:
            what = "is no longer finite" if status != kernels.STATUS_OK else \
                f"averages {sums[0] / sums[1]:.3g} nats a row"
            raise FastadaError(f"{where}: training diverged (the progressive loss {what} in the "
                               f"chunk after {state.step:,} rows); lower --lr (now {lr:g})")
        state.step += n
        state.train_loss += float(sums[0])
        state.train_weight += float(sums[1])
        while len(state.epoch_loss) <= epoch:
            state.epoch_loss.append([0.0, 0.0])
        state.epoch_loss[epoch][0] += float(sums[0])
        state.epoch_loss[epoch][1] += float(sums[1])
        state.interval = [x + float(y) for x, y in zip(state.interval, sums)]

    # -- evaluations, checkpoints, the result ------------------------------------------------------

    def _seconds(self) -> float:
        return self.state.seconds + time.perf_counter() - self.begun

    def _rate(self, epoch: int) -> float:
        return self.state.lr * self.learn.lr_decay ** epoch

    def _progressive_logloss(self) -> float:
        """The progressive logloss of the epoch under way (each epoch learns from a better model
        than the last, so their average would say less than the newest)."""
        by_epoch = self._progressive_by_epoch()
        return by_epoch[-1] if by_epoch and by_epoch[-1] is not None else math.nan

    def _progressive_by_epoch(self) -> list:
        return [loss / weight if weight else None for loss, weight in self.state.epoch_loss]

    def _settle(self, epoch: int) -> None:
        """Make the table the whole model: the threads' views of the hot slots handed back and
        every slot's pending regularisation applied, at ``epoch``'s rate, up to now."""
        self._settle_views(epoch)
        if self.regularise:
            learn = self.learn
            kernels.catch_up_all(self.table, self.clock, np.int64(self.state.step), self._rate(epoch),
                                 learn.l1, learn.l2, learn.eps)

    def _settle_views(self, epoch: int | None = None) -> None:
        """Hand the threads' views of the hot slots back to the table (kernels.fold_views)."""
        if self.hot is None or not self.learner.views:
            return
        learn = self.learn
        epoch = min(self.state.epoch, self.epochs - 1) if epoch is None else epoch
        kernels.fold_views(self.table, self.clock, self.hot.slots, self.private, self.taken, self.max_threads > 1,
                           np.int64(self.state.step), self._rate(epoch), learn.l1, learn.l2, learn.eps)

    def _weights(self, table: np.ndarray, epoch: int | None = None) -> np.ndarray:
        """The model's weights (the bias last) from a settled slot table, or from its first two
        fields (early stopping's copy)."""
        learn = self.learn
        epoch = min(self.state.epoch, self.epochs - 1) if epoch is None else epoch
        out = self.learner.weights(table, self._rate(epoch))
        if learn.negative_rate < 1:  # learned on 1 negative in 1/rate: back to the data's odds
            out[-1] += np.float32(math.log(learn.negative_rate))
        return out

    def _evaluate(self, kind: str, epoch: int) -> None:
        state, run = self.state, self.run_config
        self._settle(epoch)
        train_loss, train_weight, held_loss, held_weight = state.interval
        record = {"kind": kind, "epoch": epoch + 1, "rows": state.step, "seconds": round(self._seconds(), 3),
                  "lr": self._rate(epoch), "train_logloss": train_loss / train_weight if train_weight else None}
        if self.learn.holdout_every:
            record["holdout_logloss"] = held_loss / held_weight if held_weight else None
        if self.valid is not None:
            weights = self._weights(self.table, epoch)
            result = evaluate_model(self._scoring_model(weights, self.arrays), self.valid, threads=self.threads,
                                    chunk_rows=self.learn.chunk_rows)
            record.update({f"valid_{k}": _finite_or_none(v) for k, v in result.items() if k != "rows"})
        state.interval = [0.0, 0.0, 0.0, 0.0]
        metric = record.get("valid_logloss", record.get("holdout_logloss"))
        if run.early_stop and metric is not None:
            if state.best is None or metric < state.best:
                state.best, state.best_rows, state.since_best = metric, state.step, 0
                self.best_table = np.array(self.table[:, :2])
                self.best_arrays = {name: np.array(a) for name, a in self.arrays.items()}
            else:
                state.since_best += 1
                state.stopped_early = state.since_best >= run.early_stop
            record["best_logloss"] = state.best
        state.history.append(record)
        if self.log is not None:
            self.log.write(record)
        if self.on_evaluation is not None:
            self.on_evaluation(record)

    def _checkpoint_due(self, epoch_ended: bool) -> bool:
        run = self.run_config
        if run.checkpoint_dir is None:
            return False
        if not run.checkpoint_every_rows and not run.checkpoint_every_seconds:
            return epoch_ended
        rows, at = self.last_checkpoint
        return bool((run.checkpoint_every_rows and self.state.step - rows >= run.checkpoint_every_rows)
                    or (run.checkpoint_every_seconds and time.perf_counter() - at >= run.checkpoint_every_seconds))

    def _save_checkpoint(self) -> None:
        self._settle_views()
        progress = self.state.to_dict()
        progress["seconds"] = self._seconds()
        arrays = {"table": self.table} if self.best_table is None else {"table": self.table, "best": self.best_table}
        arrays.update(self.arrays)
        arrays.update({f"best_{name}": a for name, a in (self.best_arrays or {}).items()})
        checkpoint.save(self.run_config.checkpoint_dir, self.state.step,
                        {"identity": self.identity, "progress": progress}, arrays, self.run_config.keep_checkpoints)
        self.last_checkpoint = (self.state.step, time.perf_counter())

    def _stop(self) -> None:
        """A stop was requested: write a checkpoint where asked, then raise :class:`Stopped`."""
        if self.run_config.checkpoint_dir is not None:
            self._save_checkpoint()
            raise Stopped(f"stopped after {self.state.step:,} rows; checkpoint written to "
                          f"{self.run_config.checkpoint_dir} (continue with --resume)")
        raise Stopped(f"stopped after {self.state.step:,} rows (no --checkpoint-dir: nothing kept)")

    def _model(self) -> Model:
        state = self.state
        if self.split is None and self.learn.threads == "auto":  # the data ended before it was timed
            self.split = {"cores": self.max_threads, "learners": self.threads, "readers": self.readers[0],
                          "why": "the data ended before reading and learning were timed"}
        seconds = self._seconds()
        kept = self.best_table if self.run_config.early_stop and self.best_table is not None else self.table[:, :2]
        summary = {
            "rows": state.step,
            "epochs": state.epoch if not state.stopped_early else state.epoch + 1,
            "seconds": round(seconds, 3),
            "rows_per_second": round(state.step / seconds) if seconds > 0 else None,
            "progressive_logloss": _finite_or_none(self._progressive_logloss()),  # the last epoch's
            "progressive_logloss_by_epoch": self._progressive_by_epoch(),
            "progressive_logloss_all_epochs": state.train_loss / state.train_weight if state.train_weight else None,
            "learner": self.learn.learner,
            "negative_rate": self.learn.negative_rate,
            "lr": state.lr,
            "lr_race": state.lr_race,
            "roles": self.roles,
            "threads": self.threads,
            "readers": self.readers[0],
            "split": self.split,
            "stopped_early": state.stopped_early,
            "bad_rows": state.bad_rows,
            "skipped_rows": state.skipped_rows,
            "skipped_row_groups": state.skipped_row_groups,
            "skipped_files": len(self.dataset.unreadable),
            "read_retries": self.dataset.retried_reads + self.state.read_retries,
            "evaluations": state.history,
        }
        if self.learner.factored:
            summary["factor_lr"] = state.factor_lr
            summary["factor_lr_race"] = state.factor_lr_race
        if self.run_config.early_stop:
            summary["best_logloss"] = state.best
            summary["best_rows"] = state.best_rows
        weights = self._weights(kept if kept is self.best_table else self.table)
        arrays = self.best_arrays if kept is self.best_table else self.arrays
        if self.learn.negative_rate < 1:
            shift = calibrating_shift(self._scoring_model(weights, arrays), self.dataset, CALIBRATION_ROWS,
                                      threads=self.threads)
            weights[-1] += np.float32(shift)
            summary["calibration_shift"] = shift
        summary.update(self.learner.summary())
        return Model(self.spec, weights, np.ascontiguousarray(kept[:, kernels.ACCUMULATOR]),
                     learn=self.learn.to_dict(), summary=summary, factors=self.learner.model_factors(arrays))

    def _scoring_model(self, weights: np.ndarray, arrays: dict) -> Model:
        """A model of ``weights`` and what the learner keeps of its ``arrays``."""
        return Model(self.spec, weights, factors=self.learner.model_factors(arrays), learn=self.learn.to_dict())


_NO_HOLDOUT = np.zeros(0, dtype=np.uint8)
_NO_NEW_VALUES = np.zeros(0, dtype=np.int64)


@dataclasses.dataclass
class _Chunk:
    """A chunk as the learning kernel takes it (see :func:`kernels.train_chunk`)."""

    slots: np.ndarray
    num_values: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    held: np.ndarray
    bad_rows: int
    label_kinds: frozenset
    origin: np.ndarray     # the column position of each located categorical feature (see kernels.locate)
    new_where: np.ndarray  # where each position's new-value feature learns (kernels.new_value_places)

    @property
    def rows(self) -> int:
        return self.slots.shape[0]

# lr="auto": the rates raced (the winner is refined between its neighbours), the rows they race
# on (all of a data set of up to RACE_ROWS rows; of a larger one a 100th, within RACE_MIN_ROWS and
# RACE_ROWS: the race costs 5 rows learned per row raced, so about 5% of one pass), and the slots
# of each candidate's table.
RACE_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
RACE_WIDENINGS = 3            # times the grid may grow past an end where the best rate sits
RACE_LIMITS = (1e-4, 10.0)    # ... but not past these
RACE_ROWS = 200_000
RACE_MIN_ROWS = 50_000
RACE_MIN_SCORED = 50  # fewer scored rows than this (or rates that score alike): RACE_FALLBACK
# ... and it reads on past race_rows (up to RACE_ROWS) until its rows hold this many clicks and as
# many non-clicks: 50,000 rows at 0.1% clicks hold 50, too few to tell rates apart (2M generated
# rows: the race leaned to 0.022 where 0.01 was best, 5.6% worse test logloss)
RACE_MIN_LABELS = 500
RACE_LEAN_LABELS = 100  # fewer clicks (or non-clicks) in the race's rows: it does not lean (see _pick_rate)
RACE_FALLBACK = 0.05  # the former default: best or within 0.0003 of best on the samples of up to 8k rows
RACE_BITS = 22
RACE_FOLDS = 2  # 2: each half learned, then the other scored (1: only the second half scored)
RACE_SEGMENTS = 8  # parts of each fold's scored half, scored apart to measure the race's noise
# The factors' race (FM, FFM): libffm's eta (0.2) and its neighbours; fewer rows than the linear
# race (a row costs O(features^2)); widened past an end by steps of FACTOR_RACE_STEP, within the
# limits (on real logs the best lay between 0.06 and 1.5)
FACTOR_RACE_RATES = (0.08, 0.2, 0.5, 1.25)
FACTOR_RACE_STEP = 2.5
FACTOR_RACE_LIMITS = (0.005, 5.0)
FACTOR_RACE_ROWS = 20_000
FACTOR_RACE_FALLBACK = 0.2
# A model learned on downsampled negatives has its bias set so that it predicts the clicks of
# this many of the data's first rows (all of them, not only those kept): see score.calibrating_shift.
CALIBRATION_ROWS = 200_000


def row_uniforms(seed: int, first: int, n: int) -> np.ndarray:
    """A uniform number in [0, 1) for each of rows ``first`` .. ``first + n - 1`` of a data set
    (splitmix64 of the row's place and the seed): which rows negative downsampling keeps."""
    x = np.arange(first, first + n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def race_rows(data_rows: int) -> int:
    """Rows the learning-rate race learns from, for a data set of ``data_rows`` rows, at the
    least: where those rows hold fewer than :data:`RACE_MIN_LABELS` clicks (or non-clicks), the
    race reads on for them, up to :data:`RACE_ROWS`."""
    if data_rows <= RACE_ROWS:
        return data_rows
    return max(RACE_MIN_ROWS, min(RACE_ROWS, data_rows // 100))


def label_counts(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(clicks, non-clicks) among the rows that weigh something."""
    counted = weights > 0
    clicks = int(np.count_nonzero(counted & (labels > 0)))
    return np.array([clicks, int(np.count_nonzero(counted)) - clicks], dtype=np.int64)


def rows_for_labels(labels: np.ndarray, weights: np.ndarray, have: np.ndarray, need: int) -> int:
    """How many of these rows, from the first, bring both counts of ``have`` (clicks, non-clicks)
    to ``need``; all of them if they do not."""
    counted = weights > 0
    clicks = np.cumsum(counted & (labels > 0))
    others = np.cumsum(counted & ~(labels > 0))
    enough = np.flatnonzero((have[0] + clicks >= need) & (have[1] + others >= need))
    return int(enough[0]) + 1 if enough.size else len(labels)


def race_schedule(rows: int, epochs: int, shuffle: bool, seed: int, swap: bool = False
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """One fold of the race: the passes over the learned half (the first half of the rows,
    ``epochs`` times, in a new order each time after the first if training shuffles) and the
    scored half (the second). ``swap``: the halves' roles the other way round."""
    half = rows // 2
    learned, scored = (np.arange(half), np.arange(half, rows)) if not swap else (np.arange(half, rows), np.arange(half))
    passes = [learned]
    for e in range(1, epochs):
        passes.append(learned[np.random.default_rng([seed, e, 0x7ACE]).permutation(len(learned))] if shuffle
                      else learned)
    return [p.astype(np.int64) for p in passes], scored.astype(np.int64)


def _block_bytes(block: FeatureBlock) -> int:
    """Memory a hashed chunk holds."""
    return sum(a.nbytes for a in (block.cat, block.num, block.num_values, block.labels, block.weights)
               if a is not None)


def _rows_written(slots: np.ndarray, bias: int) -> np.ndarray:
    """The table rows that learning rows of ``slots`` writes: their slots and the bias."""
    written = np.zeros(bias + 1, dtype=bool)
    written[slots.ravel()] = True
    written[bias] = True
    return np.flatnonzero(written).astype(np.int64)


def refine_rate(rates: Sequence[float], losses: Sequence[float], best: int, noise: float = 0.0) -> float:
    """The rate at the bottom of the parabola (in log rate) through the best raced rate and its
    two neighbours, kept between them: a best rate between two grid points (two near-equal
    losses) is not rounded to one of them. At the end of the grid, or flat: the best rate.

    ``noise`` > 0 (the race's standard error, :func:`race_noise`): the largest rate whose loss on
    the parabola is within ``noise`` of its bottom instead, still kept between the neighbours.
    The race scores models that learned tens of thousands of rows; training learns more, and the
    best rate grows with the rows learned (generated data at 1% clicks: 0.015 for 200,000 rows,
    0.03 for 2M, the race's pick 0.010 for both; the published test days of five real logs
    preferred 1-3x the race's rate), so among the rates the race cannot tell apart the largest is
    the better bet; a race that resolves the losses finely moves little."""
    if not 0 < best < len(rates) - 1 or not all(math.isfinite(losses[i]) for i in (best - 1, best, best + 1)):
        return float(rates[best])
    x0, x1, x2 = (math.log(rates[i]) for i in (best - 1, best, best + 1))
    f0, f1, f2 = (losses[i] for i in (best - 1, best, best + 1))
    denominator = (x1 - x0) * (f1 - f2) - (x1 - x2) * (f1 - f0)
    if denominator == 0:
        return float(rates[best])
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * (f1 - f2) - (x1 - x2) ** 2 * (f1 - f0)) / denominator
    curvature = ((f2 - f1) / (x2 - x1) - (f1 - f0) / (x1 - x0)) / (x2 - x0)  # f = curvature (x - vertex)^2 + c
    if noise > 0 and math.isfinite(noise) and curvature > 0:
        vertex += math.sqrt(noise / curvature)
    return float(f"{math.exp(min(max(vertex, x0), x2)):.3g}")


def race_noise(segments: dict, rates: Sequence[float], best: int, epoch: int) -> float:
    """The standard error of the race's loss difference between the best rate and the next larger
    one, from the parts of the scored rows (``segments[rate][epoch]``: (loss, weight) of each part,
    every rate scoring the same parts): how finely the race tells neighbouring rates apart. 0 where
    there is no larger rate or too few parts."""
    if not 0 <= best < len(rates) - 1:
        return 0.0
    here, there = segments[rates[best]][epoch], segments[rates[best + 1]][epoch]
    scored = (here[:, 1] > 0) & (there[:, 1] > 0)
    if scored.sum() < 4:
        return 0.0
    differences = there[scored, 0] / there[scored, 1] - here[scored, 0] / here[scored, 1]
    if not np.isfinite(differences).all():
        return 0.0
    return float(np.std(differences, ddof=1) / math.sqrt(len(differences)))


# A chunk whose rows lose more than this on average (the true label given probability e^-50)
# is divergence, not learning: a model starts at log 2 = 0.69 nats a row.
DIVERGED_LOSS = 50.0


def _finite_or_none(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _check_identity(path: str, found: dict, expected: dict) -> None:
    """Refuse to resume a checkpoint written for other data, features or settings."""
    names = {"learn": "learning settings", "spec": "features (columns, bits, hash seed, new values)",
             "data": "training data", "valid": "validation data",
             "eval_every_rows": "--eval-every-rows", "early_stop": "--early-stop",
             "distributed": "way of training (on Dask workers or on one machine: --dask)"}
    # a setting added since the checkpoint was written is the one it trained with: its default
    defaults = {"spec": _defaults(FeatureSpec), "learn": _defaults(LearnConfig)}
    found = {key: ({**{k: v for k, v in defaults[key].items() if k not in value and k in expected[key]}, **value}
                   if key in defaults and isinstance(value, dict) else value)
             for key, value in found.items()}
    found.setdefault("distributed", False)  # (written before distributed runs existed)
    for key, what in names.items():
        if found.get(key) != expected[key]:
            detail = ""
            if isinstance(expected[key], dict) and isinstance(found.get(key), dict):
                diffs = [k for k in expected[key] if found[key].get(k) != expected[key][k]]
                if diffs:
                    k = diffs[0]
                    detail = f" ({k}: checkpoint {found[key].get(k)!r}, this run {expected[key][k]!r})"
            raise FastadaError(f"{path}: the checkpoint was written for other {what}{detail}; "
                               f"resume with the original command or use another --checkpoint-dir")


def _defaults(cls) -> dict:
    """A dataclass's fields that have defaults, as its to_dict (through JSON) gives them."""
    return json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(cls)
                                  if f.default is not dataclasses.MISSING}))


class _JsonLog:
    """One JSON object per line per evaluation; a resumed run rewrites what its checkpoint knew."""

    def __init__(self, path: str, history: list):
        atomic_write(path, [(json.dumps(r) + "\n").encode() for r in history])
        self.path = path

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise FastadaError(f"{self.path}: cannot write the log ({e.strerror or e})") from None


