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
contiguous ranges of rows on the shared table, the bias and the hot slots in per-block views as
Adagrad's (z and n where Adagrad keeps w and G); with one block it is sequential and repeatable
bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import NO_NEW, SLOT_WIDTH, _atomic_add, _hot_position, _sigmoid, chunk_status, fold_end, logistic_loss

Z, N = 0, 1  # fields of a slot in the table
_Z0, _N0 = 2, 3  # and of a thread's view of a hot slot (z, n, then both as it took them)
# Rows a thread learns between handing back its views of the hottest slots (Adagrad's are 1,024).
# 200,000 generated rows, 2 threads against 1 (test logloss 0.44553, FTRL's raced alpha 0.087):
# every 1,024 rows 0.44756-0.44763 (Adagrad's views at the same rate 0.1: 0.00085-0.0022 worse than
# one thread), every 64 rows 0.44533-0.44555; the kernel alone on 2 threads (500,000 rows in memory)
# 1.64x one thread at 64, 1.69x at 1,024, 0.90x with no views.
FOLD_ROWS = 64


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
def _take(table, hot, mine, h):
    s = hot[h]
    mine[h, Z] = mine[h, _Z0] = table[s, Z]
    mine[h, N] = mine[h, _N0] = table[s, N]


@njit(cache=True)
def _give(table, hot, mine, h, beta):
    """Add what a view learned since it was taken to the table: n its g^2, and z what makes the
    table's z / (beta + sqrt(n)) move as the view's did. That quantity is what FTRL's steps add to
    (without L1/L2 the weight is -alpha times it), so threads' changes of it add up as Adagrad
    threads' changes of w do, and one thread's hand-back is its view exactly; the views' own
    changes of z do not add up (each thread's sigma w assumes only its own g^2)."""
    s = hot[h]
    dn = np.float64(mine[h, N]) - np.float64(mine[h, _N0])
    if dn == 0.0 and mine[h, Z] == mine[h, _Z0]:
        return
    moved = (np.float64(mine[h, Z]) / (beta + np.sqrt(np.float64(mine[h, N])))
             - np.float64(mine[h, _Z0]) / (beta + np.sqrt(np.float64(mine[h, _N0]))))
    z, n = np.float64(table[s, Z]), np.float64(table[s, N])
    scale = beta + np.sqrt(n + dn)
    _atomic_add(table, s * SLOT_WIDTH + Z, np.float32((z / (beta + np.sqrt(n)) + moved) * scale - z))
    _atomic_add(table, s * SLOT_WIDTH + N, np.float32(dn))


@njit(cache=True, inline="always")
def _learn_row(table, slots, num_values, r, k_cat, y, rw, alpha, beta, l1, l2, ws, learn, new_where, fresh, wn,
               lookup, mine, places):
    """Score row r (returns the margin) and, if ``learn``, take its FTRL step; ``ws``, ``fresh``,
    ``wn``, ``places`` scratch (the features' weights, the new-value coordinates and their
    weights, the features' view positions). ``lookup`` not None: the bias and the hot slots it
    finds are the block's views ``mine``. (None, typed so, compiles a row without views: every
    ``is None`` below is decided at compile time, and one thread runs the code it ran before.)"""
    bias = table.shape[0] - 1
    k = slots.shape[1]
    if lookup is None:
        wb = _weight(np.float64(table[bias, Z]), np.float64(table[bias, N]), alpha, beta, 0.0, 0.0)
    else:
        wb = _weight(np.float64(mine[0, Z]), np.float64(mine[0, N]), alpha, beta, 0.0, 0.0)
    z = wb
    for j in range(k):
        s = np.int64(slots[r, j])
        if lookup is None:
            ws[j] = _weight(np.float64(table[s, Z]), np.float64(table[s, N]), alpha, beta, l1, l2)
        else:
            h = _hot_position(s, lookup) if lookup.shape[0] > 0 else -1
            places[j] = h
            if h > 0:
                ws[j] = _weight(np.float64(mine[h, Z]), np.float64(mine[h, N]), alpha, beta, l1, l2)
            else:
                ws[j] = _weight(np.float64(table[s, Z]), np.float64(table[s, N]), alpha, beta, l1, l2)
        z += ws[j] if j < k_cat else ws[j] * num_values[r, j - k_cat]
    fresh_count = 0
    if new_where.shape[0] > 0:
        for j in range(k_cat):
            if np.float32(ws[j]) == 0.0 and new_where[j] != NO_NEW:
                n = new_where[j]
                fresh[fresh_count] = n
                if lookup is None:
                    wn[fresh_count] = _weight(np.float64(table[n, Z]), np.float64(table[n, N]), alpha, beta, l1, l2)
                else:
                    h = _hot_position(n, lookup) if lookup.shape[0] > 0 else -1
                    if h > 0:
                        wn[fresh_count] = _weight(np.float64(mine[h, Z]), np.float64(mine[h, N]), alpha, beta, l1, l2)
                        fresh[fresh_count] = -1 - h
                    else:
                        wn[fresh_count] = _weight(np.float64(table[n, Z]), np.float64(table[n, N]), alpha, beta, l1,
                                                  l2)
                z += wn[fresh_count]
                fresh_count += 1
    if learn:
        g0 = (_sigmoid(z) - y) * rw
        if lookup is None:
            _update(table, bias, wb, g0, alpha)
        else:
            _update(mine, 0, wb, g0, alpha)
        for j in range(k):
            g = g0 if j < k_cat else g0 * num_values[r, j - k_cat]
            if lookup is None:
                _update(table, np.int64(slots[r, j]), ws[j], g, alpha)
            elif places[j] > 0:
                _update(mine, places[j], ws[j], g, alpha)
            else:
                _update(table, np.int64(slots[r, j]), ws[j], g, alpha)
        for i in range(fresh_count):
            if lookup is None:
                _update(table, fresh[i], wn[i], g0, alpha)
            elif fresh[i] < 0:
                _update(mine, -1 - fresh[i], wn[i], g0, alpha)
            else:
                _update(table, fresh[i], wn[i], g0, alpha)
    return z


