"""The channels-last int8 register tile, its epilogue in registers: pixels broadcast, output channels
along the lanes.

Why: a channels-last 1x1 convolution (or an im2col'd one) is the matrix product of its (pixels,
K) uint8 rows with the (K, M) int8 weight, and each pixel's 4 consecutive input channels are one
int32 to broadcast: the rows are read where they lie, nothing is packed per call. With the output
channels along the lanes, a tile row is one pixel's run of output channels: the per-channel scale,
bias and zero-point correction are vectors loaded once per tile, and the requantized bytes go out
as one masked store per 16 channels. The NCHW tile's separate epilogue (through a scratch block,
32 lanes of one channel at a time) had cost more than its products on MobileNetV2's expansion
layers (16 -> 96 channels at 112x112: 35 GMAC/s).

``make_channels_qtile(mr, nv)`` returns an intrinsic

``tile(x, x_off, wcols, w_off, koff, steps, rows, corr, scale, fbias, n_off, cols, z, has_z, y, y_off,
sm, quantize, inv_ys, lo, hi, izp, act)``

computing ``mr`` pixels x ``nv * 16`` output channels: the sums over ``steps`` steps of pixel row
``r`` (int32 ``x[x_off + r * steps + k]``, 4 uint8 channels; rows past ``rows`` read row
``rows - 1``) times the weight vectors at ``wcols[w_off + koff[k] + v * 16]`` (16 channels x 4
int8 taps, :func:`inference.kernels.int8_nhwc.pack_weight_panels`), then lane j of vector v
(channel ``n = n_off + v*16 + j``, stored only for channels below ``n_off + cols`` and rows below
``rows``) becomes ``t = float(sum + corr[n]) * scale[n] + fbias[n]`` (``+ z`` where ``has_z``, ``z``
read where the output goes: ``y_off + r * sm + v * 16 + j``), then

* float32 output: ``act(t)`` (NONE: the clamp to [lo, hi]);
* requantized (``quantize``): ``rint(clip(act(t) * inv_ys, lo, hi)) + izp`` as bytes, where NONE
  is no activation: a Relu's or Clip's clamp is folded into [lo, hi] (``clip(t, a, b) * inv_ys ==
  clip(t * inv_ys, a * inv_ys, b * inv_ys)`` exactly, rounding being monotonic; only a NaN ``t``
  lands elsewhere: on ``lo``).

``act`` is the float tile's code: NONE, HARD_SWISH, SILU, or SIGMOID (any other code). The same
operations in the same order as the NCHW tile's epilogue (:mod:`inference.kernels.tile_lanes`), so
the two layouts give the same bytes, as onnxruntime's QLinearConv does (a version computing ``t``
as one fused multiply-add of the raw sum, its zero-point correction folded into the bias, moved
outputs at rounding ties by a step, which a network amplified: a quantized MobileNetV2's logits
then differed from onnxruntime's by up to 22% of their range on 9 of 40 inputs).
"""
from __future__ import annotations

import functools

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from inference.kernels.activations import HARD_SWISH, NONE, SILU
from inference.kernels.tile_ir import LANES, _k_loop, _step, has_vnni, masked, splat
from inference.kernels.tile_lanes import requantized
from inference.kernels.vmath_ir import clamp_keeping_nan, hard_swish, sigmoid

_I1, _I8, _I32, _I64, _F32 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
_VF, _VI, _VB, _VM = (ir.VectorType(t, LANES) for t in (_F32, _I32, _I8, _I1))


