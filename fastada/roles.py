"""Column roles: which columns become which features, and why.

Columns the user names keep the role given. The others take one from their Arrow type, the
file's pandas metadata and the values in the first rows, by rules drawn from how click logs are
stored (the Criteo, Avazu and TalkingData samples, pandas' Parquet files):

* strings, binaries, dictionaries and bools are categorical; so are lists of strings or integers
  (tags, history ids), one feature per element;
* a timestamp or date column is ignored, and said; with ``time_features`` it gives two
  categorical features, ``<column>:hour`` (0-23, in the column's time zone) and
  ``<column>:weekday`` (0 = Monday; a date gives only the weekday). Not by default: on the one
  real log at hand with a timestamp (TalkingData, 0.2% clicks) they made test logloss 9% worse
  (0.00596 vs 0.00545), as three always-on features move the intercept three times as fast;
* an integer column (or a float column holding only whole numbers, as pandas stores integers
  with nulls) is numeric when it looks like a quantity and categorical when it looks like codes
  or identifiers: by its name first (``..._id``, ``code``, ``type``, ``ip``; ``count``,
  ``price``, ``duration``), else by its values: at most 16 distinct values is a code; otherwise a
  quantity is a column whose small values are its frequent ones (counts, sizes, durations: the
  rank correlation between a value and how often it occurs is at most -0.8 on every such column
  seen, -0.87 to -0.99), while in codes and ids frequency is unrelated to size (-0.36 to +0.01
  for ids; app and os codes -0.68, -0.78);
* other floats and decimals are numeric;
* ignored, and said: the pandas index (``__index_level_0__``), a column with one value in every
  row read (a constant feature only duplicates the bias), a string or integer column whose
  every value read is distinct (a row key: nothing to learn), types that cannot be features.

Rules that need values look at the first :data:`SAMPLE_ROWS` rows; with fewer than
:data:`MIN_SAMPLE` rows the constant and row-key rules are not applied.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import FastadaError, FeatureSpec, UnreadableData
from .features import TIME_PARTS, as_numpy, is_list_type, schema_text, source_column
from .reader import DataSet, column_list, missing_label

SAMPLE_ROWS = 65536
MIN_SAMPLE = 1000
FEW_VALUES = 16          # an integer column with at most this many distinct values is a code
QUANTITY_RANK = -0.8     # rank correlation of value and frequency at or below which it is a quantity

ID_WORDS = frozenset({"id", "ids", "uid", "uuid", "guid", "key", "code", "codes", "hash", "zip", "zipcode",
                      "postcode", "postal", "category", "cat", "type", "ip", "class", "kind", "enum"})
QUANTITY_WORDS = frozenset({"count", "counts", "cnt", "num", "number", "price", "cost", "amount", "revenue",
                            "age", "duration", "seconds", "secs", "sec", "ms", "minutes", "size", "length",
                            "len", "total", "sum", "avg", "mean", "qty", "quantity", "clicks", "impressions",
                            "views", "distance", "bytes", "income", "balance", "weight", "height"})


def resolve_spec(dataset: DataSet, **kwargs) -> FeatureSpec:
    """:func:`resolve_roles`' spec alone."""
    return resolve_roles(dataset, **kwargs)[0]


