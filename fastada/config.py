"""Configuration: what defines the features and how to learn, each one frozen dataclass.

Every user-supplied parameter is checked here, once, at the boundary; the rest of fastada
assumes valid values. Errors are :class:`FastadaError` with a message naming what was given,
what is accepted and (where it helps) what to do.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

NUMERIC_MODES = ("value", "bucket", "both")


class FastadaError(Exception):
    """A problem with the user's input, data or files; the message says which and what to do."""


class UnreadableData(FastadaError):
    """A file or row group that cannot be read (corrupt, truncated, removed): the data, not the
    settings, are at fault, so ``bad_rows="skip"`` may skip it."""


BAD_ROWS = ("fail", "skip")
LEARNERS = ("adagrad", "ftrl", "fm", "ffm")


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns become which features, and how they are hashed.

    label: the 0/1 (or -1/1, or bool) target column. weight: optional per-row weight column.
    categorical: columns hashed by value (one feature each, value 1). numeric: columns turned into
    a value feature and/or a bucket feature (``numeric_mode``). crosses: pairs of categorical or
    numeric columns whose hashes are combined into one more feature each. bits: log2 of the
    number of hashed slots. hash_seed: seeds every column's hash (column seed =
    murmur3(name, hash_seed)). schema: the Arrow types the feature columns had in training (an
    Arrow IPC schema, base64; "" = unknown), so that data stored otherwise at scoring time, whose
    values would hash to other slots, is refused instead of scored wrong. list_weights: pairs
    (list column, list<number> column) whose second gives each element of the first its value
    (else 1): a row's tag scores, a sparse matrix's values. new_values: each categorical feature
    (a column's value, a numeric bucket, a cross) whose slot has weight 0 when its row is scored
    (a value not learned yet, or one L1 set to 0) also counts that column's *new value* feature,
    a slot of its own: learned on every first sight of a value, it gives values never seen in
    training what first sightings were worth instead of nothing (see :mod:`fastada.kernels`).
    """

    label: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    weight: str | None = None
    crosses: tuple[tuple[str, str], ...] = ()
    bits: int = 24
    hash_seed: int = 0
    numeric_mode: str = "both"
    schema: str = ""
    list_weights: tuple[tuple[str, str], ...] = ()
    new_values: bool = False

    def __post_init__(self):
        _check_int("bits", self.bits, 1, 31)
        _check_int("hash_seed", self.hash_seed, 0, 2**32 - 1)
        if self.numeric_mode not in NUMERIC_MODES:
            raise FastadaError(f"numeric_mode {self.numeric_mode!r} is not one of {NUMERIC_MODES}")
        features = list(self.categorical) + list(self.numeric)
        seen = set()
        for name in features:
            if name in seen:
                raise FastadaError(f"column {name!r} is given more than one role")
            seen.add(name)
        for name in (self.label, self.weight):
            if name is not None and name in seen:
                raise FastadaError(f"column {name!r} cannot be both a feature and the label/weight")
        for name, weights in self.list_weights:
            if name not in self.categorical:
                raise FastadaError(f"list weights {name}={weights}: column {name!r} is not a categorical feature")
            if weights in seen or weights in (self.label, self.weight):
                raise FastadaError(f"list weights {name}={weights}: column {weights!r} already has another role")
        for a, b in self.crosses:
            for name in (a, b):
                if name not in seen:
                    raise FastadaError(
                        f"cross {a}*{b}: column {name!r} is not a categorical or numeric feature")

    @property
    def slots(self) -> int:
        return 1 << self.bits

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.categorical + self.numeric

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        d = dict(d)
        for key in ("categorical", "numeric"):
            d[key] = tuple(d.get(key, ()))
        d["crosses"] = tuple(tuple(pair) for pair in d.get("crosses", ()))
        d["list_weights"] = tuple(tuple(pair) for pair in d.get("list_weights", ()))
        return cls(**d)


@dataclass(frozen=True)
class LearnConfig:
    """How to learn: Adagrad's rate, regularisation, passes, threads, chunking and seed.

    lr: Adagrad's learning rate, or "auto" (the default): raced on the first rows of the data
    (see :mod:`fastada.train`; the best rate differs 25-fold between real logs); l1, l2: per-step
    proximal regularisation strengths;
    eps: added to sqrt(G); initial_accumulator: G of a fresh slot. all_epochs: learn all
    ``epochs`` even where lr="auto"'s race found that fewer predict unseen rows better (by
    default training then learns fewer and says so). lr_decay: the rate is
    multiplied by this at the start of every epoch after the first (1 = no decay; Adagrad already
    shrinks each slot's steps). holdout_every: every K-th row of the data set (file order, the
    same rows every epoch) is held out of learning and scored instead, as Vowpal Wabbit does
    (0 = none). bad_rows: "fail" stops at the first bad row (null or out-of-set label, null,
    negative or non-finite weight) or unreadable row group; "skip" learns nothing from them, counts
    them and goes on. threads: Hogwild threads (1 = sequential, deterministic; "auto": the cores are
split between reading and learning by rates measured on the first chunks). chunk_rows: rows read,
    hashed and learned at a time. shuffle: row groups in a new order each epoch and rows in a new
    order within each chunk (out of core: never the whole data set), seeded by ``seed``.
    learner="ffm" (:mod:`fastada.ffm`; "fm": one vector per feature, not per feature and field):
    ``factors`` latent factors per feature and field, in
    2**``factor_bits`` factor slots, learned by Adagrad at ``factor_lr`` with L2 ``factor_l2``
    (libffm's k, eta and lambda); the linear part learns as ``learner="adagrad"``. factor_lr
    "auto" (the default): raced on the first rows after the linear rate (see :mod:`fastada.train`;
    the best differed twentyfold between real logs, 0.06 to 1.5).
    """

    lr: float | str = "auto"
    l1: float = 0.0
    l2: float = 0.0
    eps: float = 1e-8
    initial_accumulator: float = 0.0
    epochs: int = 1
    all_epochs: bool = False
    threads: int | str = "auto"
    seed: int = 0
    chunk_rows: int = 65536
    shuffle: bool = True
    lr_decay: float = 1.0
    holdout_every: int = 0
    bad_rows: str = "fail"
    learner: str = "adagrad"
    beta: float = 1.0
    negative_rate: float = 1.0
    factors: int = 4
    factor_bits: int = 18
    factor_lr: float | str = "auto"
    factor_l2: float = 2e-5

    def __post_init__(self):
        if self.lr != "auto" and not (_is_number(self.lr) and self.lr > 0):
            raise FastadaError(f"lr must be 'auto' or a positive number, got {self.lr!r}")
        for name in ("l1", "l2", "initial_accumulator"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise FastadaError(f"{name} must be a number >= 0, got {value!r}")
        if not (_is_number(self.eps) and self.eps > 0):
            raise FastadaError(f"eps must be a positive number, got {self.eps!r}")
        _check_int("epochs", self.epochs, 1, 10**6)
        if self.threads != "auto":
            if isinstance(self.threads, str) or isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                    or not 1 <= self.threads <= 4096:
                raise FastadaError(f"threads must be 'auto' or an integer in 1..4096, got {self.threads!r}")
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("chunk_rows", self.chunk_rows, 1, 2**26)
        if not (_is_number(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise FastadaError(f"lr_decay must be a number in (0, 1], got {self.lr_decay!r}")
        if not (_is_number(self.negative_rate) and 0 < self.negative_rate <= 1):
            raise FastadaError(f"negative_rate must be a number in (0, 1], got {self.negative_rate!r}")
        if self.learner not in LEARNERS:
            raise FastadaError(f"learner must be one of {', '.join(LEARNERS)}, got {self.learner!r}")
        _check_int("factors", self.factors, 1, 256)
        _check_int("factor_bits", self.factor_bits, 1, 31)
        if self.factor_lr != "auto" and not (_is_number(self.factor_lr) and self.factor_lr > 0):
            raise FastadaError(f"factor_lr must be 'auto' or a positive number, got {self.factor_lr!r}")
        if not (_is_number(self.factor_l2) and self.factor_l2 >= 0):
            raise FastadaError(f"factor_l2 must be a number >= 0, got {self.factor_l2!r}")
        if not (_is_number(self.beta) and self.beta >= 0):
            raise FastadaError(f"beta must be a number >= 0, got {self.beta!r}")
        if self.bad_rows not in BAD_ROWS:
            raise FastadaError(f"bad_rows must be one of {BAD_ROWS}, got {self.bad_rows!r}")
        if self.holdout_every != 0:
            _check_int("holdout_every", self.holdout_every, 2, 2**62)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_environment() -> None:
    """Refuse settings from the environment that fastada cannot run with (see ``__init__``)."""
    import fastada
    if fastada.BAD_NUMBA_THREADS is not None:
        raise FastadaError(f"NUMBA_NUM_THREADS={fastada.BAD_NUMBA_THREADS!r} is not a number of threads (1 or more); "
                           f"unset it or set it to the threads Numba may use")


def default_threads() -> int:
    """Scoring threads when none are asked for: half the cores; the other half reads and hashes.
    (Training measures its own split: ``threads="auto"``.)"""
    return max(1, (os.cpu_count() or 1) // 2)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FastadaError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """How a training run reports, validates, stops early and checkpoints.

    eval_every_rows: also evaluate every this many rows (0: only at the end of each epoch).
    early_stop: stop after this many evaluations in a row without a better validation logloss,
    and keep the best model (0: off; needs a validation set or a holdout). checkpoint_dir: where
    checkpoints go (None: none); checkpoint_every_rows / checkpoint_every_seconds: how often (0:
    not by that measure; with a folder and neither, once per epoch); keep_checkpoints: how many
    of the newest to keep. resume: continue from the newest valid checkpoint in the folder.
    log_json: a file that receives one JSON object per evaluation. cache_mb: with several epochs,
    the hashed features of the first are kept in memory, up to this many MiB, and later epochs
    learn from them instead of reading and hashing the data again (None: up to a quarter of the
    memory available when training starts; 0: never).
    """

    eval_every_rows: int = 0
    early_stop: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every_rows: int = 0
    checkpoint_every_seconds: float = 0.0
    keep_checkpoints: int = 3
    resume: bool = False
    log_json: str | None = None
    cache_mb: float | None = None

    def __post_init__(self):
        _check_int("eval_every_rows", self.eval_every_rows, 0, 2**62)
        if self.cache_mb is not None and not (_is_number(self.cache_mb) and self.cache_mb >= 0):
            raise FastadaError(f"cache_mb must be a number >= 0 (0: no cache), got {self.cache_mb!r}")
        _check_int("early_stop", self.early_stop, 0, 10**6)
        _check_int("checkpoint_every_rows", self.checkpoint_every_rows, 0, 2**62)
        if not (_is_number(self.checkpoint_every_seconds) and self.checkpoint_every_seconds >= 0):
            raise FastadaError(f"checkpoint_every_seconds must be a number >= 0, "
                               f"got {self.checkpoint_every_seconds!r}")
        _check_int("keep_checkpoints", self.keep_checkpoints, 1, 10**4)
        if self.checkpoint_dir is None and (self.checkpoint_every_rows or self.checkpoint_every_seconds):
            raise FastadaError("checkpoint_every_rows/seconds need a checkpoint folder (--checkpoint-dir)")
        if self.resume and self.checkpoint_dir is None:
            raise FastadaError("resume needs the checkpoint folder to resume from (--checkpoint-dir)")
