"""The Python API: ``fastada.train(...) -> Model`` and ``fastada.load(path) -> Model``.

It mirrors the command line: the same names, the same defaults, the same checks.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Callable, Sequence

from . import model as _model
from .config import FastadaError, FeatureSpec, LearnConfig, RunConfig, check_environment
from .model import Model
from .reader import DataSet, system_allocator  # (system_allocator: the command line reads through it too)
from .roles import resolve_roles
from .train import Progress, fit, start_numba


NEW_VALUE_LEARNERS = ("adagrad", "ftrl")  # (FM and FFM's factors have no new-value features)


def _reading(fn):
    """``fn`` with Arrow's allocator that suits fastada's reading (:func:`reader.system_allocator`),
    from the roles' sample to the model file."""
    @functools.wraps(fn)
    def reading(*args, **kwargs):
        with system_allocator():
            return fn(*args, **kwargs)
    return reading


@_reading
def train(data, *, label: str = "label", model: str | os.PathLike | None = None,
          categorical: Sequence[str] | None = None, numeric: Sequence[str] | None = None,
          ignore: Sequence[str] = (), weight: str | None = None,
          crosses: Sequence[tuple[str, str]] = (), list_weights: dict[str, str] | None = None,
          bits: int = 24, hash_seed: int = 0,
          numeric_mode: str = "both", time_features: bool = False, new_values: bool | None = None,
          lr: float | str = LearnConfig.lr,
          l1: float = 0.0, l2: float = 0.0,
          eps: float = LearnConfig.eps, initial_accumulator: float = 0.0, epochs: int = 1,
          all_epochs: bool = False,
          threads: int | str | None = None, seed: int = 0, chunk_rows: int = LearnConfig.chunk_rows,
          shuffle: bool = False, lr_decay: float = 1.0, holdout_every: int = 0,
          bad_rows: str = "fail", learner: str = "adagrad", beta: float = 1.0, negative_rate: float = 1.0,
          factors: int = LearnConfig.factors, factor_bits: int = LearnConfig.factor_bits,
          factor_lr: float | str = LearnConfig.factor_lr, factor_l2: float = LearnConfig.factor_l2,
          valid=None,
          eval_every_rows: int = 0, early_stop: int = 0,
          checkpoint_dir: str | os.PathLike | None = None, checkpoint_every_rows: int = 0,
          checkpoint_every_seconds: float = 0.0, keep_checkpoints: int = 3, resume: bool = False,
          log_json: str | os.PathLike | None = None, cache_mb: float | None = None,
          on_chunk: Callable[[Progress], None] | None = None,
          on_evaluation: Callable[[dict], None] | None = None,
          on_note: Callable[[str], None] | None = None, stop: threading.Event | None = None,
          init: Model | str | os.PathLike | None = None, dask: str | None = None, client=None,
          sync_every_rows: int | None = None, combine: str = "blend") -> Model:
    """Train a logistic model with Hogwild per-feature Adagrad (or, ``learner="ftrl"``,
    FTRL-Proximal: ``lr`` is its alpha, ``beta`` its beta; ``learner="fm"`` / ``"ffm"``, a
    (field-aware) factorization machine: ``factors`` latent factors per feature (and field) in
    2**``factor_bits`` slots, learned at ``factor_lr`` (or "auto", the default: raced as ``lr``
    is) with L2 ``factor_l2`` over the Adagrad linear model) on ``data``.

    data: Parquet file(s), folder(s), glob(s), filesystem URI(s), or data in memory: a
    ``pyarrow.Table``, a pandas DataFrame, or any Arrow PyCapsule stream (polars, DuckDB; read whole).
    Columns not named in ``categorical``/``numeric``/``ignore`` take a role by their type, the
    file's pandas metadata and their first values (:mod:`fastada.roles`: integer ids and codes
    categorical, quantities numeric; the pandas index, constant columns and row keys ignored);
    ``time_features``: timestamp and date columns give hour and weekday features (else ignored).
    ``new_values`` (default: on for ``learner="adagrad"`` and ``"ftrl"``, which have them): each
    categorical column, bucket and cross gets a *new value* feature, learned from the first
    sighting of each value and used for values never seen in training (see
    :class:`FeatureSpec`), where they would otherwise count for nothing.
    ``list_weights``: {list column: list<number> column} gives each element of a list column
    (tags, a sparse row's indices) a value from the parallel list (tag scores, the row's values).
    ``model.summary["roles"]`` says what each column became and why.
    ``threads=1`` is sequential and bit-for-bit repeatable; ``threads="auto"`` (or None, the
    default) measures reading and learning on the first chunks and splits the cores between them.
    ``model``: if given, the trained model is also written there (atomically).
    ``init``: a model (of ``learner="adagrad"``), or its file, to continue: its columns, roles, bits and hash
    seed, its weights and Adagrad accumulators, and (with ``lr="auto"``) its learning rate are
    taken; ``data`` is learned as more rows of the same run (the next day's logs, the next
    batch of ``partial_fit``). Column roles cannot be given with it.

    Validation: ``valid`` (data evaluated at the end of each epoch and every ``eval_every_rows``
    rows) and/or ``holdout_every=K`` (every K-th row held out and scored, never learned).
    ``early_stop=P`` stops after P evaluations without a better validation logloss (``valid``'s,
    else the holdout's) and returns the best model. ``checkpoint_dir`` (+ ``checkpoint_every_rows``
    / ``checkpoint_every_seconds``, ``keep_checkpoints``) writes the training state; ``resume``
    continues from the newest one (with ``threads=1``: the same model, bit for bit, as a run
    never interrupted). ``log_json``: one JSON line per evaluation. ``cache_mb``: memory for the
    first epoch's hashed rows, which later epochs learn from without reading the data again (None:
    up to a quarter of the memory available; 0: read and hash every epoch). ``bad_rows="skip"`` learns
    nothing from rows with a bad label or weight and from unreadable files or row groups, and
    counts them in ``model.summary`` (default "fail": stop with an error naming the first).

    Distributed (``pip install 'fastada[dask]'``): ``client`` (a ``distributed.Client``) or ``dask``
    (``"local:N"`` for N worker processes here, or a scheduler's ``tcp://HOST:PORT``) trains on the
    cluster's workers, their models combined every ``sync_every_rows`` rows per worker and at each
    epoch's end (``combine``: "blend", the default, "steps" or "average": how the workers' changes
    to one slot combine, see :mod:`fastada.distributed`); ``data`` must be files or URIs every
    worker can read.

    >>> m = fastada.train("train.parquet", label="label", bits=20)   # doctest: +SKIP
    >>> m.evaluate("test.parquet")["logloss"]                         # doctest: +SKIP
    """
    check_environment()
    asked_new_values = new_values  # (a continued model keeps its own unless this is given)
    if new_values is None:
        new_values = learner in NEW_VALUE_LEARNERS
    elif new_values and learner not in NEW_VALUE_LEARNERS:
        raise FastadaError(f"new_values: only learner='adagrad' and 'ftrl' have new-value features, not {learner!r}")
    learn = LearnConfig(lr=lr, l1=l1, l2=l2, eps=eps, initial_accumulator=initial_accumulator,
                        epochs=epochs, all_epochs=all_epochs, threads=threads if threads is not None else "auto",
                        seed=seed, chunk_rows=chunk_rows, shuffle=shuffle, lr_decay=lr_decay,
                        holdout_every=holdout_every, bad_rows=bad_rows, learner=learner, beta=beta,
                        negative_rate=negative_rate, factors=factors, factor_bits=factor_bits,
                        factor_lr=factor_lr, factor_l2=factor_l2)
    run = RunConfig(eval_every_rows=eval_every_rows, early_stop=early_stop,
                    checkpoint_dir=os.fspath(checkpoint_dir) if checkpoint_dir is not None else None,
                    checkpoint_every_rows=checkpoint_every_rows,
                    checkpoint_every_seconds=checkpoint_every_seconds, keep_checkpoints=keep_checkpoints,
                    resume=resume, log_json=os.fspath(log_json) if log_json is not None else None,
                    cache_mb=cache_mb)
    if isinstance(data, (DataSet,)):
        dataset = data
    else:
        FeatureSpec(label=label, bits=bits, hash_seed=hash_seed, numeric_mode=numeric_mode)  # check early
        dataset = DataSet(data, skip_unreadable=bad_rows == "skip")
    init_path = None
    if init is not None and not isinstance(init, Model):
        init_path = os.fspath(init)
        init = _model.load(init_path)
    start_numba()
    if init is None:
        spec, roles = resolve_roles(dataset, label=label, categorical=categorical, numeric=numeric, ignore=ignore,
                                     weight=weight, crosses=crosses, bits=bits, hash_seed=hash_seed,
                                     numeric_mode=numeric_mode, time_features=time_features,
                                     list_weights=tuple((list_weights or {}).items()), new_values=new_values)
    else:
        spec, roles = _continued_spec(init, label=label, bits=bits, hash_seed=hash_seed, numeric_mode=numeric_mode,
                                      new_values=asked_new_values,
                                      roles=dict(categorical=categorical, numeric=numeric, ignore=ignore, weight=weight,
                                                 crosses=crosses, time_features=time_features,
                                                 list_weights=list_weights))
    valid_set = None if valid is None else valid if isinstance(valid, DataSet) else DataSet(valid)
    # every output checked now, not after hours of training
    inputs = [path for data_set in (dataset, valid_set) if data_set is not None
              for fs, path in data_set.files if fs is None] + ([init_path] if init_path else [])
    _model.check_outputs({"--model": model, "--log-json": log_json, "--checkpoint-dir": checkpoint_dir}, inputs)
    if client is not None or dask is not None:
        trained = _fit_distributed(data, dataset, spec, learn, run, dask, client, sync_every_rows, combine,
                                   valid=valid_set,
                                   on_chunk=on_chunk, on_evaluation=on_evaluation, on_note=on_note, stop=stop,
                                   roles=roles, init=init)
    elif sync_every_rows is not None:
        raise FastadaError("sync_every_rows is for distributed training: give dask= or client= too")
    else:
        trained = fit(dataset, spec, learn, run, valid=valid_set, on_chunk=on_chunk,
                      on_evaluation=on_evaluation, on_note=on_note, stop=stop, roles=roles, init=init)
    if model is not None:
        trained.save(model)
    return trained


