"""Numba kernels for field-aware factorization machines (Juan et al., "Field-aware Factorization
Machines for CTR Prediction", RecSys 2016; libffm): the linear Adagrad model of
:mod:`fastada.kernels` plus, for every pair of a row's features, the dot product of each one's
latent vector for the other's field.

Kernels know arrays and scalars only. The linear part lives in the slot table of
:mod:`fastada.kernels` (weight, G, clock; lazy L1/L2). The factors live in ``factors``, float32
``(factor_slots, fields, 2 K)``: for a feature hashed to factor slot ``u`` and a field ``f``,
``factors[u, f, :K]`` is its vector for features of field ``f`` and ``factors[u, f, K:]`` those
numbers' Adagrad accumulators, side by side so that one pair touches two half cache lines. A
feature's factor slot is its linear slot masked to ``factor_slots``; its field is its column's
(``fields[j]`` for the j-th feature of a row).

Per example, with x_j the row's feature values (1 for a categorical one) and
``scale = 1 / sum_j x_j^2`` (libffm's instance normalisation):

1. z = bias + sum_j w_j x_j + scale * sum_{a<b} <v[a, f_b], v[b, f_a]> x_a x_b;  p = sigmoid(z)
2. the linear part learns as Adagrad does (``g_j = (p - y) x_j row_weight``);
3. for every pair a < b, with kappa = (p - y) row_weight scale x_a x_b and both vectors as they
   were before this pair's step: grad_a = factor_l2 v[a, f_b] + kappa v[b, f_a] (and the same for
   b), G += grad^2, v -= factor_lr grad / sqrt(G) (1 / sqrt(G) to within 5e-6: :func:`_rsqrt`):
   libffm's per-coordinate Adagrad, its L2 applied
   to the vectors a row uses (libffm's own rule; untouched vectors are not decayed).

A factorization machine (Rendle 2010; ``fields`` empty) is the same with one vector per feature
(a table of one field): z adds scale * sum over pairs of <v_a, v_b> x_a x_b, computed in
O(features x K) as (|sum_j v_j x_j|^2 - sum_j |v_j x_j|^2) / 2, and each feature's vector steps
with grad_d = (p - y) row_weight scale x_j (S_d - v_jd x_j) + factor_l2 v_jd.

FFM is O(features^2 x K) a row; no allocation in the loop. :func:`train_chunk` is Hogwild over
``blocks`` contiguous ranges of rows on shared tables; with one block it is sequential and
repeatable bit for bit.
"""

from __future__ import annotations

import platform

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import (ACCUMULATOR, SLOT_WIDTH, WEIGHT, _adagrad, _atomic_add, _changed, _fold_due, _give, _hot_position,
                      _prefetch, _prefetcher, _settle, _sigmoid, _take, chunk_status, fold_end, logistic_loss,
                      loss_and_gradient)

_prefetch_factor = _prefetcher(write=1)
_prefetch_vectors = _prefetcher(write=0)

# x86 with AVX (every x86-64 CPU since 2011): the pair step uses the CPU's own 1/sqrt estimate
_HOST_AVX = platform.machine().lower() in ("x86_64", "amd64") and bool(llvm.get_host_cpu_features().get("avx"))

# FFM with several threads: factor slots written by more than this share of the rows (a numeric
# column's value feature: every row) are learned in per-thread views (as kernels' HOT_SHARE for
# the linear model). A factor slot is a feature's vectors for every field, fields x 2 K floats:
# at most HOT_CAP of them, and no more than HOT_VIEW_BYTES of them a thread (views and the copies
# they were taken from twice that). 2,048 rather than 512 (39 fields, K = 4: 2.4 MiB a thread)
# ran the kernel on two threads 4-5% faster on Zipf 1.05 data (520-536k against 493-513k rows/s),
# 1-2% on Zipf 0.8, with test logloss after 3 epochs nearer one thread's (0.48321-0.48329 against
# 0.48329-0.48395 over three seeds; one thread 0.48286-0.48290): fewer frequent vectors shared.
HOT_SHARE = 1e-3
HOT_CAP = 2048
HOT_VIEW_BYTES = 4 << 20


