"""A Criteo-like synthetic data set with a planted ground truth.

Schema: ``label`` (int8), ``I1..I13`` (int64, nullable, heavy-tailed counts, one can be
negative), ``C1..C26`` (8-hex-digit strings, nullable, Zipf-skewed, cardinalities from a
handful to about a million). The truth is a logistic model:

    logit = b + sum_c effect_c[value_c] + sum_i f_i(I_i) + sum_pairs effect_pair[(value_a, value_b)]

with Gaussian per-value effects (nulls have an effect of their own), smooth non-linear f_i of
log1p(I_i), and two planted pairwise interactions: by default a random effect for every pair of
values, which only a cross can learn; with ``pairs="latent"`` the dot product of two 4-number
vectors, one for each value (users' affinities for items, the structure that factorization
machines assume), of the same spread. So a linear model on hashed one-hot features gets close
to, but not quite to, the Bayes optimum, which truth.json reports for the test set. The intercept
``b`` sets the mean click rate (``click_rate``, 0.25 by default; display-ad logs have 0.1-5%).

Rows are generated and written a row group at a time, so memory stays bounded for any size.
"""

from __future__ import annotations

import json
import math
import os

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from numba import njit

from .config import FastadaError
from .metrics import evaluate
from .model import atomic_write

N_NUMERIC = 13
N_CATEGORICAL = 26
ROW_GROUP = 1 << 18
INTERACTIONS = ((0, 1), (2, 7))  # categorical column pairs with a planted joint effect
PAIRS = ("table", "latent")  # how their effect is made (see the module's docstring)
CLICK_RATE = 0.25  # the mean click rate the intercept is solved for
LATENT_DIMS = 4


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: a bijection on uint32, used to scramble ids."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


_GUIDE = 1 << 16


@njit(cache=True, nogil=True)
def _sample(cdf, guide, rank_to_id, u):
    """Inverse-CDF sampling with a guide table: ``guide[k]`` is the first rank with cdf >= k/G."""
    out = np.empty(u.shape[0], dtype=np.int32)
    last = cdf.shape[0] - 1
    for i in range(u.shape[0]):
        r = guide[int(u[i] * guide.shape[0])]
        while r < last and cdf[r] < u[i]:
            r += 1
        out[i] = rank_to_id[r]
    return out


@njit(cache=True, nogil=True)
def _add_effect(z, effect, ids):
    for i in range(z.shape[0]):
        z[i] += effect[ids[i]]


class _Truth:
    """The planted model and the distributions of every column, drawn from one seed."""

    def __init__(self, seed: int, zipf: tuple[float, float] = (1.05, 1.5), pairs: str = "table",
                 click_rate: float = CLICK_RATE):
        if not (isinstance(click_rate, (int, float)) and not isinstance(click_rate, bool)
                and 0.0001 <= click_rate <= 0.9):
            raise FastadaError(f"click_rate must be a number in [0.0001, 0.9], got {click_rate!r}")
        rng = np.random.default_rng(seed)
        self.cardinality = np.rint(np.geomspace(3, 1_000_000, N_CATEGORICAL)).astype(np.int64)
        rng.shuffle(self.cardinality)
        self.zipf = rng.uniform(zipf[0], zipf[1], N_CATEGORICAL)
        self.cat_null = np.where(rng.random(N_CATEGORICAL) < 0.4, rng.uniform(0.01, 0.45, N_CATEGORICAL), 0.0)
        self.cat_scale = rng.uniform(0.1, 0.4, N_CATEGORICAL)
        self.cdf, self.guide, self.rank_to_id, self.effect, self.dictionary = [], [], [], [], []
        hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
        for c in range(N_CATEGORICAL):
            v = int(self.cardinality[c])
            weights = np.arange(1, v + 1, dtype=np.float64) ** -self.zipf[c]
            cdf = np.cumsum(weights) / weights.sum()
            self.cdf.append(cdf)
            self.guide.append(np.searchsorted(cdf, np.arange(_GUIDE) / _GUIDE).astype(np.int64))
            self.rank_to_id.append(rng.permutation(v).astype(np.int32))
            # effects shrink with rarity a little, as real click logs do
            self.effect.append(rng.normal(0.0, self.cat_scale[c], v + 1))  # [v] = null
            ids = _fmix32(np.arange(v, dtype=np.uint32) + np.uint32(c * 1_000_003 + seed))
            nibbles = (ids[:, None] >> np.arange(28, -4, -4, dtype=np.uint32)) & np.uint32(15)
            data = hexdigits[nibbles].reshape(-1)
            offsets = np.arange(0, 8 * v + 1, 8, dtype=np.int32)
            self.dictionary.append(pa.StringArray.from_buffers(v, pa.py_buffer(offsets), pa.py_buffer(data)))
        self.num_mu = rng.uniform(0.0, 4.0, N_NUMERIC)
        self.num_sigma = rng.uniform(0.6, 1.8, N_NUMERIC)
        self.num_null = np.where(rng.random(N_NUMERIC) < 0.6, rng.uniform(0.0, 0.45, N_NUMERIC), 0.0)
        self.num_linear = rng.normal(0.0, 0.15, N_NUMERIC)
        self.num_curve = rng.normal(0.0, 0.04, N_NUMERIC)
        self.num_null_effect = rng.normal(0.0, 0.3, N_NUMERIC)
        self.pair_scale = 0.5
        self.pair_seed = [int(x) for x in rng.integers(0, 2**31, len(INTERACTIONS))]
        if pairs not in PAIRS:
            raise FastadaError(f"pairs must be one of {', '.join(PAIRS)}, got {pairs!r}")
        self.latent = None
        if pairs == "latent":  # (drawn apart, so that the rest of the truth is the same either way)
            latent_rng = np.random.default_rng([seed, 7])
            # <u, v> of LATENT_DIMS normals of spread s has spread s^2 sqrt(dims): the table's
            # effects' (pair_scale / sqrt(3), uniform)
            s = math.sqrt(self.pair_scale / math.sqrt(3) / math.sqrt(LATENT_DIMS))
            self.latent = [tuple(latent_rng.normal(0.0, s, (int(self.cardinality[c]) + 1, LATENT_DIMS)) for c in pair)
                           for pair in INTERACTIONS]
        self.bias = 0.0
        z = self._draw(np.random.default_rng(seed + 1), 100_000)[2]
        # Newton steps on mean(sigmoid(z + b)) = click_rate (which rises with b), kept within the
        # bracket the steps so far have found: a step out of it (Newton overshoots far from the
        # root) halves the bracket instead
        bias, low, high = -1.0, -50.0, 50.0
        for _ in range(50):
            p = _sigmoid(z + bias)
            gap = p.mean() - click_rate
            if gap > 0:
                high = min(high, bias)
            else:
                low = max(low, bias)
            bias -= gap / max((p * (1 - p)).mean(), 1e-3 * min(1.0, click_rate / CLICK_RATE))
            if not low <= bias <= high:
                bias = 0.5 * (low + high)
        self.bias = bias

    def _draw(self, rng, n):
        """(categorical ids with -1 for null, numeric values with NaN for null, logits)."""
        cat = np.empty((N_CATEGORICAL, n), dtype=np.int32)
        z = np.full(n, self.bias)
        for c in range(N_CATEGORICAL):
            ids = _sample(self.cdf[c], self.guide[c], self.rank_to_id[c], rng.random(n))
            if self.cat_null[c]:
                ids[rng.random(n) < self.cat_null[c]] = -1
            cat[c] = ids
            _add_effect(z, self.effect[c], ids)  # id -1 picks the null effect (the last entry)
        num = np.empty((N_NUMERIC, n), dtype=np.float64)
        for i in range(N_NUMERIC):
            x = np.floor(np.exp(rng.normal(self.num_mu[i], self.num_sigma[i], n))) - (1.0 if i == 1 else 0.0)
            u = np.log1p(np.maximum(x, 0.0))
            effect = self.num_linear[i] * u + self.num_curve[i] * (u - self.num_mu[i]) ** 2
            missing = rng.random(n) < self.num_null[i]
            x[missing] = np.nan
            num[i] = x
            z += np.where(missing, self.num_null_effect[i], effect)
        for term in self.pair_terms(cat):
            z += term
        return cat, num, z

    def pair_terms(self, cat):
        """Each planted interaction's share of the logit, for categorical ids ``cat``."""
        terms = []
        for p, ((a, b), pair_seed) in enumerate(zip(INTERACTIONS, self.pair_seed)):
            if self.latent is not None:  # (a null's vector: the last)
                u, v = self.latent[p]
                terms.append(np.einsum("ij,ij->i", u[cat[a]], v[cat[b]]))
                continue
            key = _fmix32((cat[a].astype(np.int64) * 1_000_003 + cat[b] + pair_seed).astype(np.uint32))
            terms.append(self.pair_scale * (key.astype(np.float64) / 2**32 * 2 - 1))
        return terms

    def batch(self, rng, n):
        """(record batch, true click probabilities) for ``n`` fresh rows."""
        cat, num, z = self._draw(rng, n)
        p = _sigmoid(z)
        label = (rng.random(n) < p).astype(np.int8)
        columns = [pa.array(label)]
        for i in range(N_NUMERIC):
            x = num[i]
            columns.append(pa.array(np.nan_to_num(x).astype(np.int64), mask=np.isnan(x)))
        for c in range(N_CATEGORICAL):
            ids = cat[c]
            mask = ids < 0
            indices = pa.array(np.where(mask, 0, ids), type=pa.int32(), mask=mask if mask.any() else None)
            # plain strings: the Parquet writer dictionary-encodes them itself and falls back to
            # plain pages for large vocabularies, as real click-log files do
            columns.append(self.dictionary[c].take(indices))
        return pa.RecordBatch.from_arrays(columns, names=column_names()), p, label


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def pair_gap(seed: int = 0, zipf: tuple[float, float] = (1.05, 1.5), pairs: str = "table",
             rows: int = 1_000_000, click_rate: float = CLICK_RATE) -> dict:
    """How much test logloss the planted interactions are worth: the mean KL divergence from the
    truth (logloss above the Bayes optimum) of the truth without them (``without_pairs``), and of
    the truth without them but with what additive per-value effects can take of them
    (``linear_best``: each interaction replaced by its best sum of one effect per value of each of
    its columns, fitted on ``rows`` rows drawn from the data set's distribution), the most a learner
    of pairs can gain over a linear model with unlimited rows."""
    truth = _Truth(seed, zipf, pairs, click_rate)
    cat, _, z = truth._draw(np.random.default_rng([seed, 0xA9]), rows)
    terms = truth.pair_terms(cat)
    p = np.clip(_sigmoid(z), 1e-12, 1 - 1e-12)

    def kl(logit):
        q = np.clip(_sigmoid(logit), 1e-12, 1 - 1e-12)
        return float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))

    without = z - sum(terms)
    additive = np.zeros(rows)
    for term, (a, b) in zip(terms, INTERACTIONS):
        ia, ib = cat[a] + 1, cat[b] + 1  # (id -1, a null, at 0)
        na, nb = np.bincount(ia), np.bincount(ib)
        ga = np.zeros(len(na))
        for _ in range(20):  # backfitting: each column's effects the mean of what the other's leave
            gb = np.bincount(ib, term - ga[ia]) / np.maximum(nb, 1)
            ga = np.bincount(ia, term - gb[ib]) / np.maximum(na, 1)
        additive += ga[ia] + gb[ib]
    return {"without_pairs": kl(without), "linear_best": kl(without + additive), "rows": rows}


def column_names() -> list[str]:
    return ["label"] + [f"I{i + 1}" for i in range(N_NUMERIC)] + [f"C{c + 1}" for c in range(N_CATEGORICAL)]


class Stopped(Exception):
    """``stop`` was set: generation ended early, leaving no partial file."""


def generate(out: str, rows: int = 1_000_000, test_rows: int = 200_000, seed: int = 0,
             zipf: tuple[float, float] = (1.05, 1.5), compression: str = "snappy", stop=None,
             pairs: str = "table", click_rate: float = CLICK_RATE) -> dict:
    """Write ``out``/train.parquet, ``out``/test.parquet and ``out``/truth.json; return the truth.

    ``zipf``: the range the columns' Zipf exponents are drawn from (``(1.05, 1.05)``: every column
    as flat as real logs get, touching the most distinct slots); ``compression``: the Parquet codec
    (snappy, zstd, gzip, lz4, none); ``pairs``: the planted interactions' kind ("table" or
    "latent", see the module's docstring); ``click_rate``: the mean click rate. ``stop``: a
    ``threading.Event``; once set, :class:`Stopped` is raised at the next row group and the file
    being written is removed.

    truth.json holds the Bayes-optimal test metrics (the planted probabilities scored against the
    drawn test labels), the base rate and the generator's settings.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise FastadaError(f"seed must be an integer in 0..{2**63 - 1}, got {seed!r}")
    truth = _Truth(seed, zipf, pairs, click_rate)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    _write(os.path.join(out, "train.parquet"), truth, rng, rows, compression, stop=stop)
    probabilities, labels = _write(os.path.join(out, "test.parquet"), truth, rng, test_rows, compression, keep=True,
                                   stop=stop)
    bayes = evaluate(probabilities, labels) if test_rows else {}
    result = {
        "generator": "fastada.synth criteo-like v1",
        "seed": seed,
        "zipf": list(zipf),
        "pairs": pairs,
        "click_rate": click_rate,
        "compression": compression,
        "train_rows": rows,
        "test_rows": test_rows,
        "test_base_rate": float(labels.mean()) if test_rows else None,
        "bayes_test_logloss": bayes.get("logloss"),
        "bayes_test_auc": bayes.get("auc"),
        "bayes_test_ne": bayes.get("ne"),
        "test_expected_entropy": float(np.mean(_entropy(probabilities))) if test_rows else None,
        "cardinalities": [int(v) for v in truth.cardinality],
    }
    text = json.dumps(result, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    atomic_write(os.path.join(out, "truth.json"), [text.encode() + b"\n"])
    return result


def generate_part(path: str, part: int, rows: int, seed: int = 0, zipf: tuple[float, float] = (1.05, 1.5),
                  compression: str = "snappy", pairs: str = "table", click_rate: float = CLICK_RATE) -> None:
    """Write ``rows`` more training rows of the data set ``generate(seed=seed, zipf=zipf, pairs=pairs)`` describes
    (the same planted truth, other draws: ``part`` numbers them) to ``path``: a large data set is
    written as several files by several processes at once."""
    truth = _Truth(seed, zipf, pairs, click_rate)
    _write(path, truth, np.random.default_rng([seed, 3, part]), rows, compression)


def _entropy(p):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def _write(path, truth, rng, rows, compression, keep=False, stop=None):
    """Generate ``rows`` rows into ``path``; the previous row group is written (on a thread,
    Arrow releases the GIL) while the next one is generated."""
    kept_p, kept_y = [], []
    tmp = path + ".partial"
    writer = None
    pending = None
    # the previous row group is written on a thread (Arrow releases the GIL) while the next one is
    # generated; its errors (a full disk) come back through the future, never lost on a thread
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastada-gen")
    try:
        for start in range(0, max(rows, 1), ROW_GROUP):
            if stop is not None and stop.is_set():
                raise Stopped()
            n = min(ROW_GROUP, rows - start)
            batch, p, y = truth.batch(rng, max(n, 0))
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema, compression=compression)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_batch, batch, row_group_size=ROW_GROUP)
            if keep:
                kept_p.append(p)
                kept_y.append(y)
        pending.result()
        pending = None
        writer.close()
        writer = None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if pending is not None:
            pending.cancel()
        pool.shutdown(wait=True)
        if writer is not None:
            try:
                writer.close()
            except (OSError, pa.ArrowException):
                pass
        if os.path.exists(tmp):
            os.unlink(tmp)
    if keep:
        return np.concatenate(kept_p), np.concatenate(kept_y).astype(np.float32)
    return None
