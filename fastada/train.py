"""The driver: composes the reader, the featurizer, the kernels and the model.

It owns what the kernels must not know: column roles, epochs and shuffling, the global step
clock, threads, progress, and turning kernel status codes into errors. Reading and hashing the
next chunk run on a background thread while the current chunk is learned (both release the GIL);
only this thread calls the parallel kernels.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from typing import Callable, Iterator, Sequence

import numba
import numpy as np
import pyarrow as pa

from . import kernels
from .config import FastadaError, FeatureSpec, LearnConfig
from .features import FeatureBlock, Featurizer, labels_from_arrow, weights_from_arrow
from .metrics import Evaluation
from .model import Model
from .reader import DataSet, default_roles


def resolve_spec(dataset: DataSet, *, label: str, categorical: Sequence[str] | None = None,
                 numeric: Sequence[str] | None = None, ignore: Sequence[str] = (),
                 weight: str | None = None, crosses: Sequence[tuple[str, str]] = (),
                 bits: int = 24, hash_seed: int = 0, numeric_mode: str = "both") -> FeatureSpec:
    """Column roles for ``dataset``: named ones as given, the rest by Arrow type."""
    names = dataset.schema.names
    where = dataset.name(0)
    if label not in names:
        raise FastadaError(f"{where}: label column {label!r} not found (columns: {_list(names)})")
    if weight is not None and weight not in names:
        raise FastadaError(f"{where}: weight column {weight!r} not found (columns: {_list(names)})")
    categorical = list(categorical or ())
    numeric = list(numeric or ())
    for option, columns in (("--categorical", categorical), ("--numeric", numeric), ("--ignore", ignore)):
        for c in columns:
            if c not in names:
                raise FastadaError(f"{where}: column {c!r} named in {option} not found (columns: {_list(names)})")
    both = set(categorical) & set(numeric)
    if both:
        raise FastadaError(f"column {sorted(both)[0]!r} is named both categorical and numeric")
    exclude = {label, weight, *ignore, *categorical, *numeric}
    default_cat, default_num = default_roles(dataset.schema, exclude)
    named_cat, named_num = set(categorical), set(numeric)
    cat = [n for n in names if n in named_cat or n in default_cat]
    num = [n for n in names if n in named_num or n in default_num]
    if not cat and not num:
        raise FastadaError(f"{where}: no feature columns (columns: {_list(names)}); "
                           f"name them with --categorical / --numeric")
    return FeatureSpec(label=label, categorical=tuple(cat), numeric=tuple(num), weight=weight,
                       crosses=tuple(tuple(c) for c in crosses), bits=bits, hash_seed=hash_seed,
                       numeric_mode=numeric_mode)


def _list(names) -> str:
    names = list(names)
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def set_threads(threads: int | None) -> int:
    """Use ``threads`` Numba threads (capped at NUMBA_NUM_THREADS, fixed at start-up)."""
    available = numba.config.NUMBA_NUM_THREADS
    n = available if threads is None else max(1, min(int(threads), available))
    numba.set_num_threads(n)
    return n


def _string_columns(dataset: DataSet, spec: FeatureSpec) -> list[str]:
    """Categorical columns stored as strings/binaries: read them dictionary-encoded."""
    out = []
    for name in spec.categorical:
        i = dataset.schema.get_field_index(name)
        t = dataset.schema.field(i).type if i >= 0 else None
        if t is not None and (pa.types.is_string(t) or pa.types.is_large_string(t)
                              or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
            out.append(name)
    return out


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run ``items`` on a background thread, ``depth`` results ahead; errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    thread = threading.Thread(target=work, name="fastada-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@dataclasses.dataclass
class Progress:
    """What a progress callback receives after each chunk."""

    epoch: int
    rows: int
    seconds: float
    progressive_logloss: float
    total_rows: int


def fit(dataset: DataSet, spec: FeatureSpec, learn: LearnConfig,
        on_chunk: Callable[[Progress], None] | None = None) -> Model:
    """Train a model on ``dataset``: ``learn.epochs`` passes of Hogwild lazy Adagrad."""
    if dataset.num_rows == 0:
        raise FastadaError(f"{dataset.name(0)}: the data set has no rows")
    threads = set_threads(learn.threads)
    featurizer = Featurizer(spec)
    table = kernels.new_table(spec.slots, learn.initial_accumulator)
    clock = table.view(np.int64)
    mask = np.uint32(spec.slots - 1)
    block_loss = np.zeros((threads, 2), dtype=np.float64)
    block_bias = np.zeros((threads, 2), dtype=np.float32)
    rng = np.random.default_rng(learn.seed)
    dictionary = _string_columns(dataset, spec)
    step = 0
    loss_sum = weight_sum = 0.0
    start = time.perf_counter()

    def blocks(units) -> Iterator[tuple[FeatureBlock, str]]:
        for chunk in dataset.chunks(featurizer.columns, learn.chunk_rows, units, dictionary):
            yield featurizer(chunk.batch, chunk.where, first_row=chunk.row), chunk.where

    for epoch in range(learn.epochs):
        units = list(dataset.units)
        permute = learn.shuffle
        if permute:
            units = [units[i] for i in rng.permutation(len(units))]
        for block, where in _prefetch(blocks(units)):
            n = block.rows
            if n == 0:
                continue
            cat, num, values, labels = block.cat, block.num, block.num_values, block.labels
            weights = block.weights if block.weights is not None else np.ones(n, np.float32)
            if permute:
                order = rng.permutation(n)
                cat, num, values, labels, weights = cat[order], num[order], values[order], labels[order], weights[order]
            status = kernels.train_chunk(cat, num, values, labels, weights, table, clock, mask,
                                         np.int64(step), learn.lr, learn.l1, learn.l2, learn.eps,
                                         threads, block_loss, block_bias)
            if status != kernels.STATUS_OK:
                raise FastadaError(f"{where}: training diverged (the loss is no longer finite) after "
                                   f"{step:,} rows; lower --lr (now {learn.lr})")
            step += n
            loss_sum += float(block_loss[:, 0].sum())
            weight_sum += float(block_loss[:, 1].sum())
            if on_chunk is not None:
                on_chunk(Progress(epoch + 1, step, time.perf_counter() - start,
                                  loss_sum / weight_sum if weight_sum else math.nan,
                                  dataset.num_rows * learn.epochs))
    kernels.catch_up_all(table, clock, np.int64(step), learn.lr, learn.l1, learn.l2, learn.eps)
    seconds = time.perf_counter() - start
    if not np.isfinite(table[:, kernels.WEIGHT]).all():
        raise FastadaError(f"training diverged (non-finite weights); lower --lr (now {learn.lr})")
    summary = {
        "rows": step,
        "epochs": learn.epochs,
        "seconds": round(seconds, 3),
        "rows_per_second": round(step / seconds) if seconds > 0 else None,
        "progressive_logloss": loss_sum / weight_sum if weight_sum else None,
        "threads": threads,
    }
    weights = np.ascontiguousarray(table[:, kernels.WEIGHT])
    accumulators = np.ascontiguousarray(table[:, kernels.ACCUMULATOR])
    return Model(spec, weights, accumulators, learn=learn.to_dict(), summary=summary)


def predict_batches(model: Model, data, *, threads: int | None = None, chunk_rows: int = 65536,
                    keep: Sequence[str] = ()) -> Iterator[tuple[np.ndarray, pa.RecordBatch, str]]:
    """(probabilities, batch of the ``keep`` columns, (where, first row)) per chunk, in order."""
    dataset = data if isinstance(data, DataSet) else DataSet(data)
    blocks = set_threads(threads)
    spec = model.spec
    featurizer = Featurizer(spec)
    keep = list(dict.fromkeys(keep))
    for c in keep:
        if c not in dataset.schema.names:
            raise FastadaError(f"{dataset.name(0)}: column {c!r} to keep not found "
                               f"(columns: {_list(dataset.schema.names)})")
    columns = list(dict.fromkeys([*spec.feature_columns, *keep]))
    mask = np.uint32(spec.slots - 1)
    weights = np.asarray(model.weights)

    def work():
        for chunk in dataset.chunks(columns, chunk_rows, None, _string_columns(dataset, spec)):
            block = featurizer(chunk.batch, chunk.where, with_labels=False)
            yield block, chunk.batch.select(keep), chunk.where, chunk.row

    for block, kept, where, first_row in _prefetch(work()):
        out = np.empty(block.rows, dtype=np.float64)
        if block.rows:
            kernels.predict_chunk(block.cat, block.num, block.num_values, weights, mask, blocks, out)
        yield out, kept, (where, first_row)


def evaluate_model(model: Model, data, *, label: str | None = None, threads: int | None = None,
                   chunk_rows: int = 65536) -> dict:
    """Stream ``data`` through ``model`` and return logloss, auc, ne, calibration, rows."""
    dataset = data if isinstance(data, DataSet) else DataSet(data)
    label = label or model.spec.label
    if label not in dataset.schema.names:
        raise FastadaError(f"{dataset.name(0)}: label column {label!r} not found "
                           f"(columns: {_list(dataset.schema.names)})")
    if dataset.num_rows == 0:
        raise FastadaError(f"{dataset.name(0)}: the data set has no rows")
    weight = model.spec.weight if model.spec.weight in dataset.schema.names else None
    evaluation = Evaluation()
    seen: set = set()
    for p, batch, where in predict_batches(model, dataset, threads=threads, chunk_rows=chunk_rows,
                                           keep=[label] + ([weight] if weight else [])):
        y = labels_from_arrow(batch.column(label), label, where[0], seen, where[1])
        w = weights_from_arrow(batch.column(weight), weight, *where) if weight else None
        evaluation.add(p, y, w)
    return evaluation.result()