def resolve_roles(dataset: DataSet, *, label: str, categorical: Sequence[str] | None = None,
                  numeric: Sequence[str] | None = None, ignore: Sequence[str] = (),
                  weight: str | None = None, crosses: Sequence[tuple[str, str]] = (),
                  bits: int = 24, hash_seed: int = 0, numeric_mode: str = "both",
                  time_features: bool = False, list_weights: Sequence[tuple[str, str]] = (),
                  new_values: bool = False, sample_rows: int = SAMPLE_ROWS) -> tuple[FeatureSpec, dict[str, dict]]:
    """The :class:`FeatureSpec` for ``dataset`` and every column's role and reason
    (``{column: {"role": ..., "why": ...}}``, in column order): named columns as given, the rest
    by the rules above."""
    names = dataset.schema.names
    where = dataset.name(0)
    if label not in names:
        raise FastadaError(missing_label(where, label, names))
    if weight is not None and weight not in names:
        raise FastadaError(f"{where}: weight column {weight!r} not found (columns: {column_list(names)})")
    categorical = list(categorical or ())
    numeric = list(numeric or ())
    ignore = list(ignore)
    for option, columns in (("--categorical", categorical), ("--numeric", numeric), ("--ignore", ignore)):
        for c in columns:
            if source_column(c) not in names or (option != "--categorical" and c not in names):
                raise FastadaError(f"{where}: column {c!r} named in {option} not found (columns: {column_list(names)})")
    given = {"categorical": categorical, "numeric": numeric, "ignore": ignore}
    for first, second in (("categorical", "numeric"), ("categorical", "ignore"), ("numeric", "ignore")):
        both = set(given[first]) & set(given[second])
        if both:
            raise FastadaError(f"column {sorted(both)[0]!r} is named both {first} and {second}: give it one role")
    for c in {label, weight} & (set(categorical) | set(numeric)):
        if c is not None:
            raise FastadaError(f"column {c!r} cannot be both a feature and the {'label' if c == label else 'weight'}")
    roles: dict[str, dict] = {}
    named = {source_column(c) for c in categorical + numeric + ignore}
    for c in categorical:
        roles.setdefault(source_column(c), {"role": "categorical", "why": "named"})
    for c in numeric:
        roles[c] = {"role": "numeric", "why": "named"}
    for c in ignore:
        roles[c] = {"role": "ignored", "why": "named"}
    roles[label] = {"role": "label", "why": "named"}
    for name, weights in list_weights:
        for c in (name, weights):
            if c not in names:
                raise FastadaError(f"{where}: column {c!r} named in --list-weights not found (columns: {column_list(names)})")
        if not is_list_type(dataset.column_type(name)):
            raise FastadaError(f"{where}: --list-weights {name}={weights}: column {name!r} has type "
                               f"{dataset.column_type(name)}, not a list of strings or integers")
        if weights in named or weights in roles:
            raise FastadaError(f"--list-weights {name}={weights}: column {weights!r} is also named for another role")
        roles[weights] = {"role": "list weights", "why": f"the values of the elements of {name!r}"}
    if weight is not None:
        roles[weight] = {"role": "weight", "why": "named"}
    undecided = [pa.field(f.name, dataset.column_type(f.name)) for f in dataset.schema
                 if f.name not in roles and f.name not in named]
    roles.update(_default_roles(dataset, undecided, sample_rows, time_features))
    roles = {n: roles[n] for n in names if n in roles}
    cat = [c for c in categorical if source_column(c) == c or c in names]
    derived = [c for c in categorical if c not in cat]
    num = list(numeric)
    for n, r in roles.items():
        if r["why"] == "named":
            continue
        if r["role"] == "categorical":
            cat.append(n)
        elif r["role"] == "numeric":
            num.append(n)
        elif r["role"] == "time":
            derived += [f"{n}:{part}" for part in r["parts"]]
    order = {n: i for i, n in enumerate(names)}
    cat = sorted(cat, key=order.get) + sorted(derived, key=lambda c: (order[source_column(c)], c))
    num = sorted(num, key=order.get)
    if not cat and not num:
        raise FastadaError(f"{where}: no feature columns (columns: {column_list(names)}); "
                           f"name them with --categorical / --numeric")
    sources = list(dict.fromkeys(source_column(c) for c in cat + num))
    spec = FeatureSpec(label=label, categorical=tuple(cat), numeric=tuple(num), weight=weight,
                       crosses=tuple(tuple(c) for c in crosses), bits=bits, hash_seed=hash_seed,
                       numeric_mode=numeric_mode, list_weights=tuple(tuple(p) for p in list_weights),
                       new_values=new_values, schema=schema_text(pa.schema([pa.field(c, dataset.column_type(c)) for c in sources])))
    return spec, roles