def hot_cap(fields: int, k: int) -> int:
    """The most factor slots learned in per-thread views, for ``fields`` fields of K = ``k``."""
    return int(max(1, min(HOT_CAP, HOT_VIEW_BYTES // factor_bytes(1, fields, k))))

# libffm's start: vectors uniform in [0, 1/sqrt(K)), accumulators at 1
INITIAL_ACCUMULATOR = 1.0


def new_factors(factor_slots: int, fields: int, k: int, seed: int) -> np.ndarray:
    """A factor table with libffm's start, drawn from ``seed``: each vector number uniform in
    [0, 1/sqrt(K)), each accumulator 1. Written in one pass with no temporary arrays (NumPy's
    generator, a scaled copy and two strided writes took 0.37 s and twice the table's memory for
    2^18 slots x 39 fields x K = 4; this 0.1 s)."""
    factors = np.empty((factor_slots, fields, 2 * k), dtype=np.float32)
    _start_factors(factors, k, np.uint64(seed % 2**64), np.float32(1.0 / np.sqrt(k)),
                   np.float32(INITIAL_ACCUMULATOR))
    return factors


@njit(cache=True, nogil=True, parallel=True)
def _start_factors(factors, k, seed, scale, accumulator):
    """Vector number i of the table (in row order, vectors only) is the top 24 bits of
    splitmix64(i + seed x golden ratio) as a uniform number in [0, 1), times ``scale``;
    accumulators ``accumulator``."""
    flat = factors.reshape(-1, factors.shape[2])
    stream = seed * np.uint64(0x9E3779B97F4A7C15)
    step = scale * np.float32(2.0 ** -24)
    for row in prange(flat.shape[0]):
        for d in range(k):
            x = np.uint64(row * k + d) + stream
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
            flat[row, d] = np.float32(np.int64(x >> np.uint64(40))) * step
        for d in range(k, flat.shape[1]):
            flat[row, d] = accumulator


def factor_bytes(factor_slots: int, fields: int, k: int) -> int:
    """Memory of a factor table while training (vectors and accumulators)."""
    return factor_slots * fields * 2 * k * 4


@njit(cache=True, inline="always")
def _value(num_values, r, j, k_cat):
    return 1.0 if j < k_cat else np.float64(num_values[r, j - k_cat])


@njit(cache=True, inline="always")
def _spread(lanes, j, x):
    """``lanes[j]``: x in float32, as many times as it has columns (none: not wanted)."""
    x32 = np.float32(x)
    for q in range(lanes.shape[1]):
        lanes[j, q] = x32


@njit(cache=True, inline="always")
def _row_features(slots, num_values, r, k_cat, fmask, fields_n, starts, xs, lanes, hot_at, views_at):
    """Row r's features as the loops over them read them: ``starts[j]`` the first row of feature j's
    vectors in the factor table seen as (slots x fields, 2 K) or, for a hot factor slot
    (``hot_at[j]`` > 0, from :func:`_row_blocks`), of the block's view of them (factor slot
    ``views_at`` + its position: the views are rows past the table's); ``xs[j]`` its value, and
    ``lanes[j]`` that value in float32 as many times as the pair sum wants it (:func:`_pair_sum4`)."""
    for j in range(slots.shape[1]):
        u = np.int64(slots[r, j]) & fmask
        h = hot_at[j]
        starts[j] = (views_at + h if h > 0 else u) * fields_n
        xs[j] = _value(num_values, r, j, k_cat)
        _spread(lanes, j, xs[j])


@njit(cache=True, inline="always")
def _row_blocks(flat, slots, r, fmask, fields_n, lookup, blocks_at, hot_at, views_at):
    """``blocks_at[j]``: where row r's feature j's vectors start in ``flat``'s numbers (each
    feature's fields x 2 K floats lie together: a few cache lines each): for a hot factor slot, the
    block's view of them (factor slot ``views_at`` + its position), never the table's (fetching
    the table's lines to write would take them from the other cores; asking for the view's lines
    too ran two threads 1-2% faster: 570k -> 580k rows/s); ``hot_at[j]``: its position among the
    hot slots (``lookup``), or -1. Looked up once a row, ahead of it (looked up again when the row
    was learned, two threads ran the kernel 4% slower: 462k against 480k rows/s)."""
    span = fields_n * flat.shape[1]
    for j in range(slots.shape[1]):
        u = np.int64(slots[r, j]) & fmask
        h = _hot_position(u, lookup) if lookup.shape[0] > 0 else -1
        hot_at[j] = h
        blocks_at[j] = (views_at + h) * span if h > 0 else u * span


@njit(cache=True, inline="always")
def _prefetch_block(flat, blocks_at, j, span):
    """Ask the CPU for the cache lines of feature j's vectors (:func:`_row_blocks`), to write them."""
    if blocks_at[j] >= 0:
        for offset in range(0, span, 16):
            _prefetch_factor(flat, blocks_at[j] + offset)


@njit(cache=True, nogil=True)
def _pairs(flat, starts, xs, lanes, fields, scale, dims):
    """scale * sum over the row's pairs of <v[a, f_b], v[b, f_a]> x_a x_b (rows of ``flat``: a
    vector of ``dims`` numbers, then its accumulators while training; ``lanes``: the row's
    values as :func:`_row_features` sets them). Training and scoring both come here: the same
    sums, the same predictions."""
    if dims == 4:
        return _pair_sum4(flat, starts, lanes, fields) * scale
    k = starts.shape[0]
    total = 0.0
    for a in range(k):
        sa = starts[a]
        fa = fields[a]
        xa = xs[a]
        for b in range(np.uint64(a + 1), np.uint64(k)):  # (unsigned: no wrap-around test on every load)
            va = sa + fields[b]
            vb = starts[b] + fa
            dot = np.float32(0.0)
            for d in range(dims):
                dot += flat[va, d] * flat[vb, d]
            total += dot * xa * xs[b]
    return total * scale


@intrinsic
def _float_bits(typingctx, x):
    """The bits of a float32 as an int32 (a reinterpretation, not a conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, i):
    """An int32's bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(cache=True, inline="always")
def _rsqrt(x):
    """1 / sqrt(x) for a float32 x > 0 to within 5e-6 (relative): the classic bit-level first
    guess and two Newton steps, a dozen multiplies and adds with no divide or square root, which
    one at a time were most of a pair's step (libffm uses SSE's 12-bit estimate)."""
    y = _bits_float(np.int32(0x5F3759DF) - (_float_bits(x) >> np.int32(1)))
    half = np.float32(0.5) * x
    y = y * (np.float32(1.5) - half * y * y)
    return y * (np.float32(1.5) - half * y * y)


def _vector_rsqrt(builder, x):
    """:func:`_rsqrt` on a vector of floats, the same operations lane by lane (the same bits)."""
    lanes = x.type.count
    i4 = ir.VectorType(ir.IntType(32), lanes)
    f4 = x.type
    magic = ir.Constant(i4, [0x5F3759DF] * lanes)
    y = builder.bitcast(builder.sub(magic, builder.ashr(builder.bitcast(x, i4), ir.Constant(i4, [1] * lanes))), f4)
    half = builder.fmul(ir.Constant(f4, [0.5] * lanes), x)
    three_halves = ir.Constant(f4, [1.5] * lanes)
    for _ in range(2):
        y = builder.fmul(y, builder.fsub(three_halves, builder.fmul(builder.fmul(half, y), y)))
    return y


C = ("contract",)  # fast-math flag: a multiply and an add may fuse into one FMA


def _fast_rsqrt8(builder, x):
    """1 / sqrt(x) on a <8 x float>: where the CPU has AVX, its own estimate, to within 1.5 2^-12
    (relative) in one operation, as libffm uses SSE's; else :func:`_vector_rsqrt`'s twelve. An
    Adagrad step's size off by 0.04% learns the same model to within noise (a Newton step to 1e-6
    cost a quarter of a pair's step: 1.96 -> 1.45 ns a pair)."""
    if not _HOST_AVX:
        return _vector_rsqrt(builder, x)
    f8 = x.type
    estimate = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f8, [f8]), "llvm.x86.avx.rsqrt.ps.256")
    return builder.call(estimate, [x])


def _splat(builder, value, lanes=4):
    vector = ir.VectorType(ir.FloatType(), lanes)
    out = ir.Constant(vector, ir.Undefined)
    for lane in range(lanes):
        out = builder.insert_element(out, value, ir.Constant(ir.IntType(32), lane))
    return out


def _shuffle(builder, x, y, lanes):
    return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes))


