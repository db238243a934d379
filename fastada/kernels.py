"""Numba kernels: Hogwild per-feature Adagrad with lazy L1/L2, scoring, and catch-up.

Kernels know arrays and scalars only: no files, no Arrow, no flags.

State layout ("slot table"): a float32 array ``table`` of shape ``(slots + 1, 4)``, 16 bytes a
slot so a touched slot costs one cache line: ``table[s, 0]`` the weight, ``table[s, 1]`` the
Adagrad accumulator G, and ``table[s, 2:4]`` reinterpreted as one int64 (``clock[s, 1]`` where
``clock = table.view(np.int64)``) the last step whose regularisation the slot has received.
Row ``slots`` is the bias: it learns with Adagrad but is never regularised.

The algorithm, per example t = 1, 2, ... (the eager definition that tests check against):

1. margin z = bias + sum_j w[s_j] * x_j (with new-value features, FeatureSpec.new_values, each
   categorical feature of weight 0 adds its column's new-value weight: see :func:`train_chunk`);
   p = sigmoid(z);  loss = log(1 + e^z) - y z.
2. for each feature j in row order (a slot listed twice is updated twice):
   g = (p - y) * x_j * row_weight;  G[s_j] += g^2;  w[s_j] -= lr * g / (sqrt(G[s_j]) + eps).
3. every slot with G > 0 takes one proximal step with its own rate eta = lr / (sqrt(G) + eps):
   w <- sign(w) * max(|w| - eta * l1, 0) / (1 + eta * l2).

Step 3 is lazy: a slot's G does not change while it is untouched, so k skipped steps have the
closed form  w_k = r^k |w| - eta l1 r (1 - r^k) / (1 - r)  with r = 1 / (1 + eta l2), clipped at 0
(once a step clips, every later step stays at 0). A slot settles what it owes when it is next
touched and :func:`catch_up_all` settles every slot before the weights are used, so a step costs
O(features in the row).

Hogwild: :func:`train_chunk` splits a chunk's rows into ``blocks`` contiguous ranges, one per
thread, that read and write the table without locks. Races lose an update now and then, which
Hogwild tolerates; with ``blocks == 1`` the kernel is sequential and bit-for-bit repeatable.
Slots that nearly every row writes (:class:`HotSlots`) would make every write a cache-line
transfer between cores, so each block learns them in a private copy merged after the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

SLOT_WIDTH = 4  # float32 fields per slot: weight, accumulator, clock (int64 = two fields)
WEIGHT, ACCUMULATOR = 0, 1
CLOCK = 1  # column of the int64 view of the table

ROW_BYTES = 4 * SLOT_WIDTH  # a table row (and a view's): 16 bytes

# ``new_where`` of a column position without a new-value feature (a list column's)
NO_NEW = -(1 << 62)

# Kernels report problems through this status instead of raising inside prange.
STATUS_OK = 0
STATUS_NOT_FINITE = 1


@njit(cache=True)
def ready():
    """Nothing: the first compiled function a process loads sets Numba up (0.2-0.3 s: its
    registries, and SciPy's BLAS, which it looks for), so :func:`fastada.train.start_numba`
    loads this one while the run's first work is done elsewhere."""
    return 0


def new_table(slots: int, initial_accumulator: float = 0.0) -> np.ndarray:
    """A zeroed slot table for ``slots`` hashed slots plus the bias row."""
    table = np.zeros((slots + 1, SLOT_WIDTH), dtype=np.float32)
    if initial_accumulator:
        table[:, ACCUMULATOR] = initial_accumulator
    return table


@njit(cache=True, inline="always")
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def _softplus(a):
    """log(1 + e^a) without overflow or cancellation."""
    return max(a, 0.0) + np.log1p(np.exp(-abs(a)))


@njit(cache=True, inline="always")
def logistic_loss(z, y):
    """log(1 + e^z) - y z for y in {0, 1}: softplus(-z) if y else softplus(z), exact at any margin."""
    return _softplus(-z) if y > 0.5 else _softplus(z)


@njit(cache=True, inline="always")
def loss_and_gradient(z, y):
    """(:func:`logistic_loss`, :func:`_sigmoid` - y) at margin ``z``, the same values bit for bit,
    from one exponential: both need e^-|z|, which the compiler does not see (a row's two
    exponentials were a tenth of the learning kernel's arithmetic)."""
    e = np.exp(-abs(z))
    loss = max(-z if y > 0.5 else z, 0.0) + np.log1p(e)
    p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
    return loss, p - y


@njit(cache=True)
def regularised(w, accumulator, steps, lr, l1, l2, eps):
    """Weight ``w`` after ``steps`` proximal L1/L2 steps at the constant rate of ``accumulator``."""
    if steps <= 0 or w == 0.0:
        return w
    eta = lr / (np.sqrt(np.float64(accumulator)) + eps)
    a = eta * l1
    k = np.float64(steps)
    mag = abs(np.float64(w))
    if steps == 1:  # the eager step itself (a slot touched every row: no exponentials)
        mag = (mag - a) / (1.0 + eta * l2)
    elif l2 > 0.0:
        # with x = eta l2 and r = 1 / (1 + x): r^k = exp(-k log1p(x)) and r / (1 - r) = 1 / x, so
        # the sum a r (1 - r^k) / (1 - r) is a (1 - r^k) / x, where 1 - r^k = -expm1(-k log1p(x))
        # keeps its digits as x -> 0 (the direct form divided 0 by 0 below x ~ 1e-16)
        # (r^k from exp where it is small, not as 1 - (1 - r^k): a weight decayed to 1e-18 stays
        # 1e-18, not 0, which would make its value count as never seen: FeatureSpec.new_values;
        # one exponential either way: a third cost a regularised run 17%)
        x = eta * l2
        log_r_k = -k * np.log1p(x)
        if log_r_k < -0.5:
            r_k = np.exp(log_r_k)
            decayed = 1.0 - r_k
        else:
            decayed = -np.expm1(log_r_k)  # 1 - r^k
            r_k = 1.0 - decayed
        mag = r_k * mag - a * decayed / x
    else:
        mag = mag - a * k
    if mag <= 0.0:
        return np.float32(0.0)
    return np.float32(mag if w > 0 else -mag)


@njit(cache=True, inline="always")
def _settle(table, clock, slot, now, lr, l1, l2, eps):
    """Bring ``slot`` up to date with the regularisation steps up to and including ``now``."""
    last = clock[slot, CLOCK]
    if now > last:
        table[slot, WEIGHT] = regularised(table[slot, WEIGHT], table[slot, ACCUMULATOR],
                                          now - last, lr, l1, l2, eps)
        clock[slot, CLOCK] = now


@njit(cache=True, inline="always")
def _adagrad(table, slot, g, lr, eps):
    # float32 arithmetic: the state is float32, and float32 sqrt/divide have twice the throughput
    g32 = np.float32(g)
    acc = table[slot, ACCUMULATOR] + g32 * g32
    table[slot, ACCUMULATOR] = acc
    table[slot, WEIGHT] -= np.float32(lr) * g32 / (np.sqrt(acc) + np.float32(eps))


# Hot slots: a slot that more than HOT_SHARE of the rows write (the bias, each numeric column's
# value and missing features, low-cardinality values). Shared by Hogwild threads, each such write
# moves a cache line between cores: measured on 16 cores (shared/DESIGN-NOTES.md), a shared
# gather/scatter fell to 0.6x of one thread at 16 threads, and rose to 13.6x with the ~2,100 slots
# above 1 row in 1,000 kept per thread. On 2 cores (2026-12-05, 2M rows, zstd Zipf 1.05) that
# share (2,200 slots) ran the kernel 1.66x on 2 threads where 3e-4 (6,337 slots, each thread's
# views to hand back and take again) ran 1.48x; 1e-2 (474) 1.46x; snappy data alike at both.
HOT_SHARE = 1e-3
HOT_CAP = 8192  # at most this many hot slots (256 KiB of views a thread; positions fit 16 bits)
HOT_SAMPLE_ROWS = 16384  # rows counted to choose them
# About how many updates of a hot slot a thread learns in its own view before adding them to the
# table: writes to a hot line drop this many times, and other threads see them about this many
# updates late. Not counted per update (counting ~34 a row cost one thread 17% of its rate): a hot
# slot that a share p of the rows writes, 2^-(c+1) < p <= 2^-c, is handed back every
# FOLD_ROWS * 2^c rows of a thread, so after FOLD_UPDATES / 2 to FOLD_UPDATES of its updates.
# Rows after which a thread hands back and re-takes all its views: a hot slot seen once in 3,000
# rows is then at most ~22 of its updates behind the other threads'. Measured 2026-12-05 (2 cores,
# 2M rows, zstd Zipf-1.05 / snappy data): 256 and 16,384 gave the kernel 1.58x / 1.32x on 2
# threads, these 1.66x / 1.50x; test logloss moved from 1 thread's by 0.00009 and 0.00019.
FOLD_UPDATES = 1024
FOLD_ROWS = FOLD_UPDATES
REFRESH_ROWS = 65536


@njit(cache=True, inline="always")
def refresh_period(step, blocks, longest):
    """How many of its rows a block learns before it next refreshes all its views, decided at
    global step ``step``: early in a run, when Adagrad's steps are large and stale views cost most,
    after 1/4 of its share of the rows seen so far; later every ``longest`` rows (training:
    :data:`REFRESH_ROWS`), never fewer than 256. Decided at each refresh, not once a chunk: a
    period fixed at a chunk's first step refreshed every 256 rows through the whole first chunk
    (149 refreshes a thread in a 2M-row run where this rule asks 54), and each moves every hot
    line between the cores twice (2 threads, zstd data, 2M rows, side by side: 9.6M -> 10.2-10.4M
    rows/s)."""
    return min(longest, max(256, step // (4 * blocks)))


@dataclass(frozen=True)
class HotSlots:
    """The slots learned in private copies, and a lookup from slot to its position.

    ``slots`` (int64): table rows, ``slots[0]`` always the bias, the others most written first.
    ``lookup`` (int64): an open-addressing table from slot to position, ``slot << 16 | position``
    at ``slot mod its size`` or after (linear probing), -1 empty; four times the hot slots, so most
    cold slots end at the first entry they read, and small enough to stay in cache.
    ``fold_ends`` (int64): every ``FOLD_ROWS * 2^c`` rows a thread hands back its views of the
    first ``fold_ends[c]`` slots (those more than 2^-(c+1) of the rows write), the rest at
    its refresh only.
    """

    slots: np.ndarray
    lookup: np.ndarray
    fold_ends: np.ndarray

    @property
    def count(self) -> int:
        return int(self.slots.shape[0])


def hot_slots(table_rows: int, slots=(), shares=None) -> HotSlots:
    """A :class:`HotSlots` for a table of ``table_rows`` rows (the last the bias) holding the bias
    and ``slots`` (hashed slots, each once), in this order; ``shares``: the share of the rows that
    write each of ``slots`` (default: every row)."""
    bias = table_rows - 1
    shares = np.ones(len(slots)) if shares is None else np.asarray(shares, dtype=np.float64)
    keep = np.asarray([s != bias for s in slots], dtype=bool)
    hashed = np.asarray(slots, dtype=np.int64)[keep] if len(slots) else np.zeros(0, np.int64)
    chosen = np.concatenate([[bias], hashed]).astype(np.int64)
    share = np.concatenate([[1.0], shares[keep] if len(slots) else []])
    classes = max(1, (REFRESH_ROWS // FOLD_ROWS).bit_length() - 1)  # periods shorter than a refresh
    fold_ends = np.array([np.count_nonzero(share > 2.0 ** -(c + 1)) for c in range(classes)], dtype=np.int64)
    if hashed.size == 0:  # nothing to look up
        return HotSlots(chosen, np.zeros(0, np.int64), fold_ends)
    lookup = np.full(1 << max(3, int(4 * chosen.shape[0] - 1).bit_length()), -1, dtype=np.int64)
    _fill_hot(chosen, lookup)  # (slots are hash bits: their low bits spread them evenly)
    return HotSlots(chosen, lookup, fold_ends)


def choose_hot_slots(cat: np.ndarray, num: np.ndarray, mask: int, table_rows: int,
                     share: float = HOT_SHARE, cap: int = HOT_CAP, forced=()) -> HotSlots:
    """Hot slots counted on a sample of rows (``cat``/``num`` hash matrices, up to
    :data:`HOT_SAMPLE_ROWS` of their first rows): every slot written by more than ``share`` of the
    rows, most written first, at most ``cap``; plus the bias. Chosen from the data, so it holds for
    any column layout or value skew. ``forced``: slots hot whatever the count (new-value slots,
    which first sightings write), handed back as often as the bias."""
    forced = list(dict.fromkeys(int(s) for s in forced if 0 <= s < table_rows - 1))
    rows = min(cat.shape[0], HOT_SAMPLE_ROWS)
    if rows == 0 or cat.shape[1] + num.shape[1] == 0:
        return hot_slots(table_rows, forced)
    values, counts = _frequent_slots(cat[:rows], num[:rows], np.uint32(mask), np.int64(share * rows))
    order = np.lexsort((values, -counts))  # most written first (ties: by slot)
    order = order[~np.isin(values[order], forced)][:max(0, cap - 1 - len(forced))]
    return hot_slots(table_rows, np.concatenate([np.asarray(forced, np.int64), values[order]]),
                     np.concatenate([np.ones(len(forced)), counts[order] / rows]))


@njit(cache=True)
def new_value_places(new_hashes, mask, hot_lookup):
    """``new_where`` for :func:`train_chunk`: each column position's new-value slot (``hash &
    mask``), or ``-1 - position`` where it is hot, or :data:`NO_NEW` (hash -1: none)."""
    out = np.empty(new_hashes.shape[0], dtype=np.int64)
    for j in range(new_hashes.shape[0]):
        if new_hashes[j] < 0:
            out[j] = NO_NEW
            continue
        s = new_hashes[j] & mask
        h = _hot_position(s, hot_lookup) if hot_lookup.shape[0] > 0 else -1
        out[j] = s if h < 0 else -1 - h
    return out


@njit(cache=True, nogil=True)
def _frequent_slots(cat, num, mask, more_than):
    """(slots, counts) of the slots that the features of ``cat`` and ``num`` reach more than
    ``more_than`` times (counted in an open-addressing table: no sort of every feature)."""
    n = cat.size + num.size
    size = 1
    while size < 2 * n:
        size *= 2
    keys = np.full(size, -1, dtype=np.int32)  # slots < 2**31
    counts = np.zeros(size, dtype=np.int32)
    for r in range(cat.shape[0]):
        for j in range(cat.shape[1] + num.shape[1]):
            s = np.int32((cat[r, j] if j < cat.shape[1] else num[r, j - cat.shape[1]]) & mask)
            i = (np.int64(s) * 0x9E3779B1) & (size - 1)
            while keys[i] != s and keys[i] >= 0:
                i = (i + 1) & (size - 1)
            keys[i] = s
            counts[i] += 1
    chosen = 0
    for i in range(size):
        if counts[i] > more_than:
            chosen += 1
    slots = np.empty(chosen, dtype=np.int64)
    found = np.empty(chosen, dtype=np.int64)
    k = 0
    for i in range(size):
        if counts[i] > more_than:
            slots[k] = keys[i]
            found[k] = counts[i]
            k += 1
    return slots, found


@njit(cache=True)
def _fill_hot(slots, lookup):
    for h in range(1, slots.shape[0]):  # not the bias (slots[0]), which no hash reaches
        s = slots[h]
        i = s & (lookup.shape[0] - 1)
        while lookup[i] >= 0:
            i = (i + 1) & (lookup.shape[0] - 1)
        lookup[i] = (s << 16) | h


@njit(cache=True, inline="always")
def _hot_position(s, lookup):
    """Position of slot ``s`` among the hot slots, or -1 for a cold slot."""
    i = s & (lookup.shape[0] - 1)
    while True:
        entry = lookup[i]
        if entry < 0:
            return -1
        if entry >> 16 == s:
            return entry & 0xFFFF
        i = (i + 1) & (lookup.shape[0] - 1)


@njit(cache=True, nogil=True)
def locate(cat, num, mask, hot_lookup, out, origin):
    """Where each feature of a chunk learns: ``out`` (int32, rows x (k_cat + k_num), the
    categorical features then the numeric ones) holds the slot (``hash & mask``) of a cold
    feature and ``-1 - position`` of a hot one. Each row's categorical features are listed hot
    ones first, each group in column order: the kernel branches on hot or cold for every feature,
    and a row's mix of the two in column order made those branches unpredictable (one thread
    with views ran 3.9M rows/s so, 4.9M hot first). ``origin`` (int16, rows x k_cat, or no rows):
    the column position each listed categorical feature came from (for new-value features).
    Without hot slots (``hot_lookup`` empty) the order is the columns'. Pure and serial: the
    reader threads run it, so the learning kernel looks nothing up."""
    k_cat = cat.shape[1]
    lookup = hot_lookup.shape[0] > 0
    origins = origin.shape[0] > 0
    cold = np.empty(k_cat, dtype=np.int32)
    cold_from = np.empty(k_cat, dtype=np.int16)
    for r in range(cat.shape[0]):
        hot_count = 0
        cold_count = 0
        for j in range(k_cat):
            s = np.int64(cat[r, j] & mask)
            h = _hot_position(s, hot_lookup) if lookup else -1
            if h < 0:
                cold[cold_count] = s
                cold_from[cold_count] = j
                cold_count += 1
            else:
                if origins:
                    origin[r, hot_count] = j
                out[r, hot_count] = -1 - h
                hot_count += 1
        for c in range(cold_count):
            out[r, hot_count + c] = cold[c]
            if origins:
                origin[r, hot_count + c] = cold_from[c]
        for j in range(num.shape[1]):
            s = np.int64(num[r, j] & mask)
            h = _hot_position(s, hot_lookup) if lookup else -1
            out[r, k_cat + j] = s if h < 0 else -1 - h


@intrinsic
def _atomic_add(typingctx, array, index, value):
    """``array.flat[index] += value`` as one atomic read-modify-write (C-contiguous float32)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        builder.atomic_rmw("fadd", builder.gep(data, [args[1]]), args[2], "monotonic")
        return context.get_dummy_value()
    return types.void(array, types.int64, types.float32), codegen


def _prefetcher(write: int):
    """An intrinsic ``f(array, index)`` that asks the CPU to bring ``array.flat[index]``'s cache
    line in (to write it, or only to read it): no fault, no wait, no effect on results."""
    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            import llvmlite.ir as ir
            byte_pointer = ir.IntType(8).as_pointer()
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            address = builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)
            i32 = ir.IntType(32)
            fn = builder.module.declare_intrinsic(
                "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]))
            # (address, write?, locality 3 = keep in every cache level, data not instructions)
            builder.call(fn, [address, ir.Constant(i32, write), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return types.void(array, types.int64), codegen
    return prefetch


_prefetch = _prefetcher(write=1)
_prefetch_read = _prefetcher(write=0)


@intrinsic
def _data_address(typingctx, array):
    """The address of ``array``'s first element, as an int64 (for :func:`_load32` and
    :func:`_store32`: a slot of the table and a block's view of a hot slot chosen without a branch)."""
    def codegen(context, builder, signature, args):
        import llvmlite.ir as ir
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))
    return types.int64(array), codegen


@intrinsic
def _load32(typingctx, address):
    """The float32 at ``address``."""
    def codegen(context, builder, signature, args):
        import llvmlite.ir as ir
        return builder.load(builder.inttoptr(args[0], ir.FloatType().as_pointer()), align=4)
    return types.float32(types.int64), codegen


@intrinsic
def _store32(typingctx, address, value):
    """Store float32 ``value`` at ``address``."""
    def codegen(context, builder, signature, args):
        import llvmlite.ir as ir
        builder.store(args[1], builder.inttoptr(args[0], ir.FloatType().as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(types.int64, types.float32), codegen


# Rows ahead whose slots the kernels ask the CPU for while they learn the current one: a row's
# ~50 slots are scattered over a table far larger than the caches, and fetching the next rows'
# while this one computes took one thread from 3.2M to 5.1-5.3M rows/s (2^24 slots, zstd data
# with Zipf 1.05 columns, 2 cores, 2026-12-05); 1, 2, 4 and 8 rows ahead were within noise.
PREFETCH_ROWS = 2


# Fields of a block's private view of a hot slot (``private[b, h]``).
_W, _G, _W0, _G0 = 0, 1, 2, 3
_VIEW_WIDTH = 4
# the views path of train_chunk addresses a view's weight and G as a table row's (ROW_BYTES apart)
assert _VIEW_WIDTH == SLOT_WIDTH and (_W, _G) == (WEIGHT, ACCUMULATOR)
# Fields of ``taken[b]``: whether the block holds views, its rows since it took them (at its next
# fold or refresh), rows to that, folds since it took them, its rows from taking them to taking
# them again.
_HOLDS, _AGE, _TO_FOLD, _FOLDS, _PERIOD = 0, 1, 2, 3, 4


def private_state(blocks: int, hot: HotSlots) -> tuple[np.ndarray, np.ndarray]:
    """State for :func:`train_chunk` and :func:`fold_views`: each block's view of every hot slot
    (weight and G, and both as last taken from the table), and the block's counters (``taken[b,
    _HOLDS]``: whether it holds views); blocks a cache line apart."""
    return (np.zeros((blocks, (hot.count + 15) // 16 * 16, _VIEW_WIDTH), dtype=np.float32),
            np.zeros((blocks, 16), dtype=np.int32))


@njit(cache=True, inline="always")
def _changed(mine, h):
    return mine[h, _W] != mine[h, _W0] or mine[h, _G] != mine[h, _G0]


@njit(cache=True, inline="always")
def _take(table, clock, hot, mine, h, before, lr, l1, l2, eps):
    """Load hot slot ``h`` from the table into the block's view."""
    s = hot[h]
    if s != table.shape[0] - 1 and (l1 > 0.0 or l2 > 0.0):
        _settle(table, clock, s, before, lr, l1, l2, eps)
    mine[h, _W] = table[s, WEIGHT]
    mine[h, _G] = table[s, ACCUMULATOR]
    mine[h, _W0] = mine[h, _W]
    mine[h, _G0] = mine[h, _G]


@njit(cache=True)
def _fold(table, clock, hot, mine, h, shared, before, lr, l1, l2, eps):
    """Add the block's changes to hot slot ``h`` since it was taken to the table, and take it
    again (the table holds the other blocks' changes too; the line was just written here).

    ``shared``: other blocks may write the same slot (a racy read-modify-write, as Hogwild's);
    without them the view is copied back exactly, so one block is the sequential update."""
    _give(table, clock, hot, mine, h, shared, before, lr, l1, l2, eps)
    if shared:
        _take(table, clock, hot, mine, h, before, lr, l1, l2, eps)


@njit(cache=True, inline="always")
def _give(table, clock, hot, mine, h, shared, before, lr, l1, l2, eps):
    """The table gets the block's view of hot slot ``h``: its changes added, or (not
    ``shared``) the view itself."""
    s = hot[h]
    if not shared:
        table[s, WEIGHT] = mine[h, _W]
        table[s, ACCUMULATOR] = mine[h, _G]
        return
    if s != table.shape[0] - 1 and (l1 > 0.0 or l2 > 0.0):
        _settle(table, clock, s, before, lr, l1, l2, eps)
    # atomic: a fold carries hundreds of updates, too many to lose to a race as Hogwild loses one
    _atomic_add(table, s * SLOT_WIDTH + WEIGHT, mine[h, _W] - mine[h, _W0])
    _atomic_add(table, s * SLOT_WIDTH + ACCUMULATOR, mine[h, _G] - mine[h, _G0])


@njit(cache=True, nogil=True)
def fold_views(table, clock, hot, private, taken, shared, now, lr, l1, l2, eps):
    """Give the table every block's views (see :func:`train_chunk`) and drop them, so the table
    is the whole model; call before reading or saving it. The next chunk takes views anew."""
    for b in range(private.shape[0]):
        if taken[b, _HOLDS] == 0:
            continue
        for h in range(hot.shape[0]):
            if _changed(private[b], h):
                _give(table, clock, hot, private[b], h, shared, now, lr, l1, l2, eps)
        taken[b, _HOLDS] = 0


# Hot slots ahead whose table lines a refresh or fold asks for while it hands back and takes the
# current one: each line was last written by another core, and the atomic adds wait for it (2
# threads, zstd data, 2M rows, four pairs side by side: 10.1M -> 10.65M rows/s; 48 ahead no better).
REFRESH_AHEAD = 16


@njit(cache=True)
def _refresh(table, clock, hot, mine, holding, shared, before, lr, l1, l2, eps):
    """Hand back every view the block holds (``holding``) and take every hot slot anew. One call,
    not inlined: it runs every few thousand rows, and inlining its loop costs compile time."""
    for h in range(min(REFRESH_AHEAD, hot.shape[0])):
        _prefetch(table, hot[h] * SLOT_WIDTH)
    for h in range(hot.shape[0]):
        if h + REFRESH_AHEAD < hot.shape[0]:
            _prefetch(table, hot[h + REFRESH_AHEAD] * SLOT_WIDTH)
        if holding and _changed(mine, h):
            _give(table, clock, hot, mine, h, shared, before, lr, l1, l2, eps)
        _take(table, clock, hot, mine, h, before, lr, l1, l2, eps)


@njit(cache=True, inline="always")
def fold_end(folds, fold_ends):
    """How many hot slots a block's ``folds``-th fold since it took its views hands back:
    ``fold_ends[c]``, c the largest with 2^c dividing ``folds`` (see :class:`HotSlots`)."""
    c = 0
    while c + 1 < fold_ends.shape[0] and folds % (2 << c) == 0:
        c += 1
    return fold_ends[c]


@njit(cache=True)
def _fold_due(table, clock, hot, mine, folds, fold_ends, shared, before, lr, l1, l2, eps):
    """The block's ``folds``-th fold since it took its views (:func:`fold_end`): hand back and
    re-take those hot slots."""
    end = fold_end(folds, fold_ends)
    for h in range(min(REFRESH_AHEAD, end)):
        _prefetch(table, hot[h] * SLOT_WIDTH)
    for h in range(end):
        if h + REFRESH_AHEAD < end:
            _prefetch(table, hot[h + REFRESH_AHEAD] * SLOT_WIDTH)
        if _changed(mine, h):
            _fold(table, clock, hot, mine, h, shared, before, lr, l1, l2, eps)


@njit(cache=True, inline="always")
def _new_weight(table, clock, mine, n, before, regularise, lr, l1, l2, eps):
    """The weight of new-value feature ``n`` (a slot, or ``-1 - position`` of a hot one in the
    block's views), its L1/L2 settled first."""
    if n < 0:
        return mine[-1 - n, _W]
    if regularise:
        _settle(table, clock, n, before, lr, l1, l2, eps)
    return table[n, WEIGHT]


@njit(cache=True, parallel=True, nogil=True)
def train_chunk(slots, num_values, labels, row_weights, held, table, clock, step0, lr, l1, l2, eps,
                blocks, block_loss, hot, private, taken, shared, fold_ends, fold_rows, refresh_longest,
                origin, new_where):
    """Learn one chunk; row r of the chunk is global step ``step0 + r + 1``.

    slots: int32 (rows, k_cat + k_num) from :func:`locate`: where each feature learns, the k_cat
    features of value 1 first, then the k_num numeric ones with values ``num_values`` (float32,
    rows x k_num). labels and row_weights: float32 (rows,). ``held``: uint8 (rows,) or empty; a
    row with ``held[r] != 0`` is held out: scored, never learned (it still counts as a step, an
    example with zero gradient). ``hot``: the :class:`HotSlots` slots (``fold_ends`` theirs);
    ``private``, ``taken`` from :func:`private_state`; ``shared``: several blocks may hold views
    (any run with more than one thread, even for a chunk learned by one block). ``new_where``
    (int64, one per column position; empty: no new-value features): where the position's
    new-value feature learns (a slot, ``-1 - position`` of a hot one, or :data:`NO_NEW`), and
    ``origin`` the position each located feature came from (from :func:`locate`; no rows: the
    columns' own order). Outputs: ``block_loss[b] = (weighted loss, weight) of learned rows,
    then (weighted loss, weight) of held-out rows`` for block b. Returns a status.

    New values: a categorical feature whose slot (or view) has weight 0 when its row is scored adds
    its position's new-value weight to the margin, and that weight takes the row's gradient after
    the features' (in the order found): what a value never learned is worth, learned from first
    sightings, where a value never seen would otherwise count for nothing.

    Hot slots (always the bias) are learned in each block's private view: a block takes every
    hot slot's weight and G from the table when it has no views, learns its own copy (so its own
    steps are never stale), and every ``fold_rows * 2^c`` of its rows adds what changed (dw, dG)
    in the first ``fold_ends[c]`` slots to the table and takes them again, now with the other
    blocks' changes. Views outlive the chunk (no per-chunk traffic on the hot lines);
    :func:`fold_views` hands them all to the table before the model is read.
    That is Hogwild with each block's updates of a hot slot delivered in batches of about
    :data:`FOLD_UPDATES` (a slot written by a share p of the rows waits 1 / p times longer than
    the bias, which every row writes): the same sum of updates, each seen by the other blocks
    about that many of the slot's updates late, and that many times fewer writes to the lines
    every core wants. Staleness in updates of the slot, not in rows, keeps the bias as fresh as a
    slot seen once in 1,000 rows, and costs no counting per update. L1/L2 steps of a hot slot are
    settled when it is taken and folded. With one block the view is the sequential update, bit
    for bit.
    """
    rows = labels.shape[0]
    regularise = l1 > 0.0 or l2 > 0.0
    holdout = held.shape[0] > 0
    news = new_where.shape[0] > 0
    origins = origin.shape[0] > 0
    viewless = hot.shape[0] <= 1  # no feature can be in a view (the bias, hot alone, is no feature)
    k_num = num_values.shape[1]
    k_cat = slots.shape[1] - k_num
    lr32 = np.float32(lr)
    eps32 = np.float32(eps)
    for b in prange(blocks):
        lo = rows * b // blocks
        hi = rows * (b + 1) // blocks
        mine = private[b]
        # One countdown a row to the next fold or refresh; ``age``: the block's rows since it
        # took its views, at that event; ``period``: rows from a take to the next, decided at
        # each take. A block that holds no views takes them first.
        holds = taken[b, _HOLDS] != 0
        period = taken[b, _PERIOD] if holds else 0
        age = taken[b, _AGE]
        to_event = taken[b, _TO_FOLD] if holds else 0
        folds = taken[b, _FOLDS]
        loss_sum = 0.0
        weight_sum = 0.0
        held_loss = 0.0
        held_weight = 0.0
        k = k_cat + k_num
        gradients = np.empty(k, dtype=np.float32)  # a row's per-feature gradients, G and steps
        accumulators = np.empty(k, dtype=np.float32)
        steps = np.empty(k, dtype=np.float32)
        fresh = np.empty(k_cat, dtype=np.int64)  # where the row's new-value features learn
        addresses = np.empty(k, dtype=np.int64)  # with views: where each of the row's features learns
        table_base = _data_address(table)
        mine_base = _data_address(mine)
        for r in range(lo, hi):
            before = step0 + r  # steps whose regularisation a slot must have before this row
            if to_event <= 0:
                if age >= period:
                    _refresh(table, clock, hot, mine, taken[b, _HOLDS] != 0, shared, before, lr, l1, l2, eps)
                    taken[b, _HOLDS] = 1
                    age = 0
                    period = refresh_period(before, blocks, refresh_longest)
                    folds = 0
                else:
                    folds += 1
                    _fold_due(table, clock, hot, mine, folds, fold_ends, shared, before, lr, l1, l2, eps)
                to_event = min(fold_rows, period - age)
                age += to_event
            to_event -= 1
            if r + PREFETCH_ROWS < hi:
                for j in range(k_cat + k_num):
                    t = np.int64(slots[r + PREFETCH_ROWS, j])
                    if t >= 0:
                        _prefetch(table, t * SLOT_WIDTH)
                if origins:  # (read only at a first sighting: a miss each, 15% of two threads' rate)
                    _prefetch_read(origin, (r + PREFETCH_ROWS) * k_cat)
                    _prefetch_read(origin, (r + PREFETCH_ROWS) * k_cat + k_cat - 1)  # (a row: 2 lines)
            z = np.float64(mine[0, _W])  # the bias
            zeros = 0
            if not viewless:  # each feature's address (its slot's or its view's) chosen without a branch
                for j in range(k):
                    t = np.int64(slots[r, j])
                    if regularise and t >= 0:
                        _settle(table, clock, t, before, lr, l1, l2, eps)
                    a = table_base + t * ROW_BYTES if t >= 0 else mine_base + (-1 - t) * ROW_BYTES
                    addresses[j] = a
                    w = _load32(a)
                    if j < k_cat:
                        z += w
                        zeros += w == 0.0
                    else:
                        z += w * num_values[r, j - k_cat]
            elif news:  # features of weight 0 counted, not branched on (a branch a feature cost 14%)
                for j in range(k_cat):
                    t = np.int64(slots[r, j])
                    if t < 0:
                        w = mine[-1 - t, _W]
                    else:
                        if regularise:
                            _settle(table, clock, t, before, lr, l1, l2, eps)
                        w = table[t, WEIGHT]
                    z += w
                    zeros += w == 0.0
            else:  # (the loop as it was without them: counting costs 7% of one thread's rate)
                for j in range(k_cat):
                    t = np.int64(slots[r, j])
                    if t < 0:
                        z += mine[-1 - t, _W]
                    else:
                        if regularise:
                            _settle(table, clock, t, before, lr, l1, l2, eps)
                        z += table[t, WEIGHT]
            fresh_count = 0
            if news and zeros > 0:  # new values: their columns' new-value weights count too
                for j in range(k_cat):
                    t = np.int64(slots[r, j])
                    if (mine[-1 - t, _W] if t < 0 else table[t, WEIGHT]) != 0.0:
                        continue
                    n = new_where[origin[r, j] if origins else j]
                    if n != NO_NEW:
                        z += _new_weight(table, clock, mine, n, before, regularise, lr, l1, l2, eps)
                        fresh[fresh_count] = n
                        fresh_count += 1
            for j in range(k_num if viewless else 0):
                t = np.int64(slots[r, k_cat + j])
                if t < 0:
                    z += mine[-1 - t, _W] * num_values[r, j]
                else:
                    if regularise:
                        _settle(table, clock, t, before, lr, l1, l2, eps)
                    z += table[t, WEIGHT] * num_values[r, j]
            y = np.float64(labels[r])
            rw = np.float64(row_weights[r])
            if holdout and held[r] != 0:
                held_loss += rw * logistic_loss(z, y)
                held_weight += rw
                continue
            loss, g = loss_and_gradient(z, y)
            loss_sum += rw * loss
            weight_sum += rw
            g0 = g * rw
            _adagrad(mine, 0, g0, lr, eps)  # the bias
            # Adagrad on every feature in three passes, the same float32 operations as _adagrad:
            # accumulators in row order (a slot listed twice sees its first update), then every
            # step lr g / (sqrt(G) + eps) at once (a loop the compiler turns into vector sqrt and
            # divide, which one at a time were most of a row's time), then the weights.
            if viewless:
                for j in range(k):
                    t = np.int64(slots[r, j])
                    g32 = np.float32(g0 if j < k_cat else g0 * num_values[r, j - k_cat])
                    if t < 0:
                        acc = mine[-1 - t, _G] + g32 * g32
                        mine[-1 - t, _G] = acc
                    else:
                        acc = table[t, ACCUMULATOR] + g32 * g32
                        table[t, ACCUMULATOR] = acc
                    gradients[j] = g32
                    accumulators[j] = acc
            else:
                for j in range(k):
                    g32 = np.float32(g0 if j < k_cat else g0 * num_values[r, j - k_cat])
                    acc = _load32(addresses[j] + 4) + g32 * g32
                    _store32(addresses[j] + 4, acc)
                    gradients[j] = g32
                    accumulators[j] = acc
            for j in range(k):
                steps[j] = lr32 * gradients[j] / (np.sqrt(accumulators[j]) + eps32)
            if viewless:
                for j in range(k):
                    t = np.int64(slots[r, j])
                    if t < 0:
                        mine[-1 - t, _W] -= steps[j]
                    else:
                        table[t, WEIGHT] -= steps[j]
            else:
                for j in range(k):
                    _store32(addresses[j], _load32(addresses[j]) - steps[j])
            for i in range(fresh_count):
                n = fresh[i]
                if n < 0:
                    _adagrad(mine, -1 - n, g0, lr, eps)
                else:
                    _adagrad(table, n, g0, lr, eps)
        taken[b, _AGE] = age
        taken[b, _PERIOD] = period
        taken[b, _TO_FOLD] = to_event
        taken[b, _FOLDS] = folds
        block_loss[b, 0] = loss_sum
        block_loss[b, 1] = weight_sum
        block_loss[b, 2] = held_loss
        block_loss[b, 3] = held_weight
    return chunk_status(block_loss, blocks)


@njit(cache=True, inline="always")
def chunk_status(block_loss, blocks):
    """STATUS_OK if every block's losses are finite (a learner's kernels report through it)."""
    total = 0.0
    for b in range(blocks):
        total += block_loss[b, 0] + block_loss[b, 2]
    return STATUS_OK if np.isfinite(total) else STATUS_NOT_FINITE


@njit(cache=True, parallel=True, nogil=True)
def catch_up_all(table, clock, now, lr, l1, l2, eps):
    """Settle every hashed slot's regularisation up to step ``now`` (not the bias)."""
    for s in prange(table.shape[0] - 1):
        _settle(table, clock, s, now, lr, l1, l2, eps)


@njit(cache=True, parallel=True, nogil=True)
def predict_chunk(cat, num, num_values, weights, mask, blocks, margin, out, new_slots):
    """``out[r]`` = predicted probability of row r (``margin``: its log-odds); ``weights[-1]`` is
    the bias. ``new_slots``: each column position's new-value slot (-1: none; empty: no
    new-value features), whose weight a feature of weight 0 adds (as in :func:`train_chunk`)."""
    rows = out.shape[0]
    news = new_slots.shape[0] > 0
    bias = np.float64(weights[weights.shape[0] - 1])
    for b in prange(blocks):
        hi = rows * (b + 1) // blocks
        for r in range(rows * b // blocks, hi):
            if r + PREFETCH_ROWS < hi:
                for j in range(cat.shape[1]):
                    _prefetch_read(weights, np.int64(cat[r + PREFETCH_ROWS, j] & mask))
                for j in range(num.shape[1]):
                    _prefetch_read(weights, np.int64(num[r + PREFETCH_ROWS, j] & mask))
            z = bias
            for j in range(cat.shape[1]):
                w = weights[np.int64(cat[r, j] & mask)]
                z += w
                if w == 0.0 and news and new_slots[j] >= 0:
                    z += weights[new_slots[j]]
            for j in range(num.shape[1]):
                z += weights[np.int64(num[r, j] & mask)] * num_values[r, j]
            out[r] = z if margin else _sigmoid(z)


@njit(cache=True, nogil=True)
def race_rate(slots, num_values, labels, row_weights, schedule, table, lr, l1, l2, eps, step0, score_from, scores,
              new_where):
    """Learn rows at one learning rate on a table of their own (a :func:`new_table`); one
    candidate of a race (the driver runs the candidates on threads of its own: the function is
    sequential and releases the GIL). ``slots`` from :func:`locate` with no hot slots. Row
    ``schedule[i]`` is learned at step ``step0 + i + 1`` (a row may be listed more than once:
    several passes). Progressive validation: each row is scored by the model before it learns it;
    ``scores = (weighted loss, weight)`` over the steps from ``score_from`` on. The same update as
    :func:`train_chunk` with one block (``new_where``: its new-value slots in this table)."""
    regularise = l1 > 0.0 or l2 > 0.0
    news = new_where.shape[0] > 0
    fresh = np.empty(max(1, new_where.shape[0]), dtype=np.int64)
    k_num = num_values.shape[1]
    k_cat = slots.shape[1] - k_num
    clock = table.view(np.int64)
    bias = table.shape[0] - 1
    loss_sum = 0.0
    weight_sum = 0.0
    for i in range(schedule.shape[0]):
        r = schedule[i]
        now = step0 + i
        if i + PREFETCH_ROWS < schedule.shape[0]:
            for j in range(slots.shape[1]):
                _prefetch(table, np.int64(slots[schedule[i + PREFETCH_ROWS], j]) * SLOT_WIDTH)
        z = np.float64(table[bias, WEIGHT])
        fresh_count = 0
        for j in range(k_cat):
            t = np.int64(slots[r, j])
            if regularise:
                _settle(table, clock, t, now, lr, l1, l2, eps)
            w = table[t, WEIGHT]
            z += w
            if w == 0.0 and news:
                n = new_where[j]
                if n != NO_NEW:
                    if regularise:
                        _settle(table, clock, n, now, lr, l1, l2, eps)
                    z += table[n, WEIGHT]
                    fresh[fresh_count] = n
                    fresh_count += 1
        for j in range(k_num):
            t = np.int64(slots[r, k_cat + j])
            if regularise:
                _settle(table, clock, t, now, lr, l1, l2, eps)
            z += table[t, WEIGHT] * num_values[r, j]
        y = np.float64(labels[r])
        rw = np.float64(row_weights[r])
        if i >= score_from:
            loss, g = loss_and_gradient(z, y)
            loss_sum += rw * loss
            weight_sum += rw
        else:
            g = _sigmoid(z) - y
        g0 = g * rw
        _adagrad(table, bias, g0, lr, eps)
        for j in range(k_cat):
            _adagrad(table, np.int64(slots[r, j]), g0, lr, eps)
        for j in range(k_num):
            _adagrad(table, np.int64(slots[r, k_cat + j]), g0 * num_values[r, j], lr, eps)
        for i2 in range(fresh_count):
            _adagrad(table, fresh[i2], g0, lr, eps)
    scores[0] = loss_sum
    scores[1] = weight_sum


@njit(cache=True, nogil=True)
def copy_rows(source, rows, target, to_rows):
    """``target[to_rows[i]] = source[rows[i]]`` for every i: a table's rows saved and put back (the
    race scores a half and then forgets it)."""
    for i in range(rows.shape[0]):
        target[to_rows[i]] = source[rows[i]]


# How the changes that several learners made to one slot combine (fastada.distributed).
COMBINE_BLEND, COMBINE_STEPS, COMBINE_AVERAGE = 0, 1, 2


@njit(cache=True, nogil=True)
def combine_changes(index, weight, accumulator, clock, table, table_clock, position, mode,
                    out_slots, out_weight, out_accumulator, out_clock):
    """Combine learners' changed slots into ``table`` and return how many distinct slots changed.

    Entry i says a learner left slot ``index[i]`` at ``weight[i]`` and ``accumulator[i]`` (and,
    if ``clock`` is not empty, its regularisation clock ``clock[i]``). Per slot, from the table's
    w0 and G0: G = G0 + sum (G_k - G0); ``COMBINE_STEPS``: w0 + sum (w_k - w0) sqrt(G_k / G);
    ``COMBINE_AVERAGE``: sum G_k w_k / sum G_k; ``COMBINE_BLEND``: the two weighted G0/G and
    1 - G0/G; the clock, the latest. The distinct slots, in the order first met, and their new
    values go to ``out_*[:count]`` (each at least as long as ``index``). ``position``: int32, one
    per table row, all -1 (left so): where each slot's sums are kept, without sorting anything.
    """
    n = index.shape[0]
    count = 0
    for i in range(n):
        s = np.int64(index[i])
        if position[s] < 0:
            position[s] = count
            out_slots[count] = s
            count += 1
    w0 = np.empty(count)
    g0 = np.empty(count)
    for c in range(count):
        w0[c] = table[out_slots[c], WEIGHT]
        g0[c] = table[out_slots[c], ACCUMULATOR]
    increments = np.zeros(count)
    total = np.zeros(count)
    weighted = np.zeros(count)
    plain = np.zeros(count)
    learners = np.zeros(count)
    latest = np.zeros(count, dtype=np.int64)
    regularised = clock.shape[0] > 0
    for i in range(n):
        c = position[np.int64(index[i])]
        a = np.float64(accumulator[i])
        w = np.float64(weight[i])
        increments[c] += a - g0[c]
        total[c] += a
        weighted[c] += a * w
        plain[c] += w
        learners[c] += 1.0
        if regularised and (learners[c] == 1.0 or clock[i] > latest[c]):
            latest[c] = clock[i]
    combined = g0 + increments
    steps = np.zeros(count)
    if mode != COMBINE_AVERAGE:
        for i in range(n):
            c = position[np.int64(index[i])]
            g = combined[c] if combined[c] > 0.0 else 1.0
            steps[c] += (np.float64(weight[i]) - w0[c]) * np.sqrt(np.float64(accumulator[i]) / g)
    for c in range(count):
        s = out_slots[c]
        # G > 0 for a changed slot, except at initial_accumulator 0 with zero gradients: the mean
        average = weighted[c] / total[c] if total[c] > 0.0 else plain[c] / learners[c]
        summed = w0[c] + steps[c]
        if mode == COMBINE_AVERAGE:
            w = average
        elif mode == COMBINE_STEPS:
            w = summed
        else:
            mature = g0[c] / combined[c] if combined[c] > 0.0 else 0.0
            w = mature * summed + (1.0 - mature) * average
        out_weight[c] = np.float32(w)
        out_accumulator[c] = np.float32(combined[c])
        table[s, WEIGHT] = out_weight[c]
        table[s, ACCUMULATOR] = out_accumulator[c]
        if regularised:
            out_clock[c] = latest[c]
            table_clock[s, CLOCK] = latest[c]
        position[s] = -1
    return count
