"""The depthwise 3x3 stencil of one channels-last output row, written in LLVM IR.

Why IR: numba's loop over a row's pixels, each summing nine taps over contiguous channels, built
nine array views per pixel and ran at 9-19 GFLOP/s (onnxruntime's NCHWc stencil about twice that
in the same model); written over flat offsets, numba left it scalar (4-5x slower still). Here the
loops are explicit: groups of pixels outside, channels in blocks of 16 lanes inside, each block's
nine weight vectors and bias loaded once for the group; the last block of a channel count that is
not a multiple of 16 runs masked.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from inference.kernels.tile_ir import LANES, _masked_f32, counted_loop, splat
from inference.kernels.vmath_ir import clamp_keeping_nan

_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


GROUP = 4  # output pixels per pass over the channels


@intrinsic
def depthwise3x3_cols(typingctx, r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """``y[xo*c + k] = clamp(bias[k] + sum_ij w[(3i+j)*c + k] * r_i[(xo*sw - pw + j*dw)*c + k], amin,
    amax)`` for every output column ``xo`` < ``ow`` and channel k < c, taps outside the ``width``
    columns of the rows skipped. ``r0, r1, r2``: the three input rows (W*C, flat; a row outside
    the image: zeros), ``w``: the taps (9, c) flat, ``y``: the output row (OW*C, flat); all
    float32. Columns in [lo, hi) have all their taps inside the rows; the border columns outside
    it mask their outside taps off (read as zeros: each sum stays the reference's, which skips
    them). The clamp keeps NaN (ordered compares), and with infinite bounds changes nothing.

    :data:`GROUP` pixels at a time, each pass over all channel blocks: the block's taps load once
    per group, and the pixels' inputs (3 rows x 6 columns x C) stay in L1. Channel blocks outside,
    pixels inside (taps loaded once per row) ran 2x slower: each pass strode over three whole rows
    and the output (128 KB at 144 channels, 56 wide), past L1. Each pixel sums its taps in one
    chain in tap order (the reference's order: the int8 tests compare against it), but the
    group's chains are emitted tap by tap across the pixels, and whole channel blocks load and
    store unmasked: pixel after pixel, with masked stores between them, the chains had barely
    overlapped (7-10 ns per 16-channel output vector in L1, now 4-6.5 ns on MobileNetV2's widths;
    interleaving gave 1.5x, unmasked whole blocks ~1.2x more). Border columns and the clamp had
    been numba loops over the row after the stencil (the border ones scalar)."""
    sig = types.void(r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax)

    def codegen(context, builder, signature, args):
        _stencil(3, context, builder, signature, args)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def depthwise5x5_cols(typingctx, r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """:func:`depthwise3x3_cols` for a 5x5 window: five rows, taps (25, c) flat. Why: EfficientNet-
    and MobileNetV3-style blocks use 5x5 depthwise layers, which had run the generic numba loop at
    3.3-5x onnxruntime's time (EfficientNet-Lite0's 240-channel 28x28 layer 434 us against 90)."""
    sig = types.void(r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax)

    def codegen(context, builder, signature, args):
        _stencil(5, context, builder, signature, args)
        return context.get_dummy_value()

    return sig, codegen


def _stencil(k: int, context, builder, signature, args) -> None:
    """The body of a k x k stencil intrinsic: arguments the k rows, w, bias, y, lo, hi, ow, width,
    sw, dw, pw, c, amin, amax (see :func:`depthwise3x3_cols`)."""
    vty = ir.VectorType(_F32, LANES)
    i1v = ir.VectorType(ir.IntType(1), LANES)
    const = lambda v: ir.Constant(_I64, v)  # noqa: E731
    data = [context.make_array(signature.args[i])(context, builder, args[i]).data for i in range(k + 3)]
    rows, wd, bd, yd = data[:k], data[k], data[k + 1], data[k + 2]
    lo, hi, ow, width, sw, dw, pw, c = (context.cast(builder, args[i], signature.args[i], types.int64)
                                        for i in range(k + 3, k + 11))
    amin, amax = (splat(builder, context.cast(builder, args[i], signature.args[i], types.float32), vty)
                  for i in (k + 11, k + 12))
    align = ir.Constant(_I32, 4)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32")
    at = lambda base, off: builder.bitcast(builder.gep(base, [off]), vty.as_pointer())  # noqa: E731
    lane_ids = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
    zero = ir.Constant(vty, None)

    def load(base, off, mask):
        if mask is None:
            return builder.load(at(base, off), align=4)
        return _masked_f32(builder, "load", [at(base, off), align, mask, zero])

    def group(x0, size: int, border: bool) -> None:
        """Output columns x0 .. x0+size-1, every channel block: whole blocks, then the last,
        partial one masked. ``border``: mask off the taps outside the rows."""
        xs = [builder.add(x0, const(p)) for p in range(size)]
        starts = [builder.sub(builder.mul(x, sw), pw) for x in xs]
        ixs = [[builder.add(st, builder.mul(const(j), dw)) for j in range(k)] for st in starts]
        inside = None
        if border:
            inside = [[splat(builder, builder.and_(builder.icmp_signed(">=", ix, const(0)),
                                                   builder.icmp_signed("<", ix, width)), i1v) for ix in row]
                      for row in ixs]
        cols = {(p, j): builder.mul(ix, c) for p, row in enumerate(ixs) for j, ix in enumerate(row)}
        if border or size == 1:
            blocks(xs, cols, inside, f"{size}{'b' if border else ''}")
            return
        # stride 1, dilation 1: pixel p's tap j reads column p + j, so a row's size + k - 1 columns
        # load once for all the group's taps (20 loads of 8 columns per 5x5 row, 12 of 6 per 3x3)
        unit = builder.and_(builder.icmp_signed("==", sw, const(1)), builder.icmp_signed("==", dw, const(1)))
        with builder.if_else(unit) as (shared, apart):
            with shared:
                first = builder.sub(x0, pw)
                blocks(xs, {(p, j): builder.mul(builder.add(first, const(p + j)), c) for p in range(size)
                            for j in range(k)}, None, f"{size}u", shared=True)
            with apart:
                blocks(xs, cols, None, f"{size}")

    def blocks(xs, cols, inside, tag: str, shared: bool = False) -> None:
        whole = builder.sdiv(c, const(LANES))
        cb, close_blocks = counted_loop(builder, const(0), whole, f"dw.block{tag}")
        pixels(xs, cols, inside, builder.mul(cb, const(LANES)), None, shared)
        close_blocks()
        with builder.if_then(builder.icmp_signed("<", builder.mul(whole, const(LANES)), c)):
            c0 = builder.mul(whole, const(LANES))
            live = splat(builder, builder.sub(c, c0), ir.VectorType(_I64, LANES))
            pixels(xs, cols, inside, c0, builder.icmp_signed("<", lane_ids, live), shared)

    def pixels(xs, cols, inside, c0, mask, shared: bool) -> None:
        """One channel block (``mask``: its live lanes, None when all are) of the pixels ``xs``;
        ``cols[(p, j)]``: where pixel p's tap j reads in a row; ``shared``: the same column for
        every (p, j) of equal p + j, each loaded once per row."""
        def tap_mask(p, j):
            if inside is None:
                return mask
            return inside[p][j] if mask is None else builder.and_(mask, inside[p][j])

        taps = [load(wd, builder.add(builder.mul(const(t), c), c0), mask) for t in range(k * k)]
        accs = [load(bd, c0, mask)] * len(xs)  # each pixel's chain in tap order, the chains interleaved
        for i in range(k):
            loaded: dict = {}
            for j in range(k):
                ins = []
                for p in range(len(xs)):
                    key = p + j if shared else (p, j)
                    if key not in loaded:
                        loaded[key] = load(rows[i], builder.add(cols[(p, j)], c0), tap_mask(p, j))
                    ins.append(loaded[key])
                accs = [builder.call(fma, [taps[k * i + j], ins[p], accs[p]]) for p in range(len(xs))]
        for p, x in enumerate(xs):
            ptr, v = at(yd, builder.add(builder.mul(x, c), c0)), clamp_keeping_nan(builder, accs[p], amin, amax)
            if mask is None:
                builder.store(v, ptr, align=4)
            else:
                _masked_f32(builder, "store", [v, ptr, align, mask])

    lo = builder.select(builder.icmp_signed("<", lo, ow), lo, ow)  # 0 <= lo <= hi <= ow
    hi = builder.select(builder.icmp_signed("<", hi, lo), lo, hi)
    hi = builder.select(builder.icmp_signed(">", hi, ow), ow, hi)

    def interior(a, b, tag: str) -> None:
        """Columns [a, b), all of whose taps are inside: groups of GROUP, then one at a time."""
        full = builder.add(a, builder.mul(builder.sdiv(builder.sub(b, a), const(GROUP)), const(GROUP)))
        g, close = counted_loop(builder, const(0), builder.sdiv(builder.sub(full, a), const(GROUP)), f"dw.groups{tag}")
        group(builder.add(a, builder.mul(g, const(GROUP))), GROUP, False)
        close()
        xo, close = counted_loop(builder, full, b, f"dw.rest{tag}")
        group(xo, 1, False)
        close()

    # a narrow row (under two groups of interior columns) with borders of at most GROUP columns
    # each side: a masked group at each end, the interior between them. Why: one column at a time,
    # a 7-wide map's four border columns of a 5x5 window had made EfficientNet's 7x7 layers ~2.7x
    # onnxruntime's time (per-node profiles: 105-115 -> 62-82 us; the whole model within this VM's
    # noise); on wider rows the end groups cost more than they save (14x14: 158 -> 180 us), the
    # interior groups sharing their column loads. A column the end groups and the interior share
    # is computed twice, to the same value.
    left_ok = builder.icmp_signed("<=", lo, const(GROUP))
    right_ok = builder.icmp_signed("<=", builder.sub(ow, hi), const(GROUP))
    narrow = builder.and_(builder.icmp_signed(">=", ow, const(GROUP)),
                          builder.icmp_signed("<", builder.sub(hi, lo), const(2 * GROUP)))
    with builder.if_else(builder.and_(narrow, builder.and_(left_ok, right_ok))) as (grouped, apart):
        with grouped:
            group(const(0), GROUP, True)  # covers the left border: lo <= GROUP here
            a, end = const(GROUP), builder.sub(ow, const(GROUP))
            b = builder.select(builder.icmp_signed("<", hi, end), hi, end)
            interior(a, builder.select(builder.icmp_signed("<", b, a), a, b), "g")
            group(end, GROUP, True)
        with apart:
            interior(lo, hi, "")
            xo, close = counted_loop(builder, const(0), lo, "dw.left")
            group(xo, 1, True)
            close()
            xo, close = counted_loop(builder, hi, ow, "dw.right")
            group(xo, 1, True)
            close()