@intrinsic
def _pair_step4(typingctx, flat, ia, ib, kappa, l2, lr):
    """One pair's step for K = 4 (rows ``ia``, ``ib`` of the factor table seen as (n, 8): four
    vector floats, then their four accumulators), both vectors' four coordinates at once in the
    eight lanes of one AVX register (SSE or scalar code where the CPU has no AVX). Vectors and
    accumulators are loaded and stored as 16-byte halves, which the register joins (a cheap insert)
    where whole rows took two cross-lane shuffles more (1.43 -> 1.40 ns a pair). The same float32
    operations, in the same order, as the scalar loop of
    :func:`_learn_pairs`, which Numba does not vectorise (the same bits without AVX; with it,
    1 / sqrt(G) is the CPU's estimate, :func:`_fast_rsqrt8`)."""
    def codegen(context, builder, signature, args):
        flat_v, ia_v, ib_v, kappa_v, l2_v, lr_v = args
        data = context.make_array(signature.args[0])(context, builder, flat_v).data
        f8 = ir.VectorType(ir.FloatType(), 8)
        eight = ir.Constant(ia_v.type, 8)
        row_a = builder.bitcast(builder.gep(data, [builder.mul(ia_v, eight)]), f8.as_pointer())
        row_b = builder.bitcast(builder.gep(data, [builder.mul(ib_v, eight)]), f8.as_pointer())
        f4 = ir.VectorType(ir.FloatType(), 4)
        halves = []
        for row in (row_a, row_b):
            p4 = builder.bitcast(row, f4.as_pointer())
            halves.append((p4, builder.gep(p4, [ir.Constant(ir.IntType(32), 1)])))
        (wa_p, ga_p), (wb_p, gb_p) = halves
        wa, ga, wb, gb = (builder.load(p, align=4) for p in (wa_p, ga_p, wb_p, gb_p))
        cat = list(range(8))
        v = _shuffle(builder, wa, wb, cat)          # (v_a, v_b)
        acc = _shuffle(builder, ga, gb, cat)        # (G_a, G_b)
        other = _shuffle(builder, wb, wa, cat)      # (v_b, v_a)
        k8, l8, r8 = (_splat(builder, x, 8) for x in (kappa_v, l2_v, lr_v))
        g = builder.fadd(builder.fmul(l8, v, flags=C), builder.fmul(k8, other, flags=C), flags=C)
        acc = builder.fadd(acc, builder.fmul(g, g, flags=C), flags=C)
        v = builder.fsub(v, builder.fmul(builder.fmul(r8, g, flags=C), _fast_rsqrt8(builder, acc), flags=C), flags=C)
        lo, hi = [0, 1, 2, 3], [4, 5, 6, 7]
        builder.store(_shuffle(builder, acc, acc, lo), ga_p, align=4)
        builder.store(_shuffle(builder, v, v, lo), wa_p, align=4)
        builder.store(_shuffle(builder, acc, acc, hi), gb_p, align=4)
        builder.store(_shuffle(builder, v, v, hi), wb_p, align=4)  # (b's last where ia == ib, as before)
        return context.get_dummy_value()
    return types.void(flat, types.int64, types.int64, types.float32, types.float32, types.float32), codegen


