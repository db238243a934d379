"""Checkpoints: the whole training state in one file, written so a kill never loses the last one.

A checkpoint is a fastada file (the model format, ``kind: "checkpoint"``) holding the slot table
as it is mid-training (weights, accumulators and lazy-regularisation clocks, raw), optionally the
best model so far, and a JSON ``state``: configuration, data fingerprint, stream position
(epoch, place in the epoch's row-group order, row), loss sums and the evaluation history.
Shuffling draws from generators seeded by (seed, epoch, row group, row), so the position is the
whole random state.

Files are named ``checkpoint-<rows>.fastada`` after the rows seen, written to a temporary name,
fsynced and renamed, and only then are older ones beyond ``keep`` removed: at every moment the
newest complete checkpoint is on disk. Reading tries the newest first and falls back to older
ones when a file is damaged (each array carries a CRC-32).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from .config import FastadaError
from .model import read_file, write_file

_NAME = re.compile(r"^checkpoint-(\d{20})\.fastada$")


@dataclass
class Checkpoint:
    path: str
    state: dict
    arrays: dict[str, np.ndarray]


def save(directory: str, rows: int, state: dict, arrays: dict[str, np.ndarray], keep: int) -> str:
    """Write a checkpoint for ``rows`` rows seen, then drop all but the ``keep`` newest."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"checkpoint-{rows:020d}.fastada")
    shapes = {name: list(a.shape) for name, a in arrays.items()}
    write_file(path, {"kind": "checkpoint", "state": state, "shapes": shapes}, arrays)
    for old in _listed(directory)[:-keep]:
        _remove(old)
    for name in os.listdir(directory):  # temporary files of writes killed half-way
        if name.startswith(".checkpoint-") and name.endswith(".tmp"):
            _remove(os.path.join(directory, name))
    return path


def newest(directory: str) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint in ``directory`` that reads back whole, and why newer ones did not."""
    skipped = []
    if not os.path.isdir(directory):
        return None, skipped
    for path in reversed(_listed(directory)):
        try:
            return _read(path), skipped
        except FastadaError as e:
            skipped.append(str(e))
    return None, skipped


def _read(path: str) -> Checkpoint:
    header, read = read_file(path, verify=True)
    if header.get("kind") != "checkpoint":
        raise FastadaError(f"{path}: not a checkpoint")
    try:
        state, shapes = header["state"], header["shapes"]
        arrays = {name: read(name, tuple(int(x) for x in shape)) for name, shape in shapes.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FastadaError(f"{path}: corrupt checkpoint header ({e})") from None
    return Checkpoint(path, state, arrays)


def existing(directory: str) -> list[str]:
    """The checkpoint files in ``directory`` (none if it does not exist), oldest first."""
    return _listed(directory) if os.path.isdir(directory) else []


def _listed(directory: str) -> list[str]:
    """Checkpoint files in ``directory``, oldest first."""
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory)) if _NAME.match(n)]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
