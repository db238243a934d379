"""Training and scoring across machines on Dask (``pip install 'fastada[dask]'``).

The coordinator (the process that calls :func:`fit`) keeps the combined model and the whole run
(:class:`train._Training`: the rate race, evaluation, early stopping, checkpoints, the model file)
and drives *rounds*. In a round every live worker takes the epoch's next *pieces* (row groups, or
parts of one when a row group is longer than a round) up to ``sync_every_rows`` rows, learns them
with the same Hogwild kernels on its own copy of the slot table, and sends back only the slots it
changed: index, weight and Adagrad accumulator (12 bytes a slot; the clock too, 8 more, when
L1/L2 regularise). Per slot, over the workers k that changed it, from the combined values w0, G0
the round started from:

    G       = G0 + sum_k (G_k - G0)                       every worker's squared gradients
    steps   = w0 + sum_k (w_k - w0) sqrt(G_k / G)          each worker's steps, rescaled from the
                                                           accumulator it stepped with to the combined one
    average = sum_k G_k w_k / sum_k G_k                    Vowpal Wabbit AllReduce's adaptive average
    w       = (G0 / G) steps + (1 - G0 / G) average        combine="blend", the default

Summed steps are what one learner would have done with the same rows while each worker's steps
are small next to the slot's history (a mature slot: G0 dominates G); but where each worker's
rows alone take the slot far (a fresh slot, G0 small), every worker moves it to about the same
place and their sum overshoots (by sqrt(K) with K workers), while the average is right. Blending
by the share of the slot's squared gradients that came before the round takes each where it
holds. Measured (README, Distributed; 2 workers, 4M rows): blend 0.0013 above one machine's test
logloss, average 0.0021-0.0032, steps 0.0016-0.0107 depending on the rounds. A slot that one
worker alone changed keeps that worker's values exactly, whatever the rule. Rounds grow from one
chunk to ``sync_every_rows`` rows a worker (see :meth:`_Coordinator._round_rows`). The combined
values of every changed slot travel to every worker with its next round: applying them makes
each copy the combined model again (the slots a worker changed are among them).

Faults: a piece counts as done only once the round that learned it has been combined. A worker
that dies mid-round sends nothing, so its pieces go back to the front of the queue and are
learned again, by the workers left, from the combined model: no row is lost and none is counted
twice. A worker that joins (or is restarted) gets the whole combined table before its first
round. Checkpoints are written between rounds: the combined table and the pieces of the epoch
already done. The data set must be files or URIs that the coordinator and every worker can read.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
import uuid

import numpy as np

from . import kernels
from .config import FastadaError, RunConfig
from .reader import DataSet
from .stream import read_ahead
from .train import Progress, _Training

COMBINE = ("blend", "steps", "average")  # how workers' changes to one slot combine: kernels.COMBINE_* in this order
SYNC_EVERY_ROWS = 1_000_000  # rows per worker between syncs (a row group is never split below a chunk)
CONNECT_SECONDS = 10
POLL_SECONDS = 0.1  # how often a round looks for workers that left


def _dask():
    try:
        import distributed
    except ImportError:
        raise FastadaError("--dask needs Dask's distributed package: pip install 'fastada[dask]'") from None
    return distributed


def connect(address: str):
    """``(client, close, threads)``: a ``distributed.Client`` for ``address`` (``local:N``: a
    LocalCluster of N one-process workers on this machine; else a scheduler's address such as
    tcp://HOST:8786), a function that closes what was opened, and the learner threads each worker
    should use (its share of this machine's cores for local:N; "auto" on a real cluster)."""
    distributed = _dask()
    if address.startswith("local:"):
        try:
            n = int(address[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise FastadaError(f"--dask {address}: local:N needs a number of workers N >= 1")
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
        client = distributed.Client(cluster)

        def close():
            client.close()
            cluster.close()
        return client, close, max(1, (os.cpu_count() or 1) // n)
    if "://" not in address:
        address = "tcp://" + address
    try:
        client = distributed.Client(address, timeout=f"{CONNECT_SECONDS}s")
    except (OSError, TimeoutError, ValueError) as e:
        text = str(e).strip().splitlines()
        raise FastadaError(f"--dask {address}: cannot reach a Dask scheduler there "
                           f"({text[0] if text else type(e).__name__}); start one (dask scheduler) or give "
                           f"its address as tcp://HOST:PORT, or local:N for N workers on this machine") from None
    return client, client.close, "auto"


def fit(client, data, dataset: DataSet, spec, learn, run: RunConfig, *, valid=None, on_chunk=None,
        on_evaluation=None, on_note=None, stop=None, roles=None, init=None,
        sync_every_rows: int = SYNC_EVERY_ROWS, worker_threads="auto", combine: str = "blend"):
    """:func:`train.fit`, with the epochs learned by the workers of ``client``. ``data``: what
    ``dataset`` was opened from (paths or URIs), which each worker opens for itself."""
    check(data, dataset, learn, sync_every_rows, combine)
    return _Coordinator(client, data, dataset, spec, learn, run, valid, on_chunk, on_evaluation,
                        on_note or (lambda text: None), stop, roles, init, sync_every_rows, worker_threads,
                        combine).run()


def check(data, dataset: DataSet, learn, sync_every_rows: int, combine: str) -> None:
    """Refuse, before a cluster is started or reached, what a distributed run cannot do."""
    if dataset.files == [] or isinstance(data, DataSet):
        raise FastadaError("--dask: the data must be Parquet files, folders, globs or URIs that every worker can "
                           "read (not data in memory)")
    if learn.learner != "adagrad":
        raise FastadaError(f"--dask trains --learner adagrad (combined by its accumulators); {learn.learner} "
                           f"trains on one machine")
    if combine not in COMBINE:
        raise FastadaError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    if isinstance(sync_every_rows, bool) or not isinstance(sync_every_rows, int) or sync_every_rows < 1:
        raise FastadaError(f"sync_every_rows must be an integer >= 1, got {sync_every_rows!r}")


def _addresses(client) -> list[str]:
    """The addresses of every worker in the cluster now (newer clients list 5 unless asked)."""
    try:
        return list(client.scheduler_info(n_workers=-1)["workers"])
    except TypeError:
        return list(client.scheduler_info()["workers"])


class _Coordinator(_Training):
    """A training run whose epochs go round by round to the workers (see the module's text)."""

    distributed = True

    def __init__(self, client, data, dataset, spec, learn, run, valid, on_chunk, on_evaluation, note, stop,
                 roles, init, sync_every_rows, worker_threads, combine):
        super().__init__(dataset, spec, learn, run, valid, on_chunk, on_evaluation, note, stop, roles, init)
        self.client = client
        self.key = uuid.uuid4().hex  # this run's state on the workers
        self.sync_every_rows = sync_every_rows
        self.combine = combine
        self.position = None  # where kernels.combine_changes keeps each slot's sums (one int32 a slot)
        # the table as a worker would make it (not a checkpoint's nor a continued model's): not sent
        self.fresh_table = init is None and self.state.step == 0
        paths = [os.fspath(p) for p in (data if isinstance(data, (list, tuple)) else [data])]
        self.setup = {"data": [p if "://" in p else os.path.abspath(p) for p in paths],
                      "fingerprint": dataset.fingerprint(), "spec": spec,
                      "learn": dataclasses.replace(learn, threads=worker_threads), "skip": learn.bad_rows == "skip"}
        self.version = 0          # syncs combined so far
        self.update = None        # the last sync's combined slots, for workers one sync behind
        self.ready: dict[str, int] = {}  # worker address -> the version its table holds (clean)
        self.stats = {"workers": 0, "rounds": 0, "lost_workers": 0, "redone_rows": 0, "bytes_to_coordinator": 0,
                      "bytes_to_workers": 0, "bytes_installed": 0, "combine_seconds": 0.0, "round_seconds": 0.0,
                      "slots_per_sync": []}

    def _choose_hot(self) -> None:
        self.hot = None  # the coordinator learns nothing itself: the workers choose their own hot slots

    # -- rounds ------------------------------------------------------------------------------------

    def _pieces(self, epoch: int) -> list:
        """The epoch's pieces in order, as (unit position, unit, first row, end row): one chunk each
        (a worker's consecutive pieces of one row group are read as one)."""
        size = self.learn.chunk_rows
        return [(pos, unit, start, min(unit.rows, start + size))
                for pos, unit in enumerate(self._units(epoch)) for start in range(0, unit.rows, size)]

    def _round_rows(self, workers: int) -> int:
        """Rows each worker learns in the next round: ``sync_every_rows``, but at first no more
        than the model has learned so far over the workers, from one chunk on (each round at most
        doubles what the model has seen): while every weight still moves far, the copies meet
        often, before their steps overshoot together."""
        return min(self.sync_every_rows, max(self.learn.chunk_rows, self.state.step // workers))

    def _epoch(self, epoch: int) -> None:
        state = self.state
        if state.pieces_epoch != epoch:
            state.pieces_epoch, state.pieces_done = epoch, []
        done = {tuple(p) for p in state.pieces_done}
        queue = collections.deque(p for p in self._pieces(epoch) if (p[0], p[2]) not in done)
        while queue:
            workers = self._workers()
            assigned = {}
            round_rows = self._round_rows(len(workers))
            for address in workers:
                mine, rows = [], 0
                while queue and rows < round_rows:
                    piece = queue.popleft()
                    mine.append(piece)
                    rows += piece[3] - piece[2]
                assigned[address] = mine
            results, lost, stale = self._round(assigned, epoch)
            for address in stale:  # its table was not the combined one: given anew, its pieces learned again
                queue.extendleft(reversed(assigned[address]))
            for address in lost:  # its pieces are learned again, first, by the workers left
                pieces = assigned[address]
                rows = sum(p[3] - p[2] for p in pieces)
                self.stats["lost_workers"] += 1
                self.stats["redone_rows"] += rows
                self.note(f"worker {address} was lost mid-round: its {len(pieces)} pieces ({rows:,} rows) go to "
                          f"the other workers, learned from the combined model (nothing is counted twice)")
                queue.extendleft(reversed(pieces))
            if results:
                self._combine(results, epoch)
                for address, result in results.items():
                    state.pieces_done.extend([p[0], p[2]] for p in assigned[address])
            if self.on_chunk is not None:
                self.on_chunk(Progress(epoch + 1, state.step, self._seconds(), self._progressive_logloss(),
                                       self.dataset.num_rows * self.epochs))
            if self.run_config.eval_every_rows and state.step >= state.next_eval:
                while state.next_eval <= state.step:
                    state.next_eval += self.run_config.eval_every_rows
                if queue:  # else the end-of-epoch evaluation follows now
                    self._evaluate("rows", epoch)
            if state.stopped_early or (self.stop is not None and self.stop.is_set()):
                return
            if queue and self._checkpoint_due(epoch_ended=False):
                self._save_checkpoint()

    def _workers(self) -> list[str]:
        """The workers now in the cluster, each holding the combined table (given it if new)."""
        waited = 0.0
        while True:
            present = sorted(_addresses(self.client))
            if present:
                break
            if waited > CONNECT_SECONDS:
                raise FastadaError("--dask: the cluster has no workers")
            time.sleep(POLL_SECONDS)
            waited += POLL_SECONDS
        for address in list(self.ready):
            if address not in present:
                del self.ready[address]
        new = [a for a in present if self.ready.get(a) not in (self.version, self.version - 1)]
        if new:
            # a fresh run's workers start from a zeroed table of their own; otherwise the whole table
            table = None if self.version == 0 and self.fresh_table else self.table
            futures = {a: self.client.submit(_install, self.key, self.setup,
                                             None if table is None else self.client.scatter(table, workers=[a],
                                                                                            hash=False),
                                             self.version, workers=[a], allow_other_workers=False, pure=False)
                       for a in new}
            for address, future in futures.items():
                try:
                    future.result()
                except FastadaError:
                    raise
                except Exception as e:  # it left meanwhile: the next round will see
                    self.note(f"worker {address} could not be given the model ({type(e).__name__}); left out")
                    continue
                self.ready[address] = self.version
                if table is not None:
                    self.stats["bytes_installed"] += table.nbytes
        self.stats["workers"] = max(self.stats["workers"], len(self.ready))
        return sorted(self.ready)

    def _round(self, assigned: dict, epoch: int) -> tuple[dict, list, list]:
        """Send each worker its pieces (with the last sync for those one behind); wait for all.
        Returns the results of the workers that finished, the addresses of those that left or
        failed, and of those whose table turned out not to be the combined one (given anew)."""
        start = time.perf_counter()
        # a copy for each worker one sync behind: a copy shared by all would be lost (and the others' rounds
        # cancelled with it) when the worker holding it dies
        updates = {a: self.client.scatter([self.update], workers=[a], hash=False)[0] for a in assigned
                   if self.ready[a] == self.version - 1 and self.update is not None}
        self.stats["bytes_to_workers"] += sum(x.nbytes for x in self.update or () if x is not None) * len(updates)
        futures = {}
        for address, pieces in assigned.items():
            tasks = []
            for pos, unit, first, end in pieces:
                if tasks and tasks[-1][1] == pos and tasks[-1][4] == first:  # read on from where it ends
                    tasks[-1] = tasks[-1][:4] + (end,)
                else:
                    tasks.append((epoch, pos, unit, first, end))
            futures[address] = self.client.submit(
                _learn_round, self.key, self.version, updates.get(address), tasks, self.state.step,
                self.state.lr, workers=[address], allow_other_workers=False, pure=False)
        results, lost, stale = {}, [], []
        pending = dict(futures)
        while pending:
            self._dask_wait(list(pending.values()))
            present = set(_addresses(self.client))
            for address, future in list(pending.items()):
                if future.done():
                    del pending[address]
                    try:
                        result = future.result()
                    except FastadaError:
                        raise
                    except Exception as e:
                        self.note(f"worker {address} failed ({type(e).__name__}: {e})")
                        lost.append(address)
                        self.ready.pop(address, None)
                        continue
                    if result is None:  # its table was not the one expected: given anew next round
                        self.ready.pop(address, None)
                        stale.append(address)
                        continue
                    results[address] = result
                elif address not in present:
                    future.cancel()
                    del pending[address]
                    lost.append(address)
                    self.ready.pop(address, None)
        for future in updates.values():
            future.release()
        for address in results:
            self.ready[address] = self.version  # holds the combined model once the next sync reaches it
        self.stats["rounds"] += 1
        self.stats["round_seconds"] += time.perf_counter() - start
        return results, lost, stale

    def _dask_wait(self, futures: list) -> None:
        try:
            _dask().wait(futures, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError):
            pass
        except Exception:  # a future cancelled (its worker or its data lost): each is looked at next
            pass

    def _combine(self, results: dict, epoch: int) -> None:
        """The workers' changed slots into the combined table (see the module's text), their losses
        and counts into the run's state; the combined slots become the next sync."""
        start = time.perf_counter()
        state = self.state
        # in the order of the pieces they learned: the same sums, bit for bit, whichever finished first
        parts = sorted(results.values(), key=lambda r: r["first_piece"])
        index = np.concatenate([r["index"] for r in parts])
        weight = np.concatenate([r["weight"] for r in parts])
        accum = np.concatenate([r["accumulator"] for r in parts])
        clock = np.concatenate([r["clock"] for r in parts]) if self.regularise else np.zeros(0, np.int64)
        self.stats["bytes_to_coordinator"] += sum(sum(a.nbytes for a in (r["index"], r["weight"], r["accumulator"],
                                                                         r["clock"]) if a is not None) for r in parts)
        if self.position is None:
            self.position = np.full(self.table.shape[0], -1, dtype=np.int32)
        n = index.shape[0]
        slots, combined_w, combined_g = np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)
        latest = np.empty(n if self.regularise else 0, np.int64)
        count = kernels.combine_changes(index, weight, accum, clock, self.table, self.clock, self.position,
                                        COMBINE.index(self.combine), slots, combined_w, combined_g, latest)
        slots, combined_w, combined_g = slots[:count], combined_w[:count], combined_g[:count]
        self.update = (slots.astype(np.uint32), combined_w, combined_g, latest[:count] if self.regularise else None)
        self.version += 1
        self.stats["slots_per_sync"].append(int(len(slots)))
        for r in parts:
            state.step += r["rows"]
            state.train_loss += r["sums"][0]
            state.train_weight += r["sums"][1]
            while len(state.epoch_loss) <= epoch:
                state.epoch_loss.append([0.0, 0.0])
            state.epoch_loss[epoch][0] += r["sums"][0]
            state.epoch_loss[epoch][1] += r["sums"][1]
            state.interval = [x + y for x, y in zip(state.interval, r["sums"])]
            state.bad_rows += r["bad_rows"]
            state.skipped_rows += r["skipped_rows"]
            state.skipped_row_groups += r["skipped_row_groups"]
            state.read_retries += r["read_retries"]
            for text in r["notes"]:
                self.note(text)
            self._check_labels(frozenset(r["label_kinds"]), f"{self.dataset.name(0)} (on a worker)")
        if not np.isfinite(combined_w).all():
            raise FastadaError(f"training diverged (non-finite weights after {state.step:,} rows); lower --lr "
                               f"(now {self._rate(epoch):g})")
        self.stats["combine_seconds"] += time.perf_counter() - start

    def _model(self):
        model = super()._model()
        s = self.stats
        syncs = max(1, len(s["slots_per_sync"]))
        model.summary["distributed"] = {
            "workers": s["workers"], "rounds": s["rounds"], "sync_every_rows": self.sync_every_rows,
            "lost_workers": s["lost_workers"], "redone_rows": s["redone_rows"],
            "slots_per_sync": round(sum(s["slots_per_sync"]) / syncs),
            "bytes_per_sync": round((s["bytes_to_coordinator"] + s["bytes_to_workers"]) / syncs),
            "bytes_installed": s["bytes_installed"],  # whole tables given to workers that joined (or at a resume)
            "combine_seconds": round(s["combine_seconds"], 3), "round_seconds": round(s["round_seconds"], 3)}
        model.summary["threads"] = self.setup["learn"].threads
        return model

    def run(self):
        try:
            return super().run()
        finally:
            try:
                self.client.run(_forget, self.key)
            except Exception:
                pass  # a cluster that is gone keeps nothing of the run either


# -- on the workers ----------------------------------------------------------------------------------

_RUNS: dict[str, "_WorkerRun"] = {}


class _WorkerRun:
    """A run's state on one worker: its copy of the slot table (through a :class:`_Training` that
    reads and learns as a single machine does), the accumulators as last combined (what tells the
    slots this worker changed), and the version of the combined model its table holds."""

    def __init__(self, setup: dict, table, version: int):
        dataset = DataSet(setup["data"], skip_unreadable=setup["skip"])
        if dataset.fingerprint() != setup["fingerprint"]:
            raise FastadaError(f"a Dask worker sees other data at {setup['data'][0]} than the coordinator (other "
                               f"files, sizes or row groups): every worker must read the same files")
        self.notes: list[str] = []
        self.training = _Training(dataset, setup["spec"], setup["learn"], RunConfig(), None, None, None,
                                  self.notes.append, None)
        self.notes.clear()  # (what it says at start the coordinator has said)
        if table is not None:
            self.training.table[:] = table
        self.training.clock = self.training.table.view(np.int64)
        self.combined = np.array(self.training.table[:, kernels.ACCUMULATOR])
        self.version = version
        self.dirty = False
        self.hot_chosen = False


def _install(key: str, setup: dict, table, version: int) -> str:
    _RUNS[key] = _WorkerRun(setup, table, version)
    return key


def _forget(key: str) -> None:
    _RUNS.pop(key, None)


def _learn_round(key: str, version: int, update, tasks: list, step: int, lr: float):
    """Bring this worker's table to the combined ``version`` (applying ``update``, the last sync,
    if it is one behind), learn ``tasks`` (pieces: epoch, unit position, unit, first row, end
    row) and return the slots changed, losses and counts; None if this worker's table is not one
    it can bring to ``version`` (it is then given the whole table anew)."""
    run = _RUNS.get(key)
    if run is None:
        return None
    training = run.training
    table = training.table
    if run.version == version - 1 and update is not None:
        slots, weight, accumulator, clock = update
        table[slots, kernels.WEIGHT] = weight
        table[slots, kernels.ACCUMULATOR] = accumulator
        if clock is not None:
            training.clock[slots, kernels.CLOCK] = clock
        run.combined[slots] = accumulator
        run.version, run.dirty = version, False
    if run.version != version or run.dirty:
        return None
    state = training.state
    state.lr, state.step = lr, step
    state.epoch_loss, state.interval = [], [0.0, 0.0, 0.0, 0.0]
    state.train_loss = state.train_weight = 0.0
    state.bad_rows = state.skipped_rows = state.skipped_row_groups = 0
    state.label_kinds = []
    if not run.hot_chosen:
        training._choose_hot()
        run.hot_chosen = True
    run.dirty = bool(tasks)
    epoch = tasks[0][0] if tasks else 0
    for block, where, pos, row in read_ahead(tasks, training._blocks, len(training.featurizers),
                                             limit=training.readers):
        if block is None:
            task = next(t for t in tasks if t[1] == pos)
            run.notes.append(f"skipped {task[4] - row:,} rows: {where}")
            state.skipped_rows += task[4] - row
            state.skipped_row_groups += 1
            continue
        state.bad_rows += block.bad_rows
        training._check_labels(block.label_kinds, where)
        if block.rows:
            training._learn(block, where, epoch)
    training._settle_views(epoch)
    changed = np.flatnonzero(table[:, kernels.ACCUMULATOR] != run.combined)
    rows = state.step - step
    sums = state.interval
    notes, run.notes[:] = list(run.notes), []
    retried, training.dataset.retried_reads = training.dataset.retried_reads, 0
    return {"index": changed.astype(np.uint32), "weight": table[changed, kernels.WEIGHT].copy(),
            "accumulator": table[changed, kernels.ACCUMULATOR].copy(),
            # the clock matters only to lazy regularisation
            "clock": training.clock[changed, kernels.CLOCK].copy() if training.regularise else None,
            "rows": rows, "sums": [float(x) for x in sums],
            "bad_rows": state.bad_rows, "skipped_rows": state.skipped_rows,
            "skipped_row_groups": state.skipped_row_groups, "label_kinds": list(state.label_kinds), "notes": notes,
            "read_retries": retried, "first_piece": (tasks[0][1], tasks[0][3]) if tasks else (-1, -1)}


# -- scoring on the cluster ----------------------------------------------------------------------------

def predict(client, model_path: str, data, out: str, *, keep=(), chunk_rows: int = 65536, on_part=None) -> dict:
    """Score ``data`` on the workers of ``client``: one Parquet file per unit (row group) of the
    data set, ``out``/part-NNNNN.parquet in the data set's order (each written whole, then renamed
    into place), with the column ``prediction`` and the ``keep`` columns. ``out`` must be a new or
    empty folder. Returns {"rows", "parts"}."""
    paths = [os.fspath(p) for p in (data if isinstance(data, (list, tuple)) else [data])]
    paths = [p if "://" in p else os.path.abspath(p) for p in paths]
    dataset = DataSet(paths)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FastadaError(f"--out {out}: with --dask, predictions go to one file per row group in a new or empty "
                           f"folder; {'it is a file' if not os.path.isdir(out) else 'this one holds files'}")
    os.makedirs(out, exist_ok=True)
    model_path = os.path.abspath(model_path)
    from .model import load
    load(model_path, mmap=True)  # refused here, once, if damaged
    digits = max(5, len(str(len(dataset.units) - 1)))
    futures = [client.submit(_predict_unit, model_path, paths, dataset.fingerprint(), unit,
                             os.path.join(os.path.abspath(out), f"part-{i:0{digits}d}.parquet"), list(keep), chunk_rows,
                             pure=False, retries=2)
               for i, unit in enumerate(dataset.units)]
    rows = 0
    for future in _dask().as_completed(futures):
        rows += future.result()
        if on_part is not None:
            on_part(rows)
    return {"rows": rows, "parts": len(futures)}


_PREDICTING: dict = {}


def _predict_unit(model_path: str, paths: list, fingerprint: dict, unit, out: str, keep: list, chunk_rows: int) -> int:
    """One unit's predictions written to ``out`` (a task: the model and data set opened once a worker)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .model import atomic_replace_target, load
    from .score import predict_batches
    stamp = os.stat(model_path)
    key = (model_path, stamp.st_mtime_ns, stamp.st_size, tuple(paths))
    if key not in _PREDICTING:
        dataset = DataSet(paths)
        if dataset.fingerprint() != fingerprint:
            raise FastadaError(f"a Dask worker sees other data at {paths[0]} than the client: every worker must "
                               f"read the same files")
        _PREDICTING.clear()
        _PREDICTING[key] = (load(model_path, mmap=True), dataset)
    model, dataset = _PREDICTING[key]
    target = atomic_replace_target(out)
    writer, rows = None, 0
    try:
        for p, kept, _ in predict_batches(model, dataset, chunk_rows=chunk_rows, keep=keep, units=[unit]):
            batch = pa.RecordBatch.from_arrays([pa.array(p), *kept.columns], names=["prediction", *kept.schema.names])
            if writer is None:
                writer = pq.ParquetWriter(target.path, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is None:
            raise FastadaError(f"{dataset.name(unit.file)}, row group {unit.row_group}: no rows")
        writer.close()
        writer = None
        target.commit()
    finally:
        if writer is not None:
            writer.close()
        target.discard()
    return rows
