"""The register tile of the direct 3x3 convolution (NCHW, stride 1), written in LLVM IR.

:mod:`~inference.kernels.direct_conv` copies each input channel into a zero-bordered plane of row
pitch ``wp``; output pixel (yo, xo) then reads tap (i, j) at ``(yo + i*dh)*wp + xo + j*dw`` of
every plane, so 16 consecutive output columns of a row are one unaligned vector load per tap.
Here :data:`CHANNELS` output channels x :data:`ITEMS` such 16-column pieces ("items") are summed
in registers over all input channels (16 accumulators): per input channel 9 loads per item and
one broadcast weight per (channel, tap), 144 FMAs in all, and each output vector is stored once,
bias, residual and clamp applied on the way (masked past the row's end). Why: the numba loop it
replaces summed two output channels over a whole wide plane per input channel, so every FMA pair
also loaded and stored its accumulators, at numba's 8-lane width: 13-30 GMAC/s on the MNIST CNN's
layers (Conv 16->32 on 14x14 in 30 us; onnxruntime's NCHWc kernel 9).
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from inference.kernels.tile_ir import LANES, _masked_f32, carried_loop, counted_loop, splat
from inference.kernels.vmath_ir import clamp_keeping_nan

_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()

CHANNELS = 8  # output channels per tile
ITEMS = 2  # 16-column pieces of output rows per tile


@intrinsic
def direct3x3_tiles(typingctx, pad, w, bias, z, y, has_z, pbase, ybase, c, ps, wp, dh, dw, m0, m1, i0, i1,
                    oh, ow, amin, amax):
    """Output channels [m0, m1) x items [i0, i1) of one image: ``y[ybase + m*oh*ow + yo*ow + xo] =
    clamp(bias[m] + sum_ci,i,j w[((m*c + ci)*3 + i)*3 + j] * pad[pbase + ci*ps + (yo + i*dh)*wp + xo
    + j*dw] (+ z at y's offset when ``has_z``), amin, amax)``. Item ``it`` is row ``it // nxb`` (nxb =
    ceil(ow / 16)), columns ``16 * (it % nxb)`` on, the columns past ``ow`` masked off at the store;
    the loads read whole vectors, so ``pad`` must hold 16 floats past the last plane's last row.
    ``pad``, ``w``, ``z``, ``y`` flat float32; ``ps`` the plane stride. A partial last tile repeats
    its last channel or item and skips storing the repeats, so ``y`` may be ``z``'s memory."""
    sig = types.void(pad, w, bias, z, y, has_z, pbase, ybase, c, ps, wp, dh, dw, m0, m1, i0, i1, oh, ow, amin, amax)

    def codegen(context, builder, signature, args):
        vty = ir.VectorType(_F32, LANES)
        const = lambda v: ir.Constant(_I64, v)  # noqa: E731
        pd, wd, bd, zd, yd = (context.make_array(signature.args[i])(context, builder, args[i]).data
                              for i in range(5))
        has_z = context.cast(builder, args[5], signature.args[5], types.boolean)
        pbase, ybase, c, ps, wp, dh, dw, m0, m1, i0, i1, oh, ow = (
            context.cast(builder, args[i], signature.args[i], types.int64) for i in range(6, 19))
        amin, amax = (splat(builder, context.cast(builder, args[i], signature.args[i], types.float32), vty)
                      for i in (19, 20))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32")
        at = lambda base, off: builder.bitcast(builder.gep(base, [off]), vty.as_pointer())  # noqa: E731
        scalar = lambda base, off: builder.load(builder.gep(base, [off]))  # noqa: E731
        smin = lambda a, b: builder.select(builder.icmp_signed("<", a, b), a, b)  # noqa: E731
        lane_ids = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
        align = ir.Constant(_I32, 4)

        def store(acc, out, mask) -> None:
            _masked_f32(builder, "store", [clamp_keeping_nan(builder, acc, amin, amax), at(yd, out), align, mask])

        nxb = builder.sdiv(builder.add(ow, const(LANES - 1)), const(LANES))
        taps = [builder.add(builder.mul(builder.mul(const(i), dh), wp), builder.mul(const(j), dw))
                for i in range(3) for j in range(3)]
        plane_out = builder.mul(oh, ow)
        groups = builder.sdiv(builder.add(builder.sub(m1, m0), const(CHANNELS - 1)), const(CHANNELS))
        tiles = builder.sdiv(builder.add(builder.sub(i1, i0), const(ITEMS - 1)), const(ITEMS))

        g, close_groups = counted_loop(builder, const(0), groups, "direct.groups")
        mg = builder.add(m0, builder.mul(g, const(CHANNELS)))
        last_m = builder.sub(m1, const(1))
        chans = [smin(builder.add(mg, const(mi)), last_m) for mi in range(CHANNELS)]
        wrows = [builder.mul(ch, builder.mul(c, const(9))) for ch in chans]
        t, close_tiles = counted_loop(builder, const(0), tiles, "direct.tiles")
        first = builder.add(i0, builder.mul(t, const(ITEMS)))
        last_i = builder.sub(i1, const(1))
        items = [smin(builder.add(first, const(p)), last_i) for p in range(ITEMS)]
        rows = [builder.sdiv(it, nxb) for it in items]
        cols = [builder.mul(builder.srem(it, nxb), const(LANES)) for it in items]
        srcs = [builder.add(pbase, builder.add(builder.mul(r, wp), x)) for r, x in zip(rows, cols)]
        initial = [splat(builder, scalar(bd, ch), vty) for ch in chans for _ in range(ITEMS)]

        ci, accs, close_ci = carried_loop(builder, const(0), c, "direct.cin", initial)
        plane = builder.mul(ci, ps)
        wci = [builder.add(wrow, builder.mul(ci, const(9))) for wrow in wrows]
        updated = list(accs)
        for tap, off in enumerate(taps):  # tap by tap: ITEMS input vectors live beside the accumulators
            loaded = [builder.load(at(pd, builder.add(builder.add(src, plane), off)), align=4) for src in srcs]
            for mi in range(CHANNELS):
                wv = splat(builder, scalar(wd, builder.add(wci[mi], const(tap))), vty)
                for p in range(ITEMS):
                    q = mi * ITEMS + p
                    updated[q] = builder.call(fma, [loaded[p], wv, updated[q]])
        close_ci(updated)

        for p in range(ITEMS):
            live = splat(builder, builder.sub(ow, cols[p]), ir.VectorType(_I64, LANES))
            mask = builder.icmp_signed("<", lane_ids, live)
            fresh = builder.icmp_signed("<", builder.add(first, const(p)), i1)
            row_at = builder.add(ybase, builder.add(builder.mul(rows[p], ow), cols[p]))
            for mi in range(CHANNELS):
                keep = builder.and_(fresh, builder.icmp_signed("<", builder.add(mg, const(mi)), m1))
                with builder.if_then(keep):
                    out = builder.add(row_at, builder.mul(chans[mi], plane_out))
                    acc = accs[mi * ITEMS + p]
                    with builder.if_else(has_z) as (residual, plain):
                        with residual:
                            z_row = _masked_f32(builder, "load", [at(zd, out), align, mask, ir.Constant(vty, None)])
                            store(builder.fadd(acc, z_row), out, mask)
                        with plain:
                            store(acc, out, mask)
        close_tiles()
        close_groups()
        return context.get_dummy_value()

    return sig, codegen