def _fit_distributed(data, dataset, spec, learn, run, address, client, sync_every_rows, combine, **kwargs) -> Model:
    from . import distributed
    if client is not None and address is not None:
        raise FastadaError("give dask= (an address) or client= (a distributed.Client), not both")
    sync_every_rows = sync_every_rows or distributed.SYNC_EVERY_ROWS
    distributed.check(data, dataset, learn, sync_every_rows, combine)  # before a cluster is started
    close, threads = (lambda: None), "auto"
    if client is None:
        client, close, threads = distributed.connect(address)
    if learn.threads != "auto":
        threads = learn.threads  # each worker's learners, as given
    try:
        return distributed.fit(client, data, dataset, spec, learn, run, worker_threads=threads,
                               sync_every_rows=sync_every_rows, combine=combine, **kwargs)
    finally:
        close()


def _continued_spec(init: Model, roles: dict, **spec_values) -> tuple[FeatureSpec, dict | None]:
    """``init``'s spec and roles, for a run that continues it: a setting left at its default
    takes the model's; one given otherwise than the model's is refused, as are column roles."""
    given = [name for name, value in roles.items() if value]
    if given:
        raise FastadaError(f"init: a continued model keeps its own columns and roles; leave out {', '.join(given)}")
    defaults = {name: train.__wrapped__.__kwdefaults__[name] for name in spec_values}  # (train: @_reading)
    for name, value in spec_values.items():
        theirs = getattr(init.spec, name)
        if value != defaults[name] and value != theirs:
            raise FastadaError(f"init: the model was trained with {name}={theirs!r}, not {value!r}; "
                               f"a continued model keeps its own")
    return init.spec, init.summary.get("roles")


def open_data(data) -> tuple[DataSet, list[str]]:
    """``data`` (paths, folders, globs, URIs or a table) as a :class:`DataSet`, and its local files
    (for refusing an output that is one of them)."""
    dataset = data if isinstance(data, DataSet) else DataSet(data)
    return dataset, [path for fs, path in dataset.files if fs is None]


def load(path: str | os.PathLike, *, mmap: bool = False, verify: bool | None = None) -> Model:
    """Read a model written by :meth:`Model.save` (``mmap=True`` maps the weights)."""
    return _model.load(path, mmap=mmap, verify=verify)