def roles_line(roles: dict[str, dict]) -> str:
    """One line: each role, then its columns grouped by reason."""
    parts = []
    for role in ("categorical", "numeric", "time", "list weights", "ignored"):
        groups: dict[str, list[str]] = {}
        for name, r in roles.items():
            if r["role"] == role:
                groups.setdefault(r.get("reason", r["why"]), []).append(name)
        if groups:
            shown = "; ".join(f"{_names(cols)} ({why})" for why, cols in groups.items())
            parts.append(f"{role} {sum(map(len, groups.values()))}: {shown}")
    return "columns: " + " | ".join(parts)


def _names(columns: list[str]) -> str:
    return ", ".join(columns) if len(columns) <= 6 else ", ".join(columns[:5]) + f", ... {columns[-1]} ({len(columns)})"


def _default_roles(dataset: DataSet, fields: list[pa.Field], sample_rows: int,
                   time_features: bool) -> dict[str, dict]:
    roles: dict[str, dict] = {}
    index = _pandas_index(dataset.schema)
    sampled = []
    for f in fields:
        t = f.type
        if f.name in index:
            roles[f.name] = _role("ignored", "the pandas index")
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            parts = tuple(TIME_PARTS) if pa.types.is_timestamp(t) else ("weekday",)
            what = "a timestamp" if len(parts) == 2 else "a date"
            if time_features:
                roles[f.name] = dict(_role("time", f"{what}: {' and '.join(parts)} features"), parts=list(parts))
            else:
                roles[f.name] = _role("ignored", f"{what}; --time-features gives its {' and '.join(parts)}")
        elif _kind(t) in ("string", "integer", "float"):
            sampled.append(f.name)
        elif _kind(t) == "list":
            roles[f.name] = _role("categorical", "a list: one feature per element", "lists: one feature per element")
        elif _kind(t) == "categorical":
            roles[f.name] = _role("categorical", "bool" if pa.types.is_boolean(t) else "a dictionary or binary")
        elif pa.types.is_decimal(t):
            roles[f.name] = _role("numeric", "a decimal")
        else:
            roles[f.name] = _role("ignored", f"type {t} cannot be a feature")
    if sampled:
        try:
            sample = _sample(dataset, sampled, sample_rows)
        except (UnreadableData, pa.ArrowException):  # training will say what is wrong, where
            sample = None
        for name in sampled:
            kind = _kind(dataset.column_type(name))
            roles[name] = _role_from_values(name, kind, None if sample is None else sample.column(name))
    return roles


def _role(role: str, why: str, reason: str | None = None) -> dict:
    """A role, the reason for this column (``why``) and, where ``why`` holds this column's own
    numbers, the reason shared with other columns (``reason``, for the one-line summary)."""
    out = {"role": role, "why": why}
    if reason is not None:
        out["reason"] = reason
    return out


def _kind(t: pa.DataType) -> str:
    if is_list_type(t):
        return "list"
    if pa.types.is_dictionary(t):
        return "categorical"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view":
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if (pa.types.is_boolean(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t) or str(t) == "binary_view"):
        return "categorical"
    return "other"


def _pandas_index(schema: pa.Schema) -> set[str]:
    """The columns pandas wrote for a DataFrame's index (named in the file's pandas metadata)."""
    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return set()
    try:
        index = json.loads(raw).get("index_columns", [])
    except (ValueError, AttributeError):
        return set()
    return {c for c in index if isinstance(c, str)}


