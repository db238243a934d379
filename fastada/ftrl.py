"""Numba kernels for FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the
Trenches", KDD 2013, Algorithm 1): per-coordinate z and n, alpha, beta, l1, l2 as in the paper.

Kernels know arrays and scalars only, like :mod:`fastada.kernels`, whose slot table they share:
float32 ``(slots + 1, 4)``, here ``table[s, 0] = z`` and ``table[s, 1] = n`` (the last row the
bias, which is never regularised). Per example, for the features i of the row:

1. w_i = 0 if |z_i| <= l1, else -(z_i - sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)
   (all w_i of the row first: a slot listed twice has one weight);
2. p = sigmoid(sum_i w_i x_i);  g_i = (p - y) x_i row_weight;
3. in row order: sigma = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha;  z_i += g_i - sigma w_i;
   n_i += g_i^2.

New-value features (``new_where``, as :func:`fastada.kernels.train_chunk` takes them; chunks are
located without hot slots, so a row's categorical features are in their columns' order): a
categorical feature of weight 0 adds its position's new-value coordinate to the row, after the
features.

The weight is a function of (z, n), so regularisation needs no catch-up: FTRL is lazy by
construction, and l1 gives exact zeros. :func:`train_chunk` is Hogwild over ``blocks``
contiguous ranges of rows on the shared table (the bias included: no per-thread views, unlike
Adagrad's hot slots); with one block it is sequential and repeatable bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import NO_NEW, _sigmoid, chunk_status, logistic_loss

Z, N = 0, 1  # fields of a slot in the table


@njit(cache=True, inline="always")
def _weight(z, n, alpha, beta, l1, l2):
    if abs(z) <= l1:
        return 0.0
    return -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + l2)


@njit(cache=True, inline="always")
def _update(table, s, w, g, alpha):
    n = np.float64(table[s, N])
    sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / alpha
    table[s, Z] += np.float32(g - sigma * w)
    table[s, N] = np.float32(n + g * g)


@njit(cache=True, inline="always")
def _learn_row(table, slots, num_values, r, k_cat, y, rw, alpha, beta, l1, l2, ws, learn, new_where, fresh, wn):
    """Score row r (returns the margin) and, if ``learn``, take its FTRL step; ``ws``, ``fresh``,
    ``wn`` scratch (the features' weights, the new-value coordinates and their weights)."""
    bias = table.shape[0] - 1
    k = slots.shape[1]
    wb = _weight(np.float64(table[bias, Z]), np.float64(table[bias, N]), alpha, beta, 0.0, 0.0)
    z = wb
    for j in range(k):
        s = np.int64(slots[r, j])
        ws[j] = _weight(np.float64(table[s, Z]), np.float64(table[s, N]), alpha, beta, l1, l2)
        z += ws[j] if j < k_cat else ws[j] * num_values[r, j - k_cat]
    fresh_count = 0
    if new_where.shape[0] > 0:
        for j in range(k_cat):
            if np.float32(ws[j]) == 0.0 and new_where[j] != NO_NEW:
                n = new_where[j]
                wn[fresh_count] = _weight(np.float64(table[n, Z]), np.float64(table[n, N]), alpha, beta, l1, l2)
                z += wn[fresh_count]
                fresh[fresh_count] = n
                fresh_count += 1
    if learn:
        g0 = (_sigmoid(z) - y) * rw
        _update(table, bias, wb, g0, alpha)
        for j in range(k):
            g = g0 if j < k_cat else g0 * num_values[r, j - k_cat]
            _update(table, np.int64(slots[r, j]), ws[j], g, alpha)
        for i in range(fresh_count):
            _update(table, fresh[i], wn[i], g0, alpha)
    return z


@njit(cache=True, parallel=True, nogil=True)
def train_chunk(slots, num_values, labels, row_weights, held, table, alpha, beta, l1, l2, blocks, block_loss,
                new_where):
    """Learn one chunk (inputs as :func:`fastada.kernels.train_chunk`'s, located with no hot
    slots). ``block_loss[b]`` = (weighted loss, weight) of learned rows, then of held-out rows.
    Returns a status."""
    rows = labels.shape[0]
    holdout = held.shape[0] > 0
    k_cat = slots.shape[1] - num_values.shape[1]
    for b in prange(blocks):
        ws = np.empty(slots.shape[1], dtype=np.float64)
        fresh = np.empty(max(1, k_cat), dtype=np.int64)
        wn = np.empty(max(1, k_cat), dtype=np.float64)
        loss_sum = 0.0
        weight_sum = 0.0
        held_loss = 0.0
        held_weight = 0.0
        for r in range(rows * b // blocks, rows * (b + 1) // blocks):
            y = np.float64(labels[r])
            rw = np.float64(row_weights[r])
            out = holdout and held[r] != 0
            z = _learn_row(table, slots, num_values, r, k_cat, y, rw, alpha, beta, l1, l2, ws, not out, new_where,
                           fresh, wn)
            if out:
                held_loss += rw * logistic_loss(z, y)
                held_weight += rw
            else:
                loss_sum += rw * logistic_loss(z, y)
                weight_sum += rw
        block_loss[b, 0] = loss_sum
        block_loss[b, 1] = weight_sum
        block_loss[b, 2] = held_loss
        block_loss[b, 3] = held_weight
    return chunk_status(block_loss, blocks)


@njit(cache=True, nogil=True)
def race_rate(slots, num_values, labels, row_weights, schedule, table, alpha, beta, l1, l2, score_from, scores,
              new_where):
    """One candidate alpha of a learning-rate race (see :func:`fastada.kernels.race_rate`)."""
    k_cat = slots.shape[1] - num_values.shape[1]
    ws = np.empty(slots.shape[1], dtype=np.float64)
    fresh = np.empty(max(1, k_cat), dtype=np.int64)
    wn = np.empty(max(1, k_cat), dtype=np.float64)
    loss_sum = 0.0
    weight_sum = 0.0
    for i in range(schedule.shape[0]):
        r = schedule[i]
        y = np.float64(labels[r])
        rw = np.float64(row_weights[r])
        z = _learn_row(table, slots, num_values, r, k_cat, y, rw, alpha, beta, l1, l2, ws, True, new_where, fresh, wn)
        if i >= score_from:
            loss_sum += rw * logistic_loss(z, y)
            weight_sum += rw
    scores[0] = loss_sum
    scores[1] = weight_sum


@njit(cache=True, parallel=True, nogil=True)
def weights(table, alpha, beta, l1, l2, out):
    """``out[s]``: the weight of every slot (the bias, last, unregularised)."""
    bias = table.shape[0] - 1
    for s in prange(table.shape[0]):
        r1 = 0.0 if s == bias else l1
        r2 = 0.0 if s == bias else l2
        out[s] = np.float32(_weight(np.float64(table[s, Z]), np.float64(table[s, N]), alpha, beta, r1, r2))