@njit(cache=True, inline="always")
def _learn_block(slots, num_values, labels, row_weights, held, table, alpha, beta, l1, l2, new_where, lo, hi,
                 hot, lookup, fold_ends, fold_rows, mine):
    """Rows ``lo`` .. ``hi`` - 1 of :func:`train_chunk`, on one thread; ``hot`` None: without
    views (compiled apart, so one thread runs the code it ran before views). Returns (weighted
    loss, weight) of learned rows, then of held-out rows."""
    holdout = held.shape[0] > 0
    k_cat = slots.shape[1] - num_values.shape[1]
    ws = np.empty(slots.shape[1], dtype=np.float64)
    places = np.empty(slots.shape[1], dtype=np.int64)
    fresh = np.empty(max(1, k_cat), dtype=np.int64)
    wn = np.empty(max(1, k_cat), dtype=np.float64)
    if hot is not None:
        for h in range(hot.shape[0]):
            _take(table, hot, mine, h)
    to_fold = fold_rows
    folds = 0
    loss_sum = 0.0
    weight_sum = 0.0
    held_loss = 0.0
    held_weight = 0.0
    for r in range(lo, hi):
        if hot is not None:
            if to_fold <= 0:
                folds += 1
                for h in range(fold_end(folds, fold_ends)):
                    _give(table, hot, mine, h, beta)
                    _take(table, hot, mine, h)
                to_fold = fold_rows
            to_fold -= 1
        y = np.float64(labels[r])
        rw = np.float64(row_weights[r])
        out = holdout and held[r] != 0
        z = _learn_row(table, slots, num_values, r, k_cat, y, rw, alpha, beta, l1, l2, ws, not out, new_where,
                       fresh, wn, lookup, mine, places)
        if out:
            held_loss += rw * logistic_loss(z, y)
            held_weight += rw
        else:
            loss_sum += rw * logistic_loss(z, y)
            weight_sum += rw
    if hot is not None:
        for h in range(hot.shape[0]):
            _give(table, hot, mine, h, beta)
    return loss_sum, weight_sum, held_loss, held_weight


@njit(cache=True, parallel=True, nogil=True)
def train_chunk(slots, num_values, labels, row_weights, held, table, alpha, beta, l1, l2, blocks, block_loss,
                new_where, hot, lookup, fold_ends, fold_rows, private):
    """Learn one chunk (inputs as :func:`fastada.kernels.train_chunk`'s, located with no hot
    slots). ``block_loss[b]`` = (weighted loss, weight) of learned rows, then of held-out rows.
    Returns a status.

    ``hot`` not empty (the bias first, then the slots ``lookup`` finds; ``fold_ends`` as
    :class:`kernels.HotSlots`'; ``private[b]`` block b's views, :func:`kernels.private_state`):
    each block learns them in its views, taken when it starts, handed back (:func:`_give`) and
    taken again every ``fold_rows * 2^c`` of its rows for the first ``fold_ends[c]``, and all
    handed back when it ends."""
    rows = labels.shape[0]
    for b in prange(blocks):
        lo, hi = rows * b // blocks, rows * (b + 1) // blocks
        if hot.shape[0] > 0:
            sums = _learn_block(slots, num_values, labels, row_weights, held, table, alpha, beta, l1, l2, new_where,
                                lo, hi, hot, lookup, fold_ends, fold_rows, private[b])
        else:
            sums = _learn_block(slots, num_values, labels, row_weights, held, table, alpha, beta, l1, l2, new_where,
                                lo, hi, None, None, None, fold_rows, None)
        for i in range(4):
            block_loss[b, i] = sums[i]
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
        z = _learn_row(table, slots, num_values, r, k_cat, y, rw, alpha, beta, l1, l2, ws, True, new_where, fresh, wn,
                       None, None, None)
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
