"""Scoring: predictions streamed chunk by chunk in input order, evaluation (logloss, AUC, NE,
calibration) and what feeds a slot. Learner-agnostic: a model is its spec and weights.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from . import ffm, hashing, kernels
from .config import FastadaError
from .features import (Featurizer, feature_sources, labels_from_arrow, schema_from_text, source_column,
                       weights_from_arrow)
from .metrics import Evaluation
from .reader import DataSet, column_list, missing_label
from .stream import _string_columns, check_data, read_ahead, read_workers, set_threads


def predict_batches(model, data, *, threads: int | None = None, chunk_rows: int = 65536,
                    keep: Sequence[str] = (), margin: bool = False,
                    units=None) -> Iterator[tuple[np.ndarray, pa.RecordBatch, str]]:
    """(probabilities, or with ``margin`` log-odds; batch of the ``keep`` columns; (where, first
    row)) per chunk, in order; of ``units`` only, if given (default: the whole data set)."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or not 1 <= chunk_rows <= 2**26:
        raise FastadaError(f"chunk_rows must be an integer in 1..{2**26}, got {chunk_rows!r}")
    dataset = data if isinstance(data, DataSet) else DataSet(data)
    blocks = set_threads(threads)
    spec = model.spec
    featurizer = Featurizer(spec)
    keep = list(dict.fromkeys(keep))
    for c in keep:
        if c not in dataset.schema.names:
            raise FastadaError(f"{dataset.name(0)}: column {c!r} to keep not found "
                               f"(columns: {column_list(dataset.schema.names)})")
    columns = list(dict.fromkeys([*feature_sources(spec), *keep]))
    check_data(dataset, spec, with_labels=False)
    mask = np.uint32(spec.slots - 1)
    new_slots = featurizer.new_slots(spec.slots - 1)
    weights = np.asarray(model.weights)
    factors = None if getattr(model, "factors", None) is None else np.asarray(model.factors)
    if factors is not None:  # a factorisation machine; field-aware: each feature's field, as in training
        fields = featurizer.fields() if model.learn.get("learner") != "fm" else np.zeros(0, np.int64)
        fmask = np.int64(factors.shape[0] - 1)

    featurizers = [featurizer] + [Featurizer(spec) for _ in range(read_workers(blocks) - 1)]
    dictionary = _string_columns(dataset, spec)

    def work(unit, worker: int):
        for chunk in dataset.unit_chunks(unit, columns, chunk_rows, dictionary):
            block = featurizers[worker](chunk.batch, chunk.where, with_labels=False)
            yield block, chunk.batch.select(keep), chunk.where, chunk.row

    units = dataset.units if units is None else units
    for block, kept, where, first_row in read_ahead(units, work, len(featurizers)):
        out = np.empty(block.rows, dtype=np.float64)
        if block.rows:
            if factors is None:
                kernels.predict_chunk(block.cat, block.num, block.num_values, weights, mask, blocks, margin, out,
                                      new_slots)
            else:
                ffm.predict_chunk(block.cat, block.num, block.num_values, weights, factors, fields, mask, fmask,
                                  blocks, margin, out)
            if not np.isfinite(out).all():
                raise FastadaError(f"{where}, row {first_row + int(np.argmin(np.isfinite(out)))}: the model gives a "
                                   f"non-finite prediction (its weights hold NaN or inf); it cannot be used")
        yield out, kept, (where, first_row)


def evaluate_model(model, data, *, label: str | None = None, threads: int | None = None,
                   chunk_rows: int = 65536) -> dict:
    """Stream ``data`` through ``model`` and return logloss, auc, ne, calibration, rows."""
    dataset = data if isinstance(data, DataSet) else DataSet(data)
    label = label or model.spec.label
    if label not in dataset.schema.names:
        raise FastadaError(missing_label(dataset.name(0), label, dataset.schema.names))
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


def calibrating_shift(model, data, rows: int, threads: int | None = None) -> float:
    """The log-odds that, added to ``model``'s bias, make its mean prediction on the first
    ``rows`` rows of ``data`` their (weighted) click rate: Newton's method on the one unknown.
    For a model learned on downsampled negatives, whose bias the rate's log moved back to the
    data's odds: exact for a perfect model, but an online model's predictions, shrunk toward
    their mean in log-odds, under-predict once moved that far (0.96-0.98 of the clicks)."""
    label, weight = model.spec.label, model.spec.weight
    margins, labels, weights, seen, n = [], [], [], set(), 0
    for z, batch, where in predict_batches(model, data, threads=threads, margin=True,
                                           keep=[label] + ([weight] if weight else [])):
        margins.append(z)
        labels.append(labels_from_arrow(batch.column(label), label, where[0], seen, where[1]))
        weights.append(weights_from_arrow(batch.column(weight), weight, *where) if weight else np.ones(len(z)))
        n += len(z)
        if n >= rows:
            break
    if not margins:
        return 0.0
    z, y, w = (np.concatenate(a)[:rows].astype(np.float64) for a in (margins, labels, weights))
    clicks = float(w @ y)
    if clicks <= 0 or clicks >= w.sum():
        return 0.0  # no click (or no non-click) to match: nothing to learn from
    shift = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z + shift)))
        slope = float(w @ (p * (1.0 - p)))
        step = (float(w @ p) - clicks) / max(slope, 1e-12)
        shift -= max(-1.0, min(1.0, step))
        if abs(step) < 1e-9:
            break
    return shift