@intrinsic
def _pair_sum4(typingctx, flat, starts, lanes, fields):
    """sum over a < b of <v[a, f_b], v[b, f_a]> x_a x_b for K = 4 (``starts[j]``: feature j's
    first row of ``flat``, as :func:`_row_features` sets it; ``lanes[j]``: x_j four times, in
    float32), two pairs at a time in the eight float32 lanes of one AVX register, each lane a
    running sum (one add a pair of pairs, no horizontal sum a pair: 1.07 -> 0.76 ns a pair). x_b
    comes in the pairs' lanes (one load for two pairs) and x_a multiplies a's sums once, where
    each pair made x_a x_b in float64 and spread it over four lanes; two sums take turns, as one's
    adds waited on each other (0.56 -> 0.51 ns a pair). The lanes are summed in float64 at the
    end. Sums in another order than the scalar loop's: the same to about 1e-7 of the total."""
    wanted = ((flat, types.float32, 2), (starts, types.int64, 1), (lanes, types.float32, 2), (fields, types.int64, 1))
    if not all(isinstance(t, types.Array) and (t.dtype, t.ndim, t.layout) == (dtype, ndim, "C")
               for t, dtype, ndim in wanted):
        return None  # (the IR below assumes these: anything else is a typing error, not a miscompile)

    def codegen(context, builder, signature, args):
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args)]
        data, starts_at, lanes_at, fields_at = (array.data for array in arrays)
        i64, i32, f32, f64 = ir.IntType(64), ir.IntType(32), ir.FloatType(), ir.DoubleType()
        f4, f8 = ir.VectorType(f32, 4), ir.VectorType(f32, 8)
        width = builder.extract_value(arrays[0].shape, 1)
        k = builder.extract_value(arrays[1].shape, 0)
        one, two, four = (ir.Constant(i64, n) for n in (1, 2, 4))
        eight_lanes = ir.Constant(ir.VectorType(i32, 8), list(range(8)))
        zero4, zero8 = ir.Constant(f4, [0.0] * 4), ir.Constant(f8, [0.0] * 8)
        total, first_sum, second_sum = (cgutils.alloca_once_value(builder, zero8) for _ in range(3))

        def element(base, index):
            return builder.load(builder.gep(base, [index]))

        def vectors(b, sa, fa):  # (v[a, f_b], v[b, f_a])
            rows = builder.add(sa, element(fields_at, b)), builder.add(element(starts_at, b), fa)
            return [builder.load(builder.bitcast(builder.gep(data, [builder.mul(row, width)]), f4.as_pointer()),
                                 align=4) for row in rows]

        def x_lanes(b, vector):  # x_b four times (and x_{b+1} four times)
            return builder.load(builder.bitcast(builder.gep(lanes_at, [builder.mul(b, four)]), vector.as_pointer()),
                                align=4)

        def add(into, b, sa, fa, single=False):  # into += pairs (a, b) and (a, b + 1), or (a, b) alone
            first = vectors(b, sa, fa)
            if single:
                second, xs = [zero4, zero4], builder.shuffle_vector(x_lanes(b, f4), zero4, eight_lanes)
            else:
                second, xs = vectors(builder.add(b, one), sa, fa), x_lanes(b, f8)
            left = builder.shuffle_vector(first[0], second[0], eight_lanes)
            right = builder.shuffle_vector(first[1], second[1], eight_lanes)
            products = builder.fmul(builder.fmul(left, right, flags=C), xs, flags=C)
            builder.store(builder.fadd(builder.load(into), products, flags=C), into)

        with cgutils.for_range(builder, k) as outer:
            a = outer.index
            sa, fa = element(starts_at, a), element(fields_at, a)
            xa = element(lanes_at, builder.mul(a, four))
            builder.store(zero8, first_sum)
            builder.store(zero8, second_sum)
            start = builder.add(a, one)
            left_over = builder.sub(k, start)
            with cgutils.for_range(builder, builder.lshr(left_over, two)) as inner:
                b = builder.add(start, builder.shl(inner.index, two))
                add(first_sum, b, sa, fa)
                add(second_sum, builder.add(b, two), sa, fa)
            b = builder.add(start, builder.and_(left_over, ir.Constant(i64, -4)))
            with builder.if_then(builder.icmp_unsigned("!=", builder.and_(left_over, two), ir.Constant(i64, 0))):
                add(first_sum, b, sa, fa)
            with builder.if_then(builder.icmp_unsigned("!=", builder.and_(left_over, one), ir.Constant(i64, 0))):
                add(second_sum, builder.sub(k, one), sa, fa, single=True)
            sums = builder.fadd(builder.load(first_sum), builder.load(second_sum), flags=C)
            builder.store(builder.fadd(builder.load(total), builder.fmul(sums, _splat(builder, xa, 8), flags=C),
                                       flags=C), total)
        lanes8 = builder.load(total)
        out = ir.Constant(f64, 0.0)
        for lane in range(8):
            out = builder.fadd(out, builder.fpext(builder.extract_element(lanes8, ir.Constant(i32, lane)), f64))
        return out
    return types.float64(flat, starts, lanes, fields), codegen


