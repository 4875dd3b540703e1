"""The column step of a channels-last max pool, written in LLVM IR.

A max pool over (H, W, C) folds each window's rows into one row first (long vectorised runs, in
numba: :func:`~inference.kernels.pool_nhwc._max_row`); each output pixel then takes the max of
``kw`` C-channel runs of that row. In numba that step entered ``kw`` loops of C per pixel, each
with its own alias and remainder checks (squeezenet's 3x3/2 on 111x111x64: 44 us for the
columns alone, one thread). Here channels go in blocks of 16 lanes, each block's taps folded in
registers and stored once, the last block of a channel count that is not a multiple of 16 masked:
23 us.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from inference.kernels.tile_ir import LANES, _masked_f32, carried_loop, counted_loop, splat

_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


def max_nan(builder, a, b):
    """``np.maximum(a, b)`` lane by lane: NaN when either is (the reference pool's meaning)."""
    keep = builder.or_(builder.fcmp_ordered(">", a, b), builder.fcmp_unordered("uno", a, a))
    return builder.select(keep, a, b)


@intrinsic
def max_cols(typingctx, row, y, lo, hi, kw, sw, dw, pw, c):
    """``y[xo*c + k] = max over kx < kw of row[(xo*sw - pw + kx*dw)*c + k]`` for the output columns
    ``lo <= xo < hi`` (all their taps inside ``row``: the caller's to ensure) and channels k < c;
    ``row`` and ``y`` flat float32. NaN in any tap gives NaN."""
    sig = types.void(row, y, lo, hi, kw, sw, dw, pw, c)

    def codegen(context, builder, signature, args):
        vty = ir.VectorType(_F32, LANES)
        const = lambda v: ir.Constant(_I64, v)  # noqa: E731
        rd, yd = (context.make_array(signature.args[i])(context, builder, args[i]).data for i in range(2))
        lo, hi, kw, sw, dw, pw, c = (context.cast(builder, args[i], signature.args[i], types.int64)
                                     for i in range(2, 9))
        align = ir.Constant(_I32, 4)
        at = lambda base, off: builder.bitcast(builder.gep(base, [off]), vty.as_pointer())  # noqa: E731
        lane_ids = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
        lowest = splat(builder, ir.Constant(_F32, float("-inf")), vty)
        step = builder.mul(dw, c)  # from one tap to the next

        def load(off, mask):
            if mask is None:
                return builder.load(at(rd, off), align=4)
            return _masked_f32(builder, "load", [at(rd, off), align, mask, lowest])

        def block(src, dst, mask) -> None:
            """One channel block of one pixel: its first tap, then a loop over the others."""
            kx, (acc,), close = carried_loop(builder, const(1), kw, "taps", [load(src, mask)])
            close([max_nan(builder, acc, load(builder.add(src, builder.mul(kx, step)), mask))])
            if mask is None:
                builder.store(acc, at(yd, dst), align=4)
            else:
                _masked_f32(builder, "store", [acc, at(yd, dst), align, mask])

        whole = builder.sdiv(c, const(LANES))
        xo, close_cols = counted_loop(builder, lo, hi, "pool.cols")
        src0 = builder.mul(builder.sub(builder.mul(xo, sw), pw), c)
        dst0 = builder.mul(xo, c)
        cb, close_blocks = counted_loop(builder, const(0), whole, "pool.blocks")
        c0 = builder.mul(cb, const(LANES))
        block(builder.add(src0, c0), builder.add(dst0, c0), None)
        close_blocks()
        c0 = builder.mul(whole, const(LANES))
        with builder.if_then(builder.icmp_signed("<", c0, c)):
            live = splat(builder, builder.sub(c, c0), ir.VectorType(_I64, LANES))
            block(builder.add(src0, c0), builder.add(dst0, c0), builder.icmp_signed("<", lane_ids, live))
        close_cols()
        return context.get_dummy_value()

    return sig, codegen
