"""The channels-last int8 depthwise register tile: 4 taps a ``vpdpbusd``, the epilogue in registers.

Why: a depthwise tap is one multiply per channel, so a channels-last depthwise convolution summed
lane by lane (a widening load, a 32-bit multiply and an add per 16 channels and tap) ran at ~10
GMAC/s here, most of an int8 MobileNetV2's time against onnxruntime's. ``vpdpbusd`` sums 4 byte
products per int32 lane; it needs each lane's 4 bytes to be 4 taps of one channel, where a
channels-last image holds one tap's channels side by side. Four taps' 64-channel vectors become
that order in 8 in-lane unpacks (bytes of taps 0/1 and 2/3 paired, then the pairs' words), after
which 64 channels x 4 taps are 4 instructions. The unpacks leave accumulator v's lane 4L + j holding
channel 16L + 4v + j; the weights are packed in that order (:func:`pack_depthwise_taps`), and the
sums are put back in channel order (two rounds of 128-bit block shuffles) before the epilogue of
:func:`inference.kernels.int8_channels_ir.store_channels`, the 1x1 tile's, so both give the NCHW
kernel's bytes.

``make_depthwise_qtile(mr)`` returns an intrinsic

``tile(x, x_off, xstep, wts, w_off, offs, steps, rows, corr, scale, fbias, n_off, cols, z, has_z, y,
y_off, sm, quantize, inv_ys, lo, hi, izp, act)``

summing, for ``mr`` output pixels r (input pixel at ``x[x_off + r * xstep]``, uint8, flat; rows past
``rows`` read row ``rows - 1``) and 64 channels, tap t at ``offs[t]`` from the pixel times the packed
weights at ``wts[w_off:]`` (int32: ``steps`` groups of 4 taps x 4 vectors x 16 lanes), then the
channels tile's epilogue (args from ``rows`` on, as there). Each tap reads 64 bytes: the caller
keeps 63 bytes readable past the last channel of the last pixel (weights past the channels are zero).
"""
from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from inference.kernels.int8_channels_ir import store_channels
from inference.kernels.tile_ir import LANES, _step, carried_loop, has_vnni, unpack_masks

WIDTH = 64  # channels a tile covers: 4 vectors of 16
TAPS = 4  # taps a vpdpbusd sums per lane
_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_VB, _VW, _VI = ir.VectorType(_I8, WIDTH), ir.VectorType(_I16, WIDTH // 2), ir.VectorType(_I32, LANES)


_BYTES_LO, _BYTES_HI = unpack_masks(WIDTH, 16)
_WORDS_LO, _WORDS_HI = unpack_masks(WIDTH // 2, 8)
# accumulator v lane 4q + j is channel 16q + 4v + j: channel order is blocks q of each, gathered
_PAIR = [x for q in range(4) for x in list(range(4 * q, 4 * q + 4)) + list(range(LANES + 4 * q, LANES + 4 * q + 4))]
_ORDER = [list(range(8 * q, 8 * q + 8)) + list(range(32 + 8 * q, 32 + 8 * q + 8)) for q in range(4)]


def _mask(indices: list) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(indices)), indices)


def pack_depthwise_taps(w: np.ndarray) -> np.ndarray:
    """int8 (C, 1, kh, kw) -> int32 flat, per 64-channel block, group of 4 taps, vector v and lane
    4L + j: the 4 taps' bytes of channel 16L + 4v + j of the block (zero past C and the taps)."""
    c, ntaps = w.shape[0], w.shape[2] * w.shape[3]
    blocks, steps = -(-c // WIDTH), -(-ntaps // TAPS)
    taps = np.zeros((blocks * WIDTH, steps * TAPS), np.int8)
    taps[:c, :ntaps] = w.reshape(c, ntaps)
    lane = np.arange(LANES)
    order = np.array([16 * (lane // 4) + 4 * v + lane % 4 for v in range(4)])  # (vector, lane) -> channel
    packed = taps.reshape(blocks, WIDTH, steps, TAPS)[:, order].transpose(0, 3, 1, 2, 4)  # (b, step, v, lane, tap)
    return np.ascontiguousarray(packed).reshape(-1).view(np.int32)


@functools.lru_cache(maxsize=None)
def make_depthwise_qtile(mr: int, vnni: bool | None = None):
    """The intrinsic of the module docstring for ``mr`` pixels (``vnni``: ``vpdpbusd`` or the
    portable widening form; by default what the host has)."""
    vnni = has_vnni() if vnni is None else vnni

    def codegen(context, builder, signature, args):
        const = lambda v: ir.Constant(_I64, v)  # noqa: E731
        i64 = lambda i: context.cast(builder, args[i], signature.args[i], types.int64)  # noqa: E731
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        wa = context.make_array(signature.args[3])(context, builder, args[3])
        oa = context.make_array(signature.args[5])(context, builder, args[5])
        rows = i64(7)
        last = builder.sub(rows, const(1))
        bases = []
        for r in range(mr):
            row = builder.select(builder.icmp_signed("<", const(r), rows), const(r), last)
            bases.append(builder.gep(xa.data, [builder.add(i64(1), builder.mul(row, i64(2)))]))
        w_base = builder.gep(wa.data, [i64(4)])
        step = _step(builder, "u8s8", vnni)  # (acc, weights, pixels): vpdpbusd(acc, pixels, weights)
        k, accs, close = carried_loop(builder, const(0), i64(6), "dw", [ir.Constant(_VI, None)] * (mr * 4))
        wv = [builder.load(builder.bitcast(builder.gep(w_base, [builder.add(builder.mul(k, const(4 * LANES)),
                                                                             const(v * LANES))]), _VI.as_pointer()),
                           align=4) for v in range(4)]
        offs = [builder.load(builder.gep(oa.data, [builder.add(builder.mul(k, const(TAPS)), const(t))]))
                for t in range(TAPS)]
        new = []
        for r in range(mr):
            tv = [builder.load(builder.bitcast(builder.gep(bases[r], [o]), _VB.as_pointer()), align=1) for o in offs]
            pairs = [builder.bitcast(builder.shuffle_vector(tv[a], tv[a + 1], _mask(m)), _VW)
                     for a in (0, 2) for m in (_BYTES_LO, _BYTES_HI)]
            lo01, hi01, lo23, hi23 = pairs
            quads = [builder.bitcast(builder.shuffle_vector(a, b, _mask(m)), _VI)
                     for a, b in ((lo01, lo23), (hi01, hi23)) for m in (_WORDS_LO, _WORDS_HI)]
            new.extend(step(accs[r * 4 + v], wv[v], quads[v]) for v in range(4))
        close(new)
        ordered = []
        for r in range(mr):
            a = accs[r * 4:r * 4 + 4]
            t01 = builder.shuffle_vector(a[0], a[1], _mask(_PAIR))
            t23 = builder.shuffle_vector(a[2], a[3], _mask(_PAIR))
            ordered.extend(builder.shuffle_vector(t01, t23, _mask(m)) for m in _ORDER)
        store_channels(context, builder, signature, args, ordered, mr, 4, 7)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, x, x_off, xstep, wts, w_off, offs, steps, rows, corr, scale, fbias, n_off, cols, z, has_z, y,
             y_off, sm, quantize, inv_ys, lo, hi, izp, act):
        return types.void(x, x_off, xstep, wts, w_off, offs, steps, rows, corr, scale, fbias, n_off, cols, z, has_z,
                          y, y_off, sm, quantize, inv_ys, lo, hi, izp, act), codegen

    return tile