@njit(cache=True, nogil=True)
def _learn_pairs(flat, starts, xs, fields, units, kappa0, factor_lr, factor_l2, ahead, span):
    """Each pair's step, ``kappa0 = (p - y) row_weight scale``; the row's first ``units``
    features (the categorical ones) have x = 1, so a pair of two of them steps with kappa0 x_a,
    made once for all of a feature's pairs (the same number: x_b = 1 multiplies exactly; the pair
    steps alone, 500,000 generated rows, 1.31 -> 1.22 ns a pair). The next row's vectors
    (``ahead``, :func:`_row_blocks`) are asked for meanwhile, a feature's at the start of each
    outer step: asked for all at once, a row's thousand-odd lines filled the CPU's queue of misses
    and stalled it (the kernel alone, 500,000 generated rows, one thread: 264k -> 290k rows/s;
    asked for evenly over the pairs, 280k: they came too late)."""
    k = starts.shape[0]
    dims = flat.shape[1] // 2
    lr32 = np.float32(factor_lr)
    l232 = np.float32(factor_l2)
    for a in range(k):
        _prefetch_block(flat, ahead, a, span)
        sa = starts[a]
        fa = fields[a]
        xa = xs[a]
        if dims == 4:
            unit_kappa = np.float32(kappa0 * xa)
            split = max(a + 1, units)
            for b in range(np.uint64(a + 1), np.uint64(split)):  # (unsigned: no wrap-around test on every load)
                _pair_step4(flat, sa + fields[b], starts[b] + fa, unit_kappa, l232, lr32)
            for b in range(np.uint64(split), np.uint64(k)):
                _pair_step4(flat, sa + fields[b], starts[b] + fa, np.float32(kappa0 * xa * xs[b]), l232, lr32)
            continue
        for b in range(np.uint64(a + 1), np.uint64(k)):
            ia = sa + fields[b]
            ib = starts[b] + fa
            kappa = np.float32(kappa0 * xa * xs[b])
            for d in range(dims):
                va = flat[ia, d]
                vb = flat[ib, d]
                ga = l232 * va + kappa * vb
                gb = l232 * vb + kappa * va
                acc_a = flat[ia, dims + d] + ga * ga
                acc_b = flat[ib, dims + d] + gb * gb
                flat[ia, dims + d] = acc_a
                flat[ib, dims + d] = acc_b
                flat[ia, d] = va - lr32 * ga * _rsqrt(acc_a)
                flat[ib, d] = vb - lr32 * gb * _rsqrt(acc_b)


@njit(cache=True, inline="always")
def _linear_margin(table, clock, slots, num_values, r, k_cat, before, regularise, lr, l1, l2, eps,
                   viewing, lin_lookup, mine, places):
    """The linear part of row r's margin (bias + sum w_j x_j), each slot's L1/L2 settled first.
    ``viewing``: the bias and the hot slots (``lin_lookup``) are read from the block's views
    ``mine`` (settled when taken), ``places[j]`` set to feature j's view position or -1."""
    z = np.float64(mine[0, WEIGHT] if viewing else table[table.shape[0] - 1, WEIGHT])
    looking = viewing and lin_lookup.shape[0] > 0
    for j in range(slots.shape[1]):
        t = np.int64(slots[r, j])
        h = _hot_position(t, lin_lookup) if looking else -1
        places[j] = h
        if h > 0:
            w = mine[h, WEIGHT]
        else:
            if regularise:
                _settle(table, clock, t, before, lr, l1, l2, eps)
            w = table[t, WEIGHT]
        z += w * _value(num_values, r, j, k_cat)
    return z


@njit(cache=True, inline="always")
def _linear_step(table, slots, num_values, r, k_cat, g0, lr, eps, viewing, mine, places, gradients, accumulators,
                 steps):
    """The linear part's Adagrad step for row r (the bias, then each feature in row order), in
    the block's views where :func:`_linear_margin` found them. As the linear kernel does it, the
    same float32 operations as :func:`kernels._adagrad` in three passes: accumulators in row order
    (a slot listed twice sees its first update), every step lr g / (sqrt(G) + eps) at once (a loop
    the compiler turns into vector square roots and divides), then the weights."""
    if viewing:
        _adagrad(mine, 0, g0, lr, eps)
    else:
        _adagrad(table, table.shape[0] - 1, g0, lr, eps)
    k = slots.shape[1]
    for j in range(k):
        g32 = np.float32(g0 * _value(num_values, r, j, k_cat))
        if viewing and places[j] > 0:
            acc = mine[places[j], ACCUMULATOR] + g32 * g32
            mine[places[j], ACCUMULATOR] = acc
        else:
            t = np.int64(slots[r, j])
            acc = table[t, ACCUMULATOR] + g32 * g32
            table[t, ACCUMULATOR] = acc
        gradients[j] = g32
        accumulators[j] = acc
    lr32 = np.float32(lr)
    eps32 = np.float32(eps)
    for j in range(k):
        steps[j] = lr32 * gradients[j] / (np.sqrt(accumulators[j]) + eps32)
    for j in range(k):
        if viewing and places[j] > 0:
            mine[places[j], WEIGHT] -= steps[j]
        else:
            table[np.int64(slots[r, j]), WEIGHT] -= steps[j]


@njit(cache=True, inline="always")
def _scale(num_values, r, k_cat, k):
    total = np.float64(k_cat)
    for j in range(k - k_cat):
        total += np.float64(num_values[r, j]) ** 2
    return 1.0 / total if total > 0.0 else 0.0


@njit(cache=True, inline="always")
def _fm_sums(flat, starts, xs, sums):
    """``sums[d] = sum_j v[j, d] x_j`` (row j's vector: ``flat[starts[j]]``, as
    :func:`_row_features` sets it); returns sum_d (sums[d]^2 - sum_j v[j, d]^2 x_j^2) / 2, the sum
    over the row's pairs of <v_a, v_b> x_a x_b."""
    dims = flat.shape[1] // 2
    squares = 0.0
    for d in range(dims):
        sums[d] = 0.0
    for j in range(starts.shape[0]):
        v = starts[j]
        x = xs[j]
        for d in range(dims):
            vx = flat[v, d] * x
            sums[d] += vx
            squares += vx * vx
    total = 0.0
    for d in range(dims):
        total += sums[d] * sums[d]
    return 0.5 * (total - squares)


@njit(cache=True, nogil=True)
def _learn_fm(flat, starts, xs, sums, kappa0, factor_lr, factor_l2):
    """FM: in row order, each feature's vector steps with grad_d = kappa0 x_j (S_d - v_jd x_j) +
    factor_l2 v_jd (S: ``sums``, from before the row's steps; v_jd: the vector as it is then),
    ``kappa0 = (p - y) row_weight scale``."""
    dims = flat.shape[1] // 2
    lr32 = np.float32(factor_lr)
    l232 = np.float32(factor_l2)
    for j in range(starts.shape[0]):
        u = starts[j]
        x = xs[j]
        kappa = kappa0 * x
        for d in range(dims):
            v = flat[u, d]
            g = np.float32(kappa * (sums[d] - v * x)) + l232 * v
            acc = flat[u, dims + d] + g * g
            flat[u, dims + d] = acc
            flat[u, d] = v - lr32 * g * _rsqrt(acc)


@njit(cache=True)
def _give_factors(factors, taken, u, v, h):
    """Add what view row ``v`` of factor slot ``u`` learned since it was taken (``taken[h]``) to
    slot u's row: vectors and accumulators, each number one atomic add."""
    width = factors.shape[2]
    for f in range(factors.shape[1]):
        base = (u * factors.shape[1] + f) * width
        for d in range(width):
            change = factors[v, f, d] - taken[h, f, d]
            if change != 0.0:
                _atomic_add(factors, base + d, change)


@njit(cache=True)
def _take_factors(factors, taken, u, v, h):
    for f in range(factors.shape[1]):
        for d in range(factors.shape[2]):
            factors[v, f, d] = factors[u, f, d]
            taken[h, f, d] = factors[v, f, d]


@njit(cache=True)
def _fold_factors(factors, taken, hot, views_at, end):
    """Hand views 1 .. ``end`` - 1 back to the table and take them again (position 0 is unused)."""
    for h in range(1, end):
        _give_factors(factors, taken, hot[h], views_at + h, h)
        _take_factors(factors, taken, hot[h], views_at + h, h)


@njit(cache=True, parallel=True, nogil=True)
def hand_back_views(factors, taken, hot, fmask, blocks):
    """After :func:`train_chunk` on ``blocks`` blocks with views: add what every block's views
    learned since last taken to the table, each hot factor slot's changes summed over the blocks
    by one thread, with plain adds (the blocks are done; each block adding its own with one
    atomic add a number, all at once at the chunk's end, cost two threads 3-4% of the kernel)."""
    n = hot.shape[0]
    for h in prange(1, n):
        u = hot[h]
        for f in range(factors.shape[1]):
            for d in range(factors.shape[2]):
                change = np.float32(0.0)
                for b in range(blocks):
                    change += factors[fmask + 1 + b * n + h, f, d] - taken[b, h, f, d]
                if change != 0.0:
                    factors[u, f, d] += change