def store_channels(context, builder, signature, args, accs: list, mr: int, nv: int, first: int) -> None:
    """The epilogue of the module docstring for the int32 accumulators ``accs`` (row-major: pixel r,
    16-channel vector v at ``r * nv + v``): the intrinsic's args from index ``first`` on are ``rows,
    corr, scale, fbias, n_off, cols, z, has_z, y, y_off, sm, quantize, inv_ys, lo, hi, izp, act``.
    Shared by every tile with output channels on its lanes (:mod:`inference.kernels.int8_depthwise_ir`)."""
    const = lambda v: ir.Constant(_I64, v)  # noqa: E731
    arr = lambda i: context.make_array(signature.args[first + i])(context, builder, args[first + i])  # noqa: E731
    i64 = lambda i: context.cast(builder, args[first + i], signature.args[first + i], types.int64)  # noqa: E731
    f32 = lambda i: splat(builder, context.cast(builder, args[first + i], signature.args[first + i], types.float32),
                          _VF)  # noqa: E731
    corr_a, scale_a, fbias_a, z_a, y_a = arr(1), arr(2), arr(3), arr(6), arr(8)
    n_off, cols, rows, y_off, sm = i64(4), i64(5), i64(0), i64(9), i64(10)
    at_vec = lambda a, off, vty: builder.bitcast(builder.gep(a.data, [off]), vty.as_pointer())  # noqa: E731
    lane = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
    vals, masks, offsets = [], [], []
    for v in range(nv):
        off = builder.add(n_off, const(v * LANES))
        c = builder.load(at_vec(corr_a, off, _VI), align=4)
        s = builder.load(at_vec(scale_a, off, _VF), align=4)
        b = builder.load(at_vec(fbias_a, off, _VF), align=4)
        col_ok = builder.icmp_signed("<", lane, splat(builder, builder.sub(cols, const(v * LANES)),
                                                       ir.VectorType(_I64, LANES)))
        for r in range(mr):
            vals.append(builder.fadd(builder.fmul(builder.sitofp(builder.add(accs[r * nv + v], c), _VF), s), b))
            masks.append(builder.and_(col_ok, splat(builder, builder.icmp_signed("<", const(r), rows), _VM)))
            offsets.append(builder.add(y_off, builder.add(builder.mul(const(r), sm), const(v * LANES))))
    inv_ys, lo, hi = f32(12), f32(13), f32(14)
    izp = splat(builder, context.cast(builder, args[first + 15], signature.args[first + 15], types.int32), _VI)
    act = i64(16)
    times_x = splat(builder, builder.icmp_signed("==", act, const(SILU)), _VM)

    def store(activate, quantize: bool, with_z: bool) -> None:
        for i, val in enumerate(vals):
            if with_z:
                z = masked(builder, "load", _VF, [at_vec(z_a, offsets[i], _VF), ir.Constant(_I32, 4), masks[i],
                                                  ir.Constant(_VF, None)])
                val = builder.fadd(val, z)
            out = activate(val)
            if quantize:
                q = requantized(builder, out, inv_ys, lo, hi, izp)
                masked(builder, "store", _VB, [q, at_vec(y_a, offsets[i], _VB), ir.Constant(_I32, 1), masks[i]])
            else:
                masked(builder, "store", _VF, [out, at_vec(y_a, offsets[i], _VF), ir.Constant(_I32, 4), masks[i]])

    def activated(quantize: bool, with_z: bool) -> None:
        clamp = (lambda v: v) if quantize else (lambda v: clamp_keeping_nan(builder, v, lo, hi))
        with builder.if_else(builder.icmp_signed("==", act, const(NONE))) as (clamped, computed):
            with clamped:
                store(clamp, quantize, with_z)
            with computed:
                with builder.if_else(builder.icmp_signed("==", act, const(HARD_SWISH))) as (hard, smooth):
                    with hard:
                        store(lambda v: hard_swish(builder, v), quantize, with_z)
                    with smooth:
                        store(lambda v: sigmoid(builder, v, times_x), quantize, with_z)

    for_z = builder.icmp_signed("!=", i64(7), const(0))
    with builder.if_else(builder.icmp_signed("!=", i64(11), const(0))) as (to_bytes, to_float):
        for quantize, block in ((True, to_bytes), (False, to_float)):
            with block:
                with builder.if_else(for_z) as (residual, plain):
                    with residual:
                        activated(quantize, True)
                    with plain:
                        activated(quantize, False)


@functools.lru_cache(maxsize=None)
def make_channels_qtile(mr: int, nv: int):
    """The intrinsic described in the module docstring, for ``mr`` pixels x ``nv`` 16-channel vectors."""
    step_kind = "s8u8"  # the broadcast (pixels) unsigned, the vectors (weights) signed
    vnni = has_vnni()

    def codegen(context, builder, signature, args):
        accs = _k_loop(context, builder, signature, args, mr, nv, _VI, _step(builder, step_kind, vnni),
                       rows_major=True, row_limit=6)
        store_channels(context, builder, signature, args, accs, mr, nv, 6)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, x, x_off, wcols, w_off, koff, steps, rows, corr, scale, fbias, n_off, cols, z, has_z, y,
             y_off, sm, quantize, inv_ys, lo, hi, izp, act):
        return types.void(x, x_off, wcols, w_off, koff, steps, rows, corr, scale, fbias, n_off, cols, z, has_z, y,
                          y_off, sm, quantize, inv_ys, lo, hi, izp, act), codegen

    return tile