def describe_slots(model, slots: Sequence[int], data=None, scan_rows: int = 200_000) -> dict[int, list[str]]:
    """What feeds each of ``slots``: features known from the spec alone (each column's null or
    missing feature, each numeric column's value feature and log buckets, each time part's
    values) and, given ``data``, the first values found in up to ``scan_rows`` rows (a slot can
    hold several features: hashing collides)."""
    spec = model.spec
    mask = spec.slots - 1
    featurizer = Featurizer(spec)
    wanted = {int(s) for s in slots}
    found: dict[int, list[str]] = {s: [] for s in wanted}

    def add(slot: int, text: str) -> None:
        if slot in wanted and text not in found[slot] and len(found[slot]) < 3:
            found[slot].append(text)

    for name in spec.feature_columns:
        add(featurizer.null_hash[name] & mask, f"{name} = null/missing")
    for name in spec.numeric:
        if featurizer.value_column[name] >= 0:
            add(featurizer.value_hash[name] & mask, f"{name} (value feature, log1p)")
        if featurizer.bucket_column[name] >= 0:
            table = featurizer.bucket_tables[name] & np.uint32(mask)
            for i in np.nonzero(np.isin(table, np.fromiter(wanted, np.uint32, len(wanted))))[0]:
                add(int(table[i]), f"{name} {_bucket_range(int(i) - hashing.BUCKET_OFFSET)}"
                    if i < table.shape[0] - 1 else f"{name} missing (log bucket)")
    new_names = list(spec.categorical) + [f"{c} (log bucket)" for c in spec.numeric
                                          if featurizer.bucket_column[c] >= 0] + [f"{a}*{b}" for a, b in spec.crosses]
    for j, h in enumerate(featurizer.new_hashes):
        if h >= 0:
            add(int(h) & mask, f"{new_names[j]} = a value never learned (new-value feature)")
    for name in spec.categorical:
        if source_column(name) != name:  # a time part: its few values
            for v in range(24 if name.endswith(":hour") else 7):
                add(int(hashing.murmur3_u64(np.int64(v), np.uint32(featurizer.seeds[name]))) & mask, f"{name} = {v}")
    if data is None:
        return found
    dataset = data if isinstance(data, DataSet) else DataSet(data)
    names = new_names
    sources = [[c] for c in spec.categorical] + [[c] for c in spec.numeric if featurizer.bucket_column[c] >= 0] \
        + [[a, b] for a, b in spec.crosses]
    seen_rows = 0
    for chunk in dataset.chunks(feature_sources(spec), 65536, None, _string_columns(dataset, spec)):
        block = featurizer(chunk.batch, chunk.where, with_labels=False)
        hits = np.isin(block.cat & np.uint32(mask), np.fromiter(wanted, np.uint32, len(wanted)))
        for r, j in zip(*np.nonzero(hits)):
            values = ", ".join(repr(chunk.batch.column(c)[int(r)].as_py())[:40] for c in sources[j])
            add(int(block.cat[r, j] & mask), f"{names[j]} = {values}")
        seen_rows += block.rows
        if seen_rows >= scan_rows:
            break
    return found


def _bucket_range(b: int) -> str:
    """The numbers in log bucket ``b`` (the featurizer's floor(4 log1p|x|), negatives below 0)."""
    k, sign = (b, "") if b >= 0 else (-b - 1, "-")
    lo, hi = (math.expm1(v / 4) if v / 4 < 709 else math.inf for v in (k, k + 1))
    if sign:
        return f"in ({-hi:.4g}, {-lo:.4g}] (log bucket)"
    return f"in [{lo:.4g}, {hi:.4g}) (log bucket)"


def column_types(spec) -> dict[str, str]:
    """The Arrow type each feature column had in training, as text (empty for older models)."""
    return {f.name: str(f.type) for f in schema_from_text(spec.schema)} if spec.schema else {}
