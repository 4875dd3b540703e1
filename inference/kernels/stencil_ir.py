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

_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


GROUP = 4  # output pixels per pass over the channels


@intrinsic
def depthwise3x3_cols(typingctx, r0, r1, r2, w, bias, y, lo, hi, sw, dw, pw, c):
    """``y[xo*c + k] = bias[k] + sum_ij w[(3i+j)*c + k] * r_i[(xo*sw - pw + j*dw)*c + k]`` for output
    columns ``xo`` in [lo, hi) (all of whose taps lie inside the rows) and every channel k < c.
    ``r0, r1, r2``: the three input rows (W*C, flat; a row outside the image: zeros), ``w``: the
    taps (9, c) flat, ``y``: the output row (OW*C, flat); all float32.

    :data:`GROUP` pixels at a time, each pass over all channel blocks: the block's taps load once
    per group, and the pixels' inputs (3 rows x 6 columns x C) stay in L1. Channel blocks outside,
    pixels inside (taps loaded once per row) ran 2x slower: each pass strode over three whole rows
    and the output (128 KB at 144 channels, 56 wide), past L1. Each pixel sums its taps in one
    chain in tap order (the reference's order: the int8 tests compare against it), but the
    group's chains are emitted tap by tap across the pixels, and whole channel blocks load and
    store unmasked: pixel after pixel, with masked stores between them, the chains had barely
    overlapped (7-10 ns per 16-channel output vector in L1, now 4-6.5 ns on MobileNetV2's widths;
    interleaving gave 1.5x, unmasked whole blocks ~1.2x more)."""
    sig = types.void(r0, r1, r2, w, bias, y, lo, hi, sw, dw, pw, c)

    def codegen(context, builder, signature, args):
        vty = ir.VectorType(_F32, LANES)
        const = lambda v: ir.Constant(_I64, v)  # noqa: E731
        data = [context.make_array(signature.args[i])(context, builder, args[i]).data for i in range(6)]
        rows, wd, bd, yd = data[:3], data[3], data[4], data[5]
        lo, hi, sw, dw, pw, c = (context.cast(builder, args[i], signature.args[i], types.int64) for i in range(6, 12))
        align = ir.Constant(_I32, 4)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32")
        at = lambda base, off: builder.bitcast(builder.gep(base, [off]), vty.as_pointer())  # noqa: E731
        lane_ids = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
        zero = ir.Constant(vty, None)

        def group(x0, size: int) -> None:
            """Output columns x0 .. x0+size-1, every channel block: whole blocks with plain loads and
            stores, the last, partial one masked."""
            whole = builder.sdiv(c, const(LANES))
            cb, close_blocks = counted_loop(builder, const(0), whole, f"dw.block{size}")
            pixels(x0, size, builder.mul(cb, const(LANES)), None)
            close_blocks()
            tail = builder.icmp_signed("<", builder.mul(whole, const(LANES)), c)
            with builder.if_then(tail):
                c0 = builder.mul(whole, const(LANES))
                pixels(x0, size, c0, builder.icmp_signed("<", lane_ids,
                                                         splat(builder, builder.sub(c, c0), ir.VectorType(_I64, LANES))))

        def pixels(x0, size: int, c0, mask) -> None:
            """One channel block (``mask``: its live lanes, None when all are) of ``size`` pixels."""
            if mask is None:
                load = lambda base, off: builder.load(at(base, off), align=4)  # noqa: E731
                store = lambda v, ptr: builder.store(v, ptr, align=4)  # noqa: E731
            else:
                load = lambda base, off: _masked_f32(builder, "load", [at(base, off), align, mask, zero])  # noqa: E731
                store = lambda v, ptr: _masked_f32(builder, "store", [v, ptr, align, mask])  # noqa: E731
            taps = [load(wd, builder.add(builder.mul(const(t), c), c0)) for t in range(9)]
            bv = load(bd, c0)
            xs = [builder.add(x0, const(p)) for p in range(size)]
            cols = []
            for p in range(size):
                start = builder.sub(builder.mul(xs[p], sw), pw)
                cols.append([builder.add(builder.mul(builder.add(start, builder.mul(const(j), dw)), c), c0)
                             for j in range(3)])
            accs = [bv] * size  # each pixel's chain in tap order; the pixels' chains interleaved
            for i in range(3):
                for j in range(3):
                    ins = [load(rows[i], cols[p][j]) for p in range(size)]
                    accs = [builder.call(fma, [taps[3 * i + j], ins[p], accs[p]]) for p in range(size)]
            for p in range(size):
                store(accs[p], at(yd, builder.add(builder.mul(xs[p], c), c0)))

        full = builder.add(lo, builder.mul(builder.sdiv(builder.sub(hi, lo), const(GROUP)), const(GROUP)))
        g, close = counted_loop(builder, const(0), builder.sdiv(builder.sub(full, lo), const(GROUP)), "dw.groups")
        group(builder.add(lo, builder.mul(g, const(GROUP))), GROUP)
        close()
        xo, close = counted_loop(builder, full, hi, "dw.rest")
        group(xo, 1)
        close()
        return context.get_dummy_value()

    return sig, codegen
