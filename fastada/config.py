"""Configuration: what defines the features and how to learn, each one frozen dataclass.

Every user-supplied parameter is checked here, once, at the boundary; the rest of fastada
assumes valid values. Errors are :class:`FastadaError` with a message naming what was given,
what is accepted and (where it helps) what to do.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

NUMERIC_MODES = ("value", "bucket", "both")


class FastadaError(Exception):
    """A problem with the user's input, data or files; the message says which and what to do."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns become which features, and how they are hashed.

    label: the 0/1 (or -1/1, or bool) target column. weight: optional per-row weight column.
    categorical: columns hashed by value (one feature each, value 1). numeric: columns turned into
    a value feature and/or a bucket feature (``numeric_mode``). crosses: pairs of categorical or
    numeric columns whose hashes are combined into one more feature each. bits: log2 of the
    number of hashed slots. hash_seed: seeds every column's hash (column seed =
    murmur3(name, hash_seed)).
    """

    label: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    weight: str | None = None
    crosses: tuple[tuple[str, str], ...] = ()
    bits: int = 24
    hash_seed: int = 0
    numeric_mode: str = "both"

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
        return cls(**d)


@dataclass(frozen=True)
class LearnConfig:
    """How to learn: Adagrad's rate, regularisation, passes, threads, chunking and seed.

    lr: Adagrad's learning rate; l1, l2: per-step proximal regularisation strengths;
    eps: added to sqrt(G); initial_accumulator: G of a fresh slot. threads: Hogwild threads
    (1 = sequential, deterministic). chunk_rows: rows read, hashed and learned at a time.
    """

    lr: float = 0.1
    l1: float = 0.0
    l2: float = 0.0
    eps: float = 1e-8
    initial_accumulator: float = 0.0
    epochs: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    chunk_rows: int = 65536
    shuffle: bool = True

    def __post_init__(self):
        if not (_is_number(self.lr) and self.lr > 0):
            raise FastadaError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("l1", "l2", "initial_accumulator"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise FastadaError(f"{name} must be a number >= 0, got {value!r}")
        if not (_is_number(self.eps) and self.eps > 0):
            raise FastadaError(f"eps must be a positive number, got {self.eps!r}")
        _check_int("epochs", self.epochs, 1, 10**6)
        _check_int("threads", self.threads, 1, 4096)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("chunk_rows", self.chunk_rows, 1, 2**26)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FastadaError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
