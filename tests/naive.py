"""Slow, obviously-correct references for what fastada computes fast.

Pure Python hashing of a small table row by row, and NumPy per-example Adagrad with L1/L2
applied eagerly to every slot at every step (the definition in fastada/kernels.py).
"""

from __future__ import annotations

import math
import struct

import numpy as np

MASK32 = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int) -> int:
    """MurmurHash3_x86_32, transcribed from the reference C++ (SMHasher)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & MASK32
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & MASK32  # noqa: E731
    n = len(data)
    for i in range(0, n - n % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = rotl((k * c1) & MASK32, 15) * c2 & MASK32
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & MASK32
    tail = data[n - n % 4:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = rotl((k * c1) & MASK32, 15) * c2 & MASK32
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h


def _int_bytes(v: int) -> bytes:
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def row_features(row: dict, spec) -> list[tuple[int, float]]:
    """(32-bit hash, value) of every feature of one row, in fastada's order."""
    seed = {c: murmur3_32(c.encode(), spec.hash_seed) for c in spec.feature_columns}
    null = {c: murmur3_32(b"\xffnull", s) for c, s in seed.items()}
    cat, num = [], []
    hashes = {}
    for c in spec.categorical:
        v = row[c]
        if v is None:
            h = null[c]
        elif isinstance(v, str):
            h = murmur3_32(v.encode(), seed[c])
        elif isinstance(v, bytes):
            h = murmur3_32(v, seed[c])
        else:
            h = murmur3_32(_int_bytes(int(v)), seed[c])
        hashes[c] = h
        cat.append((h, 1.0))
    buckets = []
    for c in spec.numeric:
        v = row[c]
        present = v is not None and math.isfinite(v)
        if spec.numeric_mode in ("value", "both"):
            num.append((murmur3_32(b"\xffvalue", seed[c]), float(np.float32(math.log1p(max(v, 0.0)))))
                       if present else (null[c], 1.0))
        if spec.numeric_mode in ("bucket", "both"):
            bucket_seed = seed[c] ^ 0x5BD1E995
            if present:
                b = math.floor(4 * math.log1p(abs(v)))
                b = -b - 1 if v < 0 else b
            else:
                b = 1 << 40
            hashes[c] = murmur3_32(_int_bytes(b), bucket_seed)
            buckets.append((hashes[c], 1.0))
    crosses = [(murmur3_32(_int_bytes((hashes[a] << 32) | hashes[b]),
                           murmur3_32(f"{a}*{b}".encode(), spec.hash_seed)), 1.0)
               for a, b in spec.crosses]
    return cat + buckets + crosses + num


def new_value_hashes(spec) -> list:
    """The hash of each categorical position's new-value feature (columns, buckets, crosses), as
    fastada's FeatureSpec.new_values defines them; [] without them."""
    if not spec.new_values:
        return []
    seed = {c: murmur3_32(c.encode(), spec.hash_seed) for c in spec.feature_columns}
    out = [murmur3_32(b"\xffnew", seed[c]) for c in spec.categorical]
    if spec.numeric_mode in ("bucket", "both"):
        out += [murmur3_32(b"\xffnew", seed[c] ^ 0x5BD1E995) for c in spec.numeric]
    out += [murmur3_32(b"\xffnew", murmur3_32(f"{a}*{b}".encode(), spec.hash_seed)) for a, b in spec.crosses]
    return out