def _sample(dataset: DataSet, columns: list[str], rows: int) -> pa.Table:
    """The first ``rows`` rows of ``columns``, from the batches that share the first's schema."""
    batches, n = [], 0
    for chunk in dataset.chunks(columns, min(rows, 65536)):
        if batches and not chunk.batch.schema.equals(batches[0].schema):
            break  # another file stores them otherwise: the checks before training say so
        batches.append(chunk.batch.slice(0, rows - n))
        n += batches[-1].num_rows
        if n >= rows:
            break
    return pa.Table.from_batches(batches) if batches else pa.table({c: pa.array([]) for c in columns})


def _role_from_values(name: str, kind: str, values) -> dict:
    default = "categorical" if kind == "string" else "numeric"
    if values is None:
        return _role(default, f"{'strings' if kind == 'string' else 'numbers'} (not sampled: unreadable)")
    present = values.drop_null()
    n = len(present)
    if n == 0:
        return _role(default, "no values in the rows read", "no values in the rows read")
    if kind == "float":
        x = as_numpy(present.cast(pa.float64()))
        if not (np.isfinite(x).all() and (np.floor(x) == x).all() and (np.abs(x) < 2**53).all()):
            return _role("numeric", "floats")
        x = x.astype(np.int64)
    elif kind == "integer":
        x = as_numpy(present)  # (uint64 beyond int64 too)
    else:
        x = None
    distinct = len(pc.unique(present)) if x is None else len(np.unique(x))
    rows = len(values)
    if rows >= MIN_SAMPLE and distinct == 1 and values.null_count == 0:
        first = present[0].as_py()
        return _role("ignored", f"constant: {str(first)[:20]!r} in all {rows:,} rows read", "constant in the rows read")
    if rows >= MIN_SAMPLE and distinct == rows and kind != "float":
        return _role("ignored", f"a row key: {rows:,} distinct values in {rows:,} rows read",
                     "a row key: every value distinct")
    if x is None:
        return _role("categorical", "strings")
    words = _words(name)
    if words & ID_WORDS:
        word = sorted(words & ID_WORDS)[0]
        return _role("categorical", f"an identifier by its name ({word!r})", "identifiers by name")
    if words & QUANTITY_WORDS:
        word = sorted(words & QUANTITY_WORDS)[0]
        return _role("numeric", f"a quantity by its name ({word!r})", "quantities by name")
    whole = "whole floats" if kind == "float" else "integers"
    if distinct <= FEW_VALUES:
        return _role("categorical", f"{whole}, {distinct} distinct values: a code", f"{whole}, few values: codes")
    rank = _size_frequency_rank(x)
    if rank is not None and rank <= QUANTITY_RANK:
        return _role("numeric", f"{whole}, a quantity: small values are the frequent ones (rank correlation "
                     f"{rank:+.2f})", f"{whole} whose small values are frequent: quantities")
    shown = "" if rank is None else f" (rank correlation {rank:+.2f})"
    return _role("categorical", f"{whole}, codes: how often a value occurs is unrelated to its size{shown}",
                 f"{whole} whose frequency ignores size: codes or ids")


def _words(name: str) -> set[str]:
    """Lower-case words of a column name: ``siteId``, ``site_id``, ``SITE-ID`` -> {site, id}."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+|(?<=[A-Za-z])(?=[0-9])", spaced) if w}


def _size_frequency_rank(x: np.ndarray) -> float | None:
    """Spearman rank correlation between the values that occur more than once and how often
    they occur (None with fewer than 3 such values)."""
    values, counts = np.unique(x, return_counts=True)
    repeated = counts >= 2
    if repeated.sum() < 3 or np.ptp(counts[repeated]) == 0:
        return None  # (every repeated value as frequent as the others: no order to find)
    # the values are distinct (np.unique), so their ranks are their order; counts tie often
    rank = np.corrcoef(np.arange(int(repeated.sum()), dtype=np.float64), _average_ranks(counts[repeated]))[0, 1]
    return None if not np.isfinite(rank) else float(rank)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` (0-based), ties given the mean of their ranks: Spearman's ranks. (Here, not
    scipy.stats: importing it cost every run 0.5 s.)"""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks
