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
WHOLE_ROW = 7  # output rows of GROUP+1 .. WHOLE_ROW columns run as one group (MobileNets' last maps)
MID_ROW = 32  # rows up to this wide run in groups across the whole row, wider ones border columns apart
CHAINS = 4  # a group of fewer than CHAINS pixels splits each pixel's sum into CHAINS // pixels chains


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
    and the output (128 KB at 144 channels, 56 wide), past L1. Each pixel of a group sums its taps
    in one chain in tap order, the group's chains emitted tap by tap across the pixels, and whole
    channel blocks load and store unmasked: pixel after pixel, with masked stores between them,
    the chains had barely overlapped (7-10 ns per 16-channel output vector in L1, then 4-6.5 ns on
    MobileNetV2's widths; interleaving gave 1.5x, unmasked whole blocks ~1.2x more). With no
    dilation a group loads each input column once per row for all the taps that read it (stride
    1 or 2). Rows up to :data:`WHOLE_ROW` and :data:`MID_ROW` wide run :func:`depthwise3x3_short`
    and :func:`depthwise3x3_mid`; this one takes the wider rows (their callers choose)."""
    return types.void(r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax), _codegen(3, "wide")


@intrinsic
def depthwise3x3_mid(typingctx, r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """:func:`depthwise3x3_cols` for a row of ``WHOLE_ROW`` < ow <= :data:`MID_ROW` columns: groups of
    :data:`GROUP` across the whole row, the last one ending at its end, those with border columns
    masked (a 14- or 28-wide row has few interior groups; one at a time its border and leftover
    columns had cost more than its interior). Stride 1 or 2 and dilation 1; other windows one
    column at a time."""
    return types.void(r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax), _codegen(3, "mid")


@intrinsic
def depthwise3x3_short(typingctx, r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """:func:`depthwise3x3_cols` for a row of at most :data:`WHOLE_ROW` columns: 5 to 7 of them (stride
    1 or 2, dilation 1) one masked group, each tap loaded once per channel block (MobileNets' 7x7
    maps); fewer, or other windows, one column at a time."""
    return types.void(r0, r1, r2, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax), _codegen(3, "short")


@intrinsic
def depthwise5x5_cols(typingctx, r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """:func:`depthwise3x3_cols` for a 5x5 window: five rows, taps (25, c) flat. Why: EfficientNet-
    and MobileNetV3-style blocks use 5x5 depthwise layers, which had run the generic numba loop at
    3.3-5x onnxruntime's time (EfficientNet-Lite0's 240-channel 28x28 layer 434 us against 90)."""
    return (types.void(r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax),
            _codegen(5, "wide"))


@intrinsic
def depthwise5x5_mid(typingctx, r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """:func:`depthwise3x3_mid` for a 5x5 window."""
    return (types.void(r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax),
            _codegen(5, "mid"))


@intrinsic
def depthwise5x5_short(typingctx, r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax):
    """:func:`depthwise3x3_short` for a 5x5 window."""
    return (types.void(r0, r1, r2, r3, r4, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax),
            _codegen(5, "short"))


@intrinsic
def depthwise7x7_cols(typingctx, r0, r1, r2, r3, r4, r5, r6, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin,
                      amax):
    """:func:`depthwise3x3_cols` for a 7x7 window: seven rows, taps (49, c) flat. Why: ConvNeXt-style
    blocks use 7x7 depthwise layers, which had run the generic numba loop (a view per pixel and
    tap) at 3-4x onnxruntime's time (48 channels on 32x32: 369 us)."""
    return (types.void(r0, r1, r2, r3, r4, r5, r6, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax),
            _codegen(7, "wide"))


@intrinsic
def depthwise7x7_mid(typingctx, r0, r1, r2, r3, r4, r5, r6, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin,
                     amax):
    """:func:`depthwise3x3_mid` for a 7x7 window."""
    return (types.void(r0, r1, r2, r3, r4, r5, r6, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax),
            _codegen(7, "mid"))


@intrinsic
def depthwise7x7_short(typingctx, r0, r1, r2, r3, r4, r5, r6, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin,
                       amax):
    """:func:`depthwise3x3_short` for a 7x7 window."""
    return (types.void(r0, r1, r2, r3, r4, r5, r6, w, bias, y, lo, hi, ow, width, sw, dw, pw, c, amin, amax),
            _codegen(7, "short"))


def _codegen(k: int, span: str):
    """The codegen of the k x k stencil intrinsic for rows of ``span`` (:func:`_stencil`)."""
    def codegen(context, builder, signature, args):
        _stencil(k, span, context, builder, signature, args)
        return context.get_dummy_value()
    return codegen