def adagrad_eager(rows, labels, row_weights, slots, lr, l1, l2, eps, new=()):
    """Weights (bias last) after one pass of per-example Adagrad with eager L1/L2 steps.

    rows: per example, a list of (slot, value). Every step, every slot with G > 0 takes the
    proximal step w <- sign(w) max(|w| - eta l1, 0) / (1 + eta l2), eta = lr / (sqrt(G) + eps).
    new: the new-value slot of each of a row's first len(new) features: where such a feature's
    weight is 0 (in float32) as the row is scored, that slot's weight counts too, and learns after
    the features.
    Returns (weights, accumulators, mean progressive logloss).
    """
    w = np.zeros(slots + 1)
    G = np.zeros(slots + 1)
    loss = 0.0
    for features, y, rw in zip(rows, labels, row_weights):
        # (weight 0 as fastada stores it: float32, where L2 decays a weight to nothing)
        fresh = [new[j] for j, (s, _) in enumerate(features[:len(new)]) if np.float32(w[s]) == 0.0]
        z = w[slots] + sum(w[s] * x for s, x in features) + sum(w[n] for n in fresh)
        p = 1 / (1 + math.exp(-z))
        loss += rw * (math.log1p(math.exp(-abs(z))) + max(z, 0) - y * z)
        g0 = (p - y) * rw
        G[slots] += g0 * g0
        w[slots] -= lr * g0 / (math.sqrt(G[slots]) + eps)
        for s, x in features:
            g = g0 * x
            G[s] += g * g
            w[s] -= lr * g / (math.sqrt(G[s]) + eps)
        for n in fresh:
            G[n] += g0 * g0
            w[n] -= lr * g0 / (math.sqrt(G[n]) + eps)
        touched = G[:slots] > 0
        eta = lr / (np.sqrt(G[:slots][touched]) + eps)
        v = w[:slots][touched]
        w[:slots][touched] = np.sign(v) * np.maximum(np.abs(v) - eta * l1, 0) / (1 + eta * l2)
    return w, G, loss / sum(row_weights)


