"""32-lane vector steps of the int8 GEMM epilogue, written in LLVM IR, and the epilogue helpers the
float32 tile shares (clamp bounds, row segments).

Why IR: inside numba's parallel loops LLVM left these steps scalar (one ``vcvtsi2ss`` per int32
accumulator, one byte store per output), and they cost 2-8x the VNNI tile itself on ResNet-18's
convolutions. A pixel block's 32 lanes are a run of flat positions; its real outputs are one or
two row segments (the direct convolution's padding columns in between), so loads and stores of a
segment are masked vector ones (``llvm.masked.load``/``store``: lanes outside the segment touch
no memory), never byte loops.

* ``scale_block(buf, boff, c, s, fb, vals)``: ``vals[q] = float(buf[boff + q] + c) * s + fb``;
* ``add_lanes(vals, q0, cnt, z, zoff)``: ``vals[q] += z[zoff + q - q0]`` for q in [q0, q0+cnt);
* ``clamp_block(vals, amin, amax)`` (the Relu / Clip / no activation) and
  ``requant_block(vals, inv_ys, lo, hi, izp, qb)`` (to 8-bit, rounded half to even);
* ``store_lanes(src, q0, cnt, dst, doff)``: ``dst[doff + q - q0] = src[q]`` for the same lanes,
  8-bit or float32 (int32 ``src`` is truncated to an 8-bit ``dst``).
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from inference.kernels.activations import CLIP, HARD_SWISH, NONE, RELU, SIGMOID, SILU, activate
from inference.kernels.tile_ir import masked
from inference.kernels.vmath_ir import clamp_keeping_nan

NL = 32  # lanes: one pixel block of the GEMM tile
_I8, _I32, _I64, _F32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()


def _vec(t: ir.Type) -> ir.VectorType:
    return ir.VectorType(t, NL)


def _splat(builder, value, t: ir.Type):
    undef = ir.Constant(_vec(t), ir.Undefined)
    first = builder.insert_element(undef, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(first, undef, ir.Constant(_vec(_I32), [0] * NL))


def _mask(builder, q0, cnt):
    """Lanes q with q0 <= q < q0 + cnt (``q0``, ``cnt`` int64, compared as int32: lanes < 32)."""
    lanes = ir.Constant(_vec(_I32), list(range(NL)))
    start = builder.trunc(q0, _I32)
    lo = builder.icmp_signed(">=", lanes, _splat(builder, start, _I32))
    hi = builder.icmp_signed("<", lanes, _splat(builder, builder.add(start, builder.trunc(cnt, _I32)), _I32))
    return builder.and_(lo, hi)


def _vptr(builder, context, aty, arr, offset, elem: ir.Type):
    """Pointer to a vector of ``elem`` at ``arr.data + offset`` (elements)."""
    data = context.make_array(aty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), _vec(elem).as_pointer())


def _elem(dtype) -> ir.Type:
    if isinstance(dtype, types.Float):
        return _F32
    return _I8 if dtype.bitwidth == 8 else _I32


@intrinsic
def scale_block(typingctx, buf, boff, c, s, fb, vals):
    sig = types.void(buf, boff, c, s, fb, vals)

    def codegen(context, builder, signature, args):
        acc = builder.load(_vptr(builder, context, signature.args[0], args[0], args[1], _I32), align=4)
        acc = builder.add(acc, _splat(builder, context.cast(builder, args[2], signature.args[2], types.int32), _I32))
        f = builder.sitofp(acc, _vec(_F32))
        sf = _splat(builder, context.cast(builder, args[3], signature.args[3], types.float32), _F32)
        bf = _splat(builder, context.cast(builder, args[4], signature.args[4], types.float32), _F32)
        out = builder.fadd(builder.fmul(f, sf), bf)
        builder.store(out, _vptr(builder, context, signature.args[5], args[5], ir.Constant(_I64, 0), _F32), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def add_lanes(typingctx, vals, q0, cnt, z, zoff):
    sig = types.void(vals, q0, cnt, z, zoff)

    def codegen(context, builder, signature, args):
        vals_p = _vptr(builder, context, signature.args[0], args[0], ir.Constant(_I64, 0), _F32)
        mask = _mask(builder, args[1], args[2])
        zp = _vptr(builder, context, signature.args[3], args[3], builder.sub(args[4], args[1]), _F32)
        z = masked(builder, "load", _vec(_F32), [zp, ir.Constant(_I32, 4), mask, ir.Constant(_vec(_F32), None)])
        builder.store(builder.fadd(builder.load(vals_p, align=4), z), vals_p, align=4)
        return context.get_dummy_value()

    return sig, codegen


def _f32(context, builder, signature, args, i):
    return context.cast(builder, args[i], signature.args[i], types.float32)


@intrinsic
def clamp_block(typingctx, vals, amin, amax):
    """``vals = min(max(vals, amin), amax)``, NaN kept: Relu (0, inf), Clip (alpha, beta), none (-inf, inf)."""
    sig = types.void(vals, amin, amax)

    def codegen(context, builder, signature, args):
        vp = _vptr(builder, context, signature.args[0], args[0], ir.Constant(_I64, 0), _F32)
        v = clamp_keeping_nan(builder, builder.load(vp, align=4),
                              _splat(builder, _f32(context, builder, signature, args, 1), _F32),
                              _splat(builder, _f32(context, builder, signature, args, 2), _F32))
        builder.store(v, vp, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def requant_block(typingctx, vals, inv_ys, lo, hi, izp, qb):
    """``qb[q] = rint(clip(vals[q] * inv_ys, lo, hi)) + izp`` as bytes (``lo``/``hi``: the output
    type's range minus the zero point, so clipping before rounding is exact and in range)."""
    sig = types.void(vals, inv_ys, lo, hi, izp, qb)

    def codegen(context, builder, signature, args):
        v = builder.load(_vptr(builder, context, signature.args[0], args[0], ir.Constant(_I64, 0), _F32), align=4)
        q = requantized(builder, v, *(_splat(builder, _f32(context, builder, signature, args, i), _F32) for i in (1, 2, 3)),
                        _splat(builder, context.cast(builder, args[4], signature.args[4], types.int32), _I32))
        builder.store(q, _vptr(builder, context, signature.args[5], args[5], ir.Constant(_I64, 0), _I8), align=1)
        return context.get_dummy_value()

    return sig, codegen


def requantized(builder, v, inv_ys, lo, hi, izp):
    """The 8-bit vector ``rint(clip(v * inv_ys, lo, hi)) + izp`` (float32 ``v`` and splats, int32
    ``izp``): a NaN product clips to ``lo``. Each clip is one compare-and-select, which x86 does
    as one ``vmaxps``/``vminps`` (``llvm.maxnum``, used before, cost three instructions each for
    its NaN rule), and ``rint`` then the conversion one ``vcvtps2dq``."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v.type, [v.type]),
                                        f"llvm.rint.v{v.type.count}f32")
    v = builder.fmul(v, inv_ys)
    v = builder.select(builder.fcmp_ordered(">", v, lo), v, lo)
    v = builder.select(builder.fcmp_ordered("<", v, hi), v, hi)
    q = builder.fptosi(builder.call(fn, [v]), ir.VectorType(_I32, v.type.count))
    return builder.trunc(builder.add(q, izp), ir.VectorType(_I8, v.type.count))


@intrinsic
def store_lanes(typingctx, src, q0, cnt, dst, doff):
    sig = types.void(src, q0, cnt, dst, doff)

    def codegen(context, builder, signature, args):
        selem, delem = _elem(signature.args[0].dtype), _elem(signature.args[3].dtype)
        v = builder.load(_vptr(builder, context, signature.args[0], args[0], ir.Constant(_I64, 0), selem), align=4)
        if delem != selem:
            v = builder.trunc(v, _vec(delem))
        dp = _vptr(builder, context, signature.args[3], args[3], builder.sub(args[4], args[1]), delem)
        masked(builder, "store", _vec(delem), [v, dp, ir.Constant(_I32, 1), _mask(builder, args[1], args[2])])
        return context.get_dummy_value()

    return sig, codegen


# -- host-side helpers of both epilogues ---------------------------------------------------------
@numba.njit(cache=True, error_model="numpy", inline="always")
def activate_block(vals, code, alpha, beta, amin, amax):
    """The fused activation over one 32-lane block: Relu, Clip and none as one vector clamp to
    [amin, amax] (see :func:`clamp_range`), the others lane by lane."""
    if code == NONE or code == RELU or code == CLIP:
        clamp_block(vals, amin, amax)
    else:
        for q in range(NL):
            vals[q] = np.float32(activate(vals[q], code, alpha, beta))


@numba.njit(cache=True, error_model="numpy", inline="always")
def epilogue_block(buf, boff, corr, scale, fbias, vals, seg, ns, base, z, has_z, code, alpha, beta, amin, amax,
                   quantize, inv_ys, lo, hi, izp, qb, yq, yf):
    """One 32-lane block of int32 sums (``buf[boff:]``) through the int8 epilogue, stored to its
    ``ns`` row segments ``seg`` at ``base``: ``act((sum + corr) * scale + fbias + z)``, then
    requantized into ``yq`` or as float32 into ``yf``."""
    scale_block(buf, boff, corr, scale, fbias, vals)
    if has_z:
        for i in range(ns):
            add_lanes(vals, seg[i, 0], seg[i, 2], z, base + seg[i, 1])
    activate_block(vals, code, alpha, beta, amin, amax)
    if quantize:
        requant_block(vals, inv_ys, lo, hi, izp, qb)
        for i in range(ns):
            store_lanes(qb, seg[i, 0], seg[i, 2], yq, base + seg[i, 1])
    else:
        for i in range(ns):
            store_lanes(vals, seg[i, 0], seg[i, 2], yf, base + seg[i, 1])


def clamp_range(code: int, alpha: np.float32, beta: np.float32) -> tuple[np.float32, np.float32]:
    """The [min, max] that Relu, Clip or no activation clamp to (no clamp for the others)."""
    inf = np.float32(np.inf)
    return {RELU: (np.float32(0), inf), CLIP: (alpha, beta)}.get(code, (-inf, inf))


@functools.lru_cache(maxsize=64)
def clamp_epilogue(code: int, alpha: float, beta: float) -> tuple[bool, np.float32, np.float32]:
    """Whether a float tile's clamp is the whole activation ``code``, and the clamp's bounds (the
    other activations run in a pass of their own after an unclamped tile)."""
    clamps = code in (NONE, RELU, CLIP)
    return (clamps,) + clamp_range(code if clamps else NONE, np.float32(alpha), np.float32(beta))


@functools.lru_cache(maxsize=64)
def tile_epilogue(code: int, alpha: float, beta: float) -> tuple[bool, np.float32, np.float32, int]:
    """What the float tile of :func:`~inference.kernels.tile_ir.make_out_tile` does of the activation
    ``code``: whether all of it, its clamp bounds and its ``act`` argument. Sigmoid, SiLU and
    HardSwish are computed in the tile (its registers; no clamp), the clamps as
    :func:`clamp_epilogue` says; the rest (Gelu, HardSigmoid, LeakyRelu ...) run in a pass of their
    own after an unclamped tile."""
    if code in (SIGMOID, SILU, HARD_SWISH):
        inf = np.float32(np.inf)
        return True, -inf, inf, code
    return clamp_epilogue(code, alpha, beta) + (NONE,)


@numba.njit(cache=True, error_model="numpy")
def row_segments(f0, nq, wrow, ow, seg):
    """Output row pieces of flat positions [f0, f0 + nq) (rows of ``wrow``, the first ``ow``
    real): ``seg[i] = (first lane, output offset oy*ow+ox, length)``; returns their number."""
    oy, ox = f0 // wrow, f0 % wrow
    q, ns = 0, 0
    while q < nq:
        run = min(nq - q, wrow - ox)
        cnt = min(run, ow - ox)
        if cnt > 0:
            seg[ns, 0], seg[ns, 1], seg[ns, 2] = q, oy * ow + ox, cnt
            ns += 1
        q += run
        ox, oy = 0, oy + 1
    return ns