def _stencil(k: int, span: str, context, builder, signature, args) -> None:
    """The body of a k x k stencil intrinsic: arguments the k rows, w, bias, y, lo, hi, ow, width,
    sw, dw, pw, c, amin, amax (see :func:`depthwise3x3_cols`); ``span``: the row widths it is
    for, "short", "mid" or "wide" (:func:`depthwise3x3_short`, :func:`depthwise3x3_mid`,
    :func:`depthwise3x3_cols`)."""
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

    def inside(ix):
        """All lanes true where input column ``ix`` is inside the rows."""
        return splat(builder, builder.and_(builder.icmp_signed(">=", ix, const(0)),
                                           builder.icmp_signed("<", ix, width)), i1v)

    def group(x0, size: int, border: bool) -> None:
        """Output columns x0 .. x0+size-1, every channel block. ``border``: taps outside the rows
        masked off. One column: any stride and dilation. Several: dilation 1, stride 1 or 2 (the
        caller's to ensure), where pixel p's tap j reads column ``x0*sw - pw + p*sw + j``, so each
        column the group reads loads once per row for all the taps that read it (stride 1: 8
        loads for a 5x5 row of four pixels rather than 20; stride 2: 11), its mask (if any) made
        once per group."""
        def offsets(ixs: dict) -> tuple[dict, dict | None]:
            """Where each input column starts in a row, and (``border``) its mask; a column outside
            the row reads, all lanes masked off, the nearest one inside. Why: a load outside the
            row, even with every lane off, touches memory the row does not own (the arena's
            neighbours, a page nothing has touched): measured up to 2x slower in a model."""
            if not border:
                return {q: builder.mul(ix, c) for q, ix in ixs.items()}, None
            last = builder.sub(width, const(1))
            def nearest(ix):
                return builder.select(builder.icmp_signed("<", ix, const(0)), const(0),
                                      builder.select(builder.icmp_signed(">", ix, last), last, ix))

            return {q: builder.mul(nearest(ix), c) for q, ix in ixs.items()}, {q: inside(ix) for q, ix in ixs.items()}

        def shared(stride: int) -> None:
            first = builder.sub(builder.mul(x0, sw), pw)
            cols, masks = offsets({q: builder.add(first, const(q)) for q in range((size - 1) * stride + k)})
            blocks(x0, size, cols, masks, lambda p, j: p * stride + j, f"{size}{'b' if border else ''}s{stride}")

        if size == 1:
            start = builder.sub(builder.mul(x0, sw), pw)
            cols, masks = offsets({j: builder.add(start, builder.mul(const(j), dw)) for j in range(k)})
            blocks(x0, 1, cols, masks, lambda p, j: j, f"1{'b' if border else ''}")
            return
        with builder.if_else(builder.icmp_signed("==", sw, const(1))) as (one, two):
            with one:
                shared(1)
            with two:
                shared(2)

    def blocks(x0, size: int, cols: dict, masks, key, tag: str) -> None:
        """The group's whole channel blocks, then the last, partial one masked; a group masked
        anyway (``masks``) runs them all in one loop with their live lanes (one copy of its code:
        each copy costs LLVM compile time, ~0.2-0.5 s a 5x5 group)."""
        if masks is not None:
            cb, close_blocks = counted_loop(builder, const(0), builder.sdiv(builder.add(c, const(LANES - 1)),
                                                                            const(LANES)), f"dw.block{tag}")
            c0 = builder.mul(cb, const(LANES))
            live = splat(builder, builder.sub(c, c0), ir.VectorType(_I64, LANES))
            pixels(x0, size, cols, masks, key, c0, builder.icmp_signed("<", lane_ids, live))
            close_blocks()
            return
        whole = builder.sdiv(c, const(LANES))
        cb, close_blocks = counted_loop(builder, const(0), whole, f"dw.block{tag}")
        pixels(x0, size, cols, masks, key, builder.mul(cb, const(LANES)), None)
        close_blocks()
        with builder.if_then(builder.icmp_signed("<", builder.mul(whole, const(LANES)), c)):
            c0 = builder.mul(whole, const(LANES))
            live = splat(builder, builder.sub(c, c0), ir.VectorType(_I64, LANES))
            pixels(x0, size, cols, masks, key, c0, builder.icmp_signed("<", lane_ids, live))

    def pixels(x0, size: int, cols: dict, masks, key, c0, mask) -> None:
        """One channel block (``mask``: its live lanes, None when all are) of ``size`` pixels from
        x0; pixel p's tap j reads row offset ``cols[key(p, j)]`` (masked by ``masks[key(p, j)]``)."""
        def column_mask(q):
            if masks is None:
                return mask
            return masks[q] if mask is None else builder.and_(mask, masks[q])

        taps = [load(wd, builder.add(builder.mul(const(t), c), c0), mask) for t in range(k * k)]
        # each pixel's taps in `parts` runs of consecutive taps, each its own chain in tap order (the
        # first from the bias, the others from zero), added after: a lone border column is not one
        # chain of k*k dependent FMAs
        parts = max(1, CHAINS // size)
        chains = [[load(bd, c0, mask) if q == 0 else zero for q in range(parts)] for _ in range(size)]
        for i in range(k):
            loaded: dict = {}
            for j in range(k):
                t = k * i + j
                for p in range(size):
                    q = key(p, j)
                    if q not in loaded:
                        loaded[q] = load(rows[i], builder.add(cols[q], c0), column_mask(q))
                    part = t * parts // (k * k)
                    chains[p][part] = builder.call(fma, [taps[t], loaded[q], chains[p][part]])
        for p in range(size):
            acc = chains[p][0]
            for partial in chains[p][1:]:
                acc = builder.fadd(acc, partial)
            x = builder.add(x0, const(p))
            ptr, v = at(yd, builder.add(builder.mul(x, c), c0)), clamp_keeping_nan(builder, acc, amin, amax)
            if mask is None:
                builder.store(v, ptr, align=4)
            else:
                _masked_f32(builder, "store", [v, ptr, align, mask])

    lo = builder.select(builder.icmp_signed("<", lo, ow), lo, ow)  # 0 <= lo <= hi <= ow
    hi = builder.select(builder.icmp_signed("<", hi, lo), lo, hi)
    hi = builder.select(builder.icmp_signed(">", hi, ow), ow, hi)

    def singles(count, column) -> None:
        """Columns ``column(i)`` for i < ``count`` one at a time, masked (one loop: one copy of the
        code, which LLVM takes seconds to compile per copy)."""
        i, close = counted_loop(builder, const(0), count, "dw.singles")
        group(column(i), 1, True)
        close()

    # groups need dilation 1 and stride 1 or 2; any other window runs its columns one at a time
    grouped = builder.and_(builder.icmp_signed("==", dw, const(1)), builder.or_(
        builder.icmp_signed("==", sw, const(1)), builder.icmp_signed("==", sw, const(2))))
    if span == "short":  # 5-7 columns as one group, masked where a tap leaves the row
        whole = builder.and_(grouped, builder.icmp_signed(">", ow, const(GROUP)))
        with builder.if_else(whole) as (one_group, apart_cols):
            with one_group:
                for size in range(GROUP + 1, WHOLE_ROW + 1):
                    with builder.if_then(builder.icmp_signed("==", ow, const(size))):
                        group(const(0), size, True)
            with apart_cols:
                singles(ow, lambda i: i)
        return
    with builder.if_else(grouped) as (in_groups, apart_cols):
        with apart_cols:
            singles(ow, lambda i: i)
        with in_groups:
            if span == "mid":  # groups of GROUP, the last one ending at the row's end (columns it
                # shares with the one before are computed twice, to the same value), masked if a
                # tap leaves the row
                g, close = counted_loop(builder, const(0),
                                        builder.sdiv(builder.add(ow, const(GROUP - 1)), const(GROUP)), "dw.groups")
                last = builder.sub(ow, const(GROUP))
                x0 = builder.mul(g, const(GROUP))
                x0 = builder.select(builder.icmp_signed(">", x0, last), last, x0)
                clear = builder.and_(builder.icmp_signed(">=", x0, lo),
                                     builder.icmp_signed("<=", builder.add(x0, const(GROUP)), hi))
                with builder.if_else(clear) as (interior, border):
                    with interior:
                        group(x0, GROUP, False)
                    with border:
                        group(x0, GROUP, True)
                close()
            else:  # groups of GROUP interior columns, then the interior's last 0-3 columns and the
                # border ones one at a time
                full = builder.add(lo, builder.mul(builder.sdiv(builder.sub(hi, lo), const(GROUP)), const(GROUP)))
                g, close = counted_loop(builder, const(0), builder.sdiv(builder.sub(full, lo), const(GROUP)),
                                        "dw.groups")
                group(builder.add(lo, builder.mul(g, const(GROUP))), GROUP, False)
                close()
                rest = builder.sub(hi, full)  # singles i < rest: full + i; then [0, lo); then [hi, ow)

                def column(i):
                    left = builder.sub(i, rest)
                    right = builder.add(hi, builder.sub(left, lo))
                    return builder.select(builder.icmp_signed("<", i, rest), builder.add(full, i),
                                          builder.select(builder.icmp_signed("<", left, lo), left, right))

                singles(builder.add(rest, builder.add(lo, builder.sub(ow, hi))), column)