def auc(p, y) -> float:
    """Mann-Whitney AUC with ties counted as half, by brute force over all pairs."""
    p, y = np.asarray(p, float), np.asarray(y)
    pos, neg = p[y == 1], p[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def ftrl_proximal(rows, labels, row_weights, slots, alpha, beta, l1, l2, new=()):
    """Weights (bias last, unregularised) after one pass of FTRL-Proximal (McMahan et al. 2013,
    Algorithm 1), and the mean progressive logloss. rows: per example, a list of (slot, value).
    new: as :func:`adagrad_eager`'s (a new-value coordinate after the features, of value 1)."""
    z = np.zeros(slots + 1)
    n = np.zeros(slots + 1)

    def weight(s):
        r1, r2 = (0.0, 0.0) if s == slots else (l1, l2)
        if abs(z[s]) <= r1:
            return 0.0
        return -(z[s] - math.copysign(r1, z[s])) / ((beta + math.sqrt(n[s])) / alpha + r2)

    loss = 0.0
    for features, y, rw in zip(rows, labels, row_weights):
        coords = [(slots, 1.0)] + list(features)
        w = [weight(s) for s, _ in coords]
        fresh = [(new[j], 1.0) for j in range(len(new)) if np.float32(w[1 + j]) == 0.0]
        coords += fresh
        w += [weight(s) for s, _ in fresh]
        margin = sum(wi * x for wi, (_, x) in zip(w, coords))
        p = 1 / (1 + math.exp(-margin))
        loss += rw * (math.log1p(math.exp(-abs(margin))) + max(margin, 0) - y * margin)
        for wi, (s, x) in zip(w, coords):
            g = (p - y) * x * rw
            sigma = (math.sqrt(n[s] + g * g) - math.sqrt(n[s])) / alpha
            z[s] += g - sigma * wi
            n[s] += g * g
    return np.array([weight(s) for s in range(slots + 1)]), n, loss / sum(row_weights)


def ffm_eager(rows, labels, row_weights, slots, lr, eps, factors, factor_mask, factor_lr, factor_l2):
    """One pass of a field-aware factorization machine (Juan et al. 2016, as libffm learns it)
    over per-example Adagrad logistic regression, no L1/L2 on the linear part.

    rows: per example, a list of (slot, value, field). ``factors``: the starting table
    ``(factor slots, fields, 2K)`` (vectors, then their accumulators), learned in place (float64).
    Per example, with scale = 1 / sum of squared values: z = bias + sum w_s x + scale sum over
    pairs a < b of <v[a, f_b], v[b, f_a]> x_a x_b; the linear part takes Adagrad steps; each pair,
    with kappa = (p - y) rw scale x_a x_b and both vectors as before its step, takes
    g = factor_l2 v + kappa v_other, G += g^2, v -= factor_lr g / sqrt(G).
    Returns (weights, factors, mean progressive logloss)."""
    k = factors.shape[2] // 2
    v = factors.astype(np.float64)
    w = np.zeros(slots + 1)
    G = np.zeros(slots + 1)
    loss = 0.0
    for features, y, rw in zip(rows, labels, row_weights):
        scale = 1.0 / sum(x * x for _, x, _ in features)
        z = w[slots] + sum(w[s] * x for s, x, _ in features)
        for a in range(len(features)):
            for b in range(a + 1, len(features)):
                (sa, xa, fa), (sb, xb, fb) = features[a], features[b]
                z += scale * xa * xb * float(v[sa & factor_mask, fb, :k] @ v[sb & factor_mask, fa, :k])
        p = 1 / (1 + math.exp(-z))
        loss += rw * (math.log1p(math.exp(-abs(z))) + max(z, 0) - y * z)
        g0 = (p - y) * rw
        for s, x in [(slots, 1.0)] + [(s, x) for s, x, _ in features]:
            g = g0 * x
            G[s] += g * g
            w[s] -= lr * g / (math.sqrt(G[s]) + eps)
        for a in range(len(features)):
            for b in range(a + 1, len(features)):
                (sa, xa, fa), (sb, xb, fb) = features[a], features[b]
                kappa = g0 * scale * xa * xb
                va, vb = v[sa & factor_mask, fb], v[sb & factor_mask, fa]  # (may be one vector)
                old_a, old_b = va.copy(), vb.copy()
                ga = factor_l2 * old_a[:k] + kappa * old_b[:k]
                gb = factor_l2 * old_b[:k] + kappa * old_a[:k]
                acc_a, acc_b = old_a[k:] + ga * ga, old_b[k:] + gb * gb
                va[k:] = acc_a
                vb[k:] = acc_b  # (one vector: the second pair member's write stands, as in the kernel)
                va[:k] = old_a[:k] - factor_lr * ga / np.sqrt(acc_a)
                vb[:k] = old_b[:k] - factor_lr * gb / np.sqrt(acc_b)
    return w, v, loss / sum(row_weights)


def fm_eager(rows, labels, row_weights, slots, lr, eps, factors, factor_mask, factor_lr, factor_l2):
    """One pass of a factorization machine (Rendle 2010) over per-example Adagrad logistic
    regression, no L1/L2 on the linear part, every pair written out (O(features^2)).

    rows: per example, a list of (slot, value). ``factors``: the starting table ``(factor slots,
    1, 2K)``. Per example, with scale = 1 / sum of squared values: z = bias + sum w_s x + scale
    sum over pairs a < b of <v_a, v_b> x_a x_b; the linear part takes Adagrad steps; then in row
    order each feature's vector steps with grad = (p - y) rw scale x_a (S - v_a x_a) + factor_l2 v_a,
    S = the sum of all the row's v_b x_b before the row's steps, v_a as it is then (another
    feature of the row hashed to the same vector has stepped it), G += grad^2, v -= factor_lr
    grad / sqrt(G). Returns (weights, factors, mean progressive logloss)."""
    k = factors.shape[2] // 2
    v = factors.astype(np.float64)
    w = np.zeros(slots + 1)
    G = np.zeros(slots + 1)
    loss = 0.0
    for features, y, rw in zip(rows, labels, row_weights):
        scale = 1.0 / sum(x * x for _, x in features)
        z = w[slots] + sum(w[s] * x for s, x in features)
        vx = [v[s & factor_mask, 0, :k] * x for s, x in features]  # (copies: the values before the steps)
        for a in range(len(features)):
            for b in range(a + 1, len(features)):
                z += scale * float(vx[a] @ vx[b])
        p = 1 / (1 + math.exp(-z))
        loss += rw * (math.log1p(math.exp(-abs(z))) + max(z, 0) - y * z)
        g0 = (p - y) * rw
        for s, x in [(slots, 1.0)] + list(features):
            g = g0 * x
            G[s] += g * g
            w[s] -= lr * g / (math.sqrt(G[s]) + eps)
        total = sum(vx)
        for s, x in features:
            row = v[s & factor_mask, 0]
            grad = g0 * scale * x * (total - row[:k] * x) + factor_l2 * row[:k]
            row[k:] += grad * grad
            row[:k] -= factor_lr * grad / np.sqrt(row[k:])
    return w, v, loss / sum(row_weights)