@njit(cache=True, parallel=True, nogil=True)
def train_chunk(slots, num_values, labels, row_weights, held, table, clock, step0, lr, l1, l2, eps,
                factors, fields, fmask, factor_lr, factor_l2, blocks, block_loss,
                hot, lookup, fold_ends, fold_rows, taken, lin_hot, lin_lookup, lin_fold_ends, lin_private):
    """Learn one chunk; row r is global step ``step0 + r + 1``. Inputs as
    :func:`fastada.kernels.train_chunk`'s (slots located with no hot slots), plus the factor
    table, ``fields`` (int64, the field of each of a row's features; empty: a factorization
    machine, every feature one vector in a table of one field) and ``fmask`` (factor slots - 1).
    ``block_loss[b]`` = (weighted loss, weight) of learned rows, then of held-out rows. Returns a
    status.

    With hot factor slots (``lookup`` not empty, from :func:`kernels.hot_slots` over factor
    slots, position 0 unused) each block learns their vectors in views of its own, rows of
    ``factors`` past its ``fmask + 1`` slots (block b's view of position h at ``fmask + 1 + b *
    hot.shape[0] + h``; ``taken[b, h]`` the view as last taken from the table), as the linear
    kernel does its hot slots: taken when the block starts, handed back (the changes added) and
    taken again every ``fold_rows * 2^c`` of its rows for the first ``fold_ends[c]`` positions,
    and all handed back when it ends. A frequent value's vectors (FFM: for every other field)
    are written by every row that has it: shared, their lines moved between cores on most pairs.

    The linear part's hot slots (``lin_hot`` not empty: the bias first, then the slots
    ``lin_lookup`` finds; ``lin_fold_ends`` as :class:`kernels.HotSlots`'; ``lin_private[b]`` block
    b's views, :func:`kernels.private_state`) are learned in per-block views the same way, with
    the linear kernel's own take and fold (L1/L2 settled then): the bias and a numeric column's
    value are written by every row, and shared, their lines crossed between cores on every row
    (2 threads ran 1.53x one; without linear steps 1.78x)."""
    rows = labels.shape[0]
    regularise = l1 > 0.0 or l2 > 0.0
    holdout = held.shape[0] > 0
    k = slots.shape[1]
    k_cat = k - num_values.shape[1]
    field_aware = fields.shape[0] > 0
    fields_n = np.int64(factors.shape[1])
    flat = factors.reshape(factors.shape[0] * factors.shape[1], factors.shape[2])
    use_views = lookup.shape[0] > 0
    viewing = lin_hot.shape[0] > 0
    for b in prange(blocks):
        views_at = fmask + 1 + b * hot.shape[0]  # the block's views, as factor slots
        mine = lin_private[b]
        if use_views:
            for h in range(1, hot.shape[0]):
                _take_factors(factors, taken[b], hot[h], views_at + h, h)
        if viewing:
            for h in range(lin_hot.shape[0]):
                _take(table, clock, lin_hot, mine, h, step0 + rows * b // blocks, lr, l1, l2, eps)
        to_fold = fold_rows
        folds = 0
        sums = np.empty(factors.shape[2] // 2, dtype=np.float64)  # FM's sums of v x
        starts = np.empty(k, dtype=np.int64)  # the row's features
        xs = np.empty(k, dtype=np.float64)
        lanes = np.empty((k, 4 if field_aware else 0), dtype=np.float32)  # FFM's pair sum: xs four times each
        places = np.empty(k, dtype=np.int64)  # each feature's linear view, or -1
        gradients = np.empty(k, dtype=np.float32)  # the linear step's, feature by feature
        accumulators = np.empty(k, dtype=np.float32)
        steps = np.empty(k, dtype=np.float32)
        ahead = np.full(k, -1, dtype=np.int64)  # the next row's features' vectors
        hot_ahead = np.full(k, -1, dtype=np.int64)  # ... and their hot positions
        hot_here = np.full(k, -1, dtype=np.int64)  # this row's
        span = fields_n * flat.shape[1]
        lo = rows * b // blocks
        hi = rows * (b + 1) // blocks
        loss_sum = 0.0
        weight_sum = 0.0
        held_loss = 0.0
        held_weight = 0.0
        for r in range(rows * b // blocks, hi):
            before = step0 + r
            if use_views or viewing:
                if to_fold <= 0:
                    folds += 1
                    if use_views:
                        _fold_factors(factors, taken[b], hot, views_at, fold_end(folds, fold_ends))
                    if viewing:
                        _fold_due(table, clock, lin_hot, mine, folds, lin_fold_ends, True, before, lr, l1, l2, eps)
                    to_fold = fold_rows
                to_fold -= 1
            # the next row's features looked up among the hot factor slots (FFM: its vectors asked for
            # while this row's pairs learn), then its linear slots (and FM's vectors) asked for
            if field_aware or use_views:
                if r == lo:  # (the block's first row: as if a row before had looked it up)
                    _row_blocks(flat, slots, r, fmask, fields_n, lookup, ahead, hot_ahead, views_at)
                hot_here, hot_ahead = hot_ahead, hot_here
                if r + 1 < hi:
                    _row_blocks(flat, slots, r + 1, fmask, fields_n, lookup, ahead, hot_ahead, views_at)
                else:
                    ahead[:] = -1
            if r + 1 < hi:
                for j in range(k):
                    t = np.int64(slots[r + 1, j])
                    _prefetch(table, t * SLOT_WIDTH)
                    if not field_aware:
                        _prefetch_factor(flat, (t & fmask) * flat.shape[1])
            z = _linear_margin(table, clock, slots, num_values, r, k_cat, before, regularise, lr, l1, l2, eps,
                               viewing, lin_lookup, mine, places)
            scale = _scale(num_values, r, k_cat, k)
            _row_features(slots, num_values, r, k_cat, fmask, fields_n, starts, xs, lanes, hot_here, views_at)
            if field_aware:
                z += _pairs(flat, starts, xs, lanes, fields, scale, factors.shape[2] // 2)
            else:
                z += scale * _fm_sums(flat, starts, xs, sums)
            y = np.float64(labels[r])
            rw = np.float64(row_weights[r])
            if holdout and held[r] != 0:
                held_loss += rw * logistic_loss(z, y)
                held_weight += rw
                if field_aware:  # (no pairs learned to ask for them meanwhile)
                    for j in range(k):
                        _prefetch_block(flat, ahead, j, span)
                continue
            loss, g = loss_and_gradient(z, y)
            loss_sum += rw * loss
            weight_sum += rw
            g0 = g * rw
            _linear_step(table, slots, num_values, r, k_cat, g0, lr, eps, viewing, mine, places, gradients,
                         accumulators, steps)
            if field_aware:
                _learn_pairs(flat, starts, xs, fields, k_cat, g0 * scale, factor_lr, factor_l2, ahead, span)
            else:
                _learn_fm(flat, starts, xs, sums, g0 * scale, factor_lr, factor_l2)
        if viewing:
            for h in range(lin_hot.shape[0]):
                if _changed(mine, h):
                    _give(table, clock, lin_hot, mine, h, True, step0 + hi, lr, l1, l2, eps)
        block_loss[b, 0] = loss_sum
        block_loss[b, 1] = weight_sum
        block_loss[b, 2] = held_loss
        block_loss[b, 3] = held_weight
    return chunk_status(block_loss, blocks)


@njit(cache=True, parallel=True, nogil=True)
def predict_chunk(cat, num, num_values, weights, factors, fields, mask, fmask, blocks, margin, out):
    """``out[r]``: the probability (``margin``: log-odds) of row r of hashed features ``cat``,
    ``num`` (as :func:`fastada.kernels.predict_chunk` takes them) under weights (the bias last)
    and factors (``(factor_slots, fields, K)``: vectors only; ``fields`` empty: an FM, one field)."""
    rows = out.shape[0]
    k_cat = cat.shape[1]
    k = k_cat + num.shape[1]
    dims = factors.shape[2]
    field_aware = fields.shape[0] > 0
    bias = np.float64(weights[weights.shape[0] - 1])
    fields_n = np.int64(factors.shape[1])
    flat = factors.reshape(factors.shape[0] * factors.shape[1], factors.shape[2])
    for blk in prange(blocks):
        slots = np.empty(k, dtype=np.int64)
        sums = np.empty(dims, dtype=np.float64)
        starts = np.empty(k, dtype=np.int64)  # FFM: as training reads the row (the same sums)
        xs = np.empty(k, dtype=np.float64)
        lanes = np.empty((k, 4), dtype=np.float32)
        hi = rows * (blk + 1) // blocks
        span = fields_n * dims
        for r in range(rows * blk // blocks, hi):
            if r + 1 < hi:  # the next row's weights and vectors, asked for ahead
                for j in range(k):
                    t = np.int64((cat[r + 1, j] if j < k_cat else num[r + 1, j - k_cat]) & mask)
                    _prefetch_vectors(weights, t)
                    u = t & fmask
                    for offset in range(0, span, 16):
                        _prefetch_vectors(flat, u * span + offset)
            z = bias
            total = np.float64(k_cat)
            for j in range(k):
                slots[j] = np.int64((cat[r, j] if j < k_cat else num[r, j - k_cat]) & mask)
                x = 1.0 if j < k_cat else np.float64(num_values[r, j - k_cat])
                if j >= k_cat:
                    total += x * x
                z += weights[slots[j]] * x
                starts[j] = (slots[j] & fmask) * fields_n
                xs[j] = x
                _spread(lanes, j, x)
            pairs = 0.0
            if field_aware:
                pairs = _pairs(flat, starts, xs, lanes, fields, 1.0, dims)
            else:  # (|sum v x|^2 - sum |v x|^2) / 2
                squares = 0.0
                for d in range(dims):
                    sums[d] = 0.0
                for j in range(k):
                    x = 1.0 if j < k_cat else np.float64(num_values[r, j - k_cat])
                    for d in range(dims):
                        vx = factors[slots[j] & fmask, 0, d] * x
                        sums[d] += vx
                        squares += vx * vx
                for d in range(dims):
                    pairs += sums[d] * sums[d]
                pairs = 0.5 * (pairs - squares)
            z += pairs * (1.0 / total if total > 0.0 else 0.0)
            out[r] = z if margin else _sigmoid(z)
