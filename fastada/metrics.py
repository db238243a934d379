"""Streaming evaluation metrics: logloss, AUC, normalised entropy, calibration.

:class:`Evaluation` takes (probability, label, weight) chunk by chunk in bounded memory, so a
data set of any size can be scored. AUC comes from a histogram of the predictions keyed by the top
23 bits of their float32 bit pattern (monotone in p for p >= 0): predictions closer than about 3e-5
relative to each other share a bin and count as tied, otherwise the result is the exact
Mann-Whitney AUC.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_SHIFT = 8
_BINS = (0x3F800000 >> _SHIFT) + 1  # float32 bit patterns of [0, 1], shifted
PROBABILITY_FLOOR = 1e-15  # logloss clips p to [floor, 1 - floor], as scikit-learn does


@njit(cache=True, nogil=True)
def _accumulate(p, y, w, positives, negatives):
    loss = 0.0
    for i in range(p.shape[0]):
        q = min(max(np.float64(p[i]), 1e-15), 1.0 - 1e-15)
        wi = np.float64(w[i])
        if y[i] > 0.5:
            loss -= wi * np.log(q)
            positives[np.int64(np.float32(p[i]).view(np.int32)) >> 8] += wi
        else:
            loss -= wi * np.log1p(-q)
            negatives[np.int64(np.float32(p[i]).view(np.int32)) >> 8] += wi
    return loss


@njit(cache=True, nogil=True)
def _auc(positives, negatives):
    below = 0.0  # weight of negatives ranked strictly below the current bin
    area = 0.0
    for b in range(positives.shape[0]):
        area += positives[b] * (below + 0.5 * negatives[b])
        below += negatives[b]
    return area


class Evaluation:
    """Accumulates predictions and labels; :meth:`result` gives the metrics so far."""

    def __init__(self):
        self.positives = np.zeros(_BINS, dtype=np.float64)
        self.negatives = np.zeros(_BINS, dtype=np.float64)
        self.loss = 0.0
        self.weight = 0.0
        self.label_sum = 0.0
        self.prediction_sum = 0.0
        self.rows = 0

    def add(self, probabilities, labels, weights=None) -> None:
        # float64: the loss of p = 1 - 1e-9 needs more digits than float32 has (the AUC histogram
        # takes float32 keys by itself)
        p = np.asarray(probabilities, dtype=np.float64)
        if not np.isfinite(p).all():  # NaN would index past the histogram
            raise ValueError("probabilities must be finite")
        p = np.clip(p, 0.0, 1.0)
        y = np.asarray(labels, dtype=np.float32)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float32)
        self.loss += _accumulate(p, y, w, self.positives, self.negatives)
        self.weight += float(w.sum(dtype=np.float64))
        self.label_sum += float(np.dot(w.astype(np.float64), y))
        self.prediction_sum += float(np.dot(w.astype(np.float64), p))
        self.rows += len(y)

    def result(self) -> dict:
        """logloss, auc, ne (logloss / entropy of the base rate), calibration (mean p / mean y), rows."""
        if self.weight <= 0:
            nan = float("nan")
            return {"logloss": nan, "auc": nan, "ne": nan, "calibration": nan, "rows": self.rows}
        logloss = self.loss / self.weight
        base = self.label_sum / self.weight
        pos = self.positives.sum()
        neg = self.negatives.sum()
        auc = _auc(self.positives, self.negatives) / (pos * neg) if pos > 0 and neg > 0 else float("nan")
        entropy = _binary_entropy(base)
        return {
            "logloss": logloss,
            "auc": float(auc),
            "ne": logloss / entropy if entropy > 0 else float("nan"),
            "calibration": self.prediction_sum / self.label_sum if self.label_sum > 0 else float("nan"),
            "rows": self.rows,
        }


def _binary_entropy(p: float) -> float:
    if p <= 0 or p >= 1:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def evaluate(probabilities, labels, weights=None) -> dict:
    """Metrics of one set of predictions (see :meth:`Evaluation.result`)."""
    e = Evaluation()
    e.add(probabilities, labels, weights)
    return e.result()
