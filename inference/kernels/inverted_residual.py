"""``edgelearn::InvertedResidualNHWC``: a MobileNetV2 block (1x1 expansion, depthwise 3x3 or 5x5,
1x1 projection, the residual) in one kernel, a band of output rows at a time.

Why: apart, each layer writes its whole output and the next reads it back. The expansion's output
is the block's largest tensor (6x its input: 112x112x96 floats, 4.8 MB, in MobileNetV2's second
block), which leaves the 2 MB L2 of this machine's cores. Here each band of rows is expanded into a
ring of rows that stays in cache, the depthwise stencil reads three (or five) of them per output
row into a band buffer, and the projection reads that and writes the block's output: the expansion
and the depthwise outputs never reach memory. Rows a band shares with the next (the stencil's
halo) stay in the ring: each row is expanded once per parallel run. One parallel region per block,
not three. Measured on MobileNetV2's blocks against their layers apart (the same tiles and
stencil, one thread, thread time, interleaved): 0.84-0.96x, the second block (16 -> 96 -> 24 on
112x112) 0.84x.

Inputs ``(X, W1, B1, Wd, Bd, W2, B2, Z)``: ``W1``/``B1`` the expansion's (HWIO (1, 1, C, E)), empty
names for a block without one (MobileNetV2's first); ``Wd``/``Bd`` the depthwise's (HWIO (k, k, 1,
E), k 3 or 5: EfficientNet's blocks have both); ``W2``/``B2`` the projection's (1, 1, E, M); ``Z``
the residual (N, OH, OW, M), optional; any bias may be absent. Attributes: the depthwise's
``strides`` and ``pads``; each stage's epilogue (``expand_activation``/``_alpha``/``_beta``,
``depthwise_...``, and FusedConv's ``activation``, ``alpha``, ``beta`` for the projection). The
pass that makes it is :mod:`inference.passes.inverted_residual`; the reference kernel runs the
three convolutions apart (the oracle), as does the standard-ONNX export.
"""
from __future__ import annotations

import functools

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._jit import kernel_threads, threaded_kernel
from inference.kernels.activations import activation_code
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.channels_last import depthwise3x3_row, depthwise5x5_row
from inference.kernels.inverted_residual_channels import ChannelSplit, expansion_tile
from inference.kernels._prepack import LastWeights, constant_weight, source
from inference.kernels.conv import PACKED, handles
from inference.kernels.fused import DOMAIN, EPILOGUE_ATTRS, prefixed_epilogue, stage_epilogue
from inference.kernels.nhwc import conv_window, fused_conv_nhwc_reference, prepare_conv_nhwc
from inference.kernels.rows_gemm import LANES, matrix_product, padded_bias, padded_weight, tile_shape
from inference.kernels.tile_lanes import clamp_epilogue
from inference.ops._memo import remember
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "InvertedResidualNHWC"
STAGES = ("expand_", "depthwise_", "")  # the attribute prefixes of each stage's epilogue
_STAGE_ATTRS = {**prefixed_epilogue({}, STAGES[0]), **prefixed_epilogue({}, STAGES[1])}
#: bytes of expanded rows a band keeps in cache (its ring); 128-512 KB ran alike on MobileNetV2's blocks
BAND_BYTES = 256 * 1024
MIN_BAND_PIXELS = 64
#: at 2 or more threads, a block whose expansion and projection weights (each thread reads all of
#: them, split by rows) outweigh this many times the expanded rows a thread writes is split by its
#: expanded channels instead (:func:`weight_bound`), each thread reading its share of the weights.
#: MobileNetV2 at 2 threads, by rows against three stages apart: 14x14 blocks of 96 -> 576 channels
#: (ratio 2.0) 1.09-1.12x, 7x7 ones (13) 1.0-1.04x; 14x14 of 64 -> 384 (1.3) 0.83-0.88x, 28x28 and
#: larger maps 0.78-1.08x; 64 -> 384 -> 96 (1.63) 0.89-0.97x. Split by channels against apart the
#: blocks past the ratio ran 0.82-0.89x; below it, by channels ran 1.04-2.2x the rows' time (their
#: expanded maps no longer fit a thread's cache)
APART_RATIO = 1.8


#: the depthwise kernels a block fuses (the stencils of :mod:`~inference.kernels.channels_last`)
KERNELS = (3, 5)


def _window(spatial, attrs: dict, where: str, kernel: tuple[int, int]):
    return conv_window(spatial, kernel, {"strides": attrs.get("strides"), "pads": attrs.get("pads")}, where)


def _shape(node: Node, types: list) -> list:
    x, wd, w2 = types[0], types[3] if len(types) > 3 else None, types[5] if len(types) > 5 else None
    if not isinstance(x, TensorType) or not isinstance(w2, TensorType) or x.rank != 4 or w2.rank != 4:
        return [None]
    kernel = tuple(wd.shape[:2]) if isinstance(wd, TensorType) and wd.rank == 4 else None
    if all(isinstance(d, int) for d in x.shape[1:3]) and kernel and all(isinstance(d, int) for d in kernel):
        out = _window(x.shape[1:3], node.attrs, f"{OP} {node.label()}", kernel).out_shape
    else:
        out = (None, None)
    return [TensorType(x.elem_type, (x.shape[0],) + tuple(out) + (w2.shape[3],))]


register_schema(OpSchema(OP, DOMAIN, 1, (FormalParam("X"), FormalParam("W1", optional=True),
                                         FormalParam("B1", optional=True), FormalParam("Wd"),
                                         FormalParam("Bd", optional=True), FormalParam("W2"),
                                         FormalParam("B2", optional=True), FormalParam("Z", optional=True)),
                         (FormalParam("Y"),), {"strides": None, "pads": None, **_STAGE_ATTRS, **EPILOGUE_ATTRS},
                         shape_rule=_shape))


@register(OP, since=1, domain=DOMAIN)
def inverted_residual_reference(x, w1=None, b1=None, wd=None, bd=None, w2=None, b2=None, z=None, *, strides=None,
                                pads=None, **epilogues):
    """The three FusedConvNHWC the block fuses, apart."""
    _required(wd, w2)
    _check(x.shape, None if w1 is None else w1.shape, wd.shape, w2.shape, None if z is None else z.shape)
    e = x if w1 is None else fused_conv_nhwc_reference(x, w1, b1, **stage_epilogue(epilogues, "expand_"))
    d = fused_conv_nhwc_reference(e, wd, bd, group=wd.shape[3], kernel_shape=list(wd.shape[:2]), strides=strides,
                                  pads=pads, **stage_epilogue(epilogues, "depthwise_"))
    return fused_conv_nhwc_reference(d, w2, b2, z, **stage_epilogue(epilogues, ""))


def _required(wd, w2) -> None:
    if wd is None or w2 is None:
        raise KernelError(f"{OP}: the depthwise weight Wd (input 3) and the projection weight W2 (input 5) are "
                          f"required, got {'no Wd' if wd is None else 'no W2'}")


def _check(x: tuple, w1: tuple | None, wd: tuple, w2: tuple, z: tuple | None) -> None:
    """The stages' shapes agree (a wrong feed named, not an index out of bounds)."""
    c = x[3] if len(x) == 4 else None
    e = c if w1 is None else (w1[3] if len(w1) == 4 and w1[:3] == (1, 1, c) else None)
    if (len(x) != 4 or e is None or wd not in [(k, k, 1, e) for k in KERNELS] or len(w2) != 4
            or w2[:3] != (1, 1, e) or (z is not None and len(z) != 4)):
        raise KernelError(f"{OP}: shapes do not chain: X {x} (N, H, W, C), W1 {w1} (1, 1, C, E) or absent, "
                          f"Wd {wd} (k, k, 1, E) for k in {KERNELS}, W2 {w2} (1, 1, E, M), Z {z} (N, OH, OW, M) "
                          f"or absent")


# -- the kernel -------------------------------------------------------------------------------------------
@threaded_kernel()
def _blocks(x, x3, dims, expand, e_wp, e_koff, e_bias, e_lim, d_wt, d_bias, d_code, d_alpha, d_beta, d_lim, d_finish,
            p_wp, p_koff, p_bias, z, has_z, p_lim, y, ring, ring_flat, dbuf, dbuf_flat, e_tail, p_tail, zero, nchunks):
    """The block over ``nchunks`` parallel runs of consecutive (image, band) items; ``x`` flat and as
    ``x3`` (N, H, W*C). ``dims``: n, h, w, cin,
    c (expanded channels), m, oh, ow, sh, sw, ph, pw, band, e_mr, e_nv, p_mr, p_nv, 0, 1, k (the
    depthwise kernel's size, one of :data:`KERNELS`). Per run: ``ring`` (slots, W*C) holds expanded
    row i in slot i % slots; ``dbuf`` (band, OW*C) the band's depthwise rows."""
    n, h, w, cin, c, m, oh, ow, sh, sw, ph, pw, band, e_mr, e_nv, p_mr, p_nv = (
        dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7], dims[8], dims[9], dims[10],
        dims[11], dims[12], dims[13], dims[14], dims[15], dims[16])
    k = dims[19]
    # 0, 1 and False as values, not literals: numba compiles a callee again for literal arguments (a
    # second _product with its six tiles, a second stencil row: ~4 s more of empty-cache compile)
    zero_i, one_i = dims[17], dims[18]
    no_z = zero_i != 0
    slots = ring.shape[1]
    bands = -(-oh // band)
    items = n * bands
    for ch in numba.prange(nchunks):
        image, done = -1, 0  # the image whose rows [.., done) are in the ring
        for it in range(ch * items // nchunks, (ch + 1) * items // nchunks):
            b, o0 = it // bands, (it % bands) * band
            o1 = min(oh, o0 + band)
            if expand:
                i0 = max(0, o0 * sh - ph)
                i1 = min(h, (o1 - 1) * sh - ph + k)
                start = done if image == b and done > i0 else i0
                while start < i1:  # expand the rows not in the ring yet, in runs of consecutive slots
                    s0 = start % slots
                    stop = min(i1, start + slots - s0)
                    matrix_product(x, (b * h + start) * w * cin, (stop - start) * w, e_tail[ch], e_koff, e_wp,
                                   e_bias, zero, no_z, e_lim[0], e_lim[1], ring_flat[ch], s0 * w * c, c, e_mr, e_nv)
                    start = stop
                image, done = b, i1
            for yl in range(o1 - o0):
                iy = (o0 + yl) * sh - ph
                r0 = _input_row(ring, x3, expand, ch, b, iy, slots, h, zero)
                r1 = _input_row(ring, x3, expand, ch, b, iy + 1, slots, h, zero)
                r2 = _input_row(ring, x3, expand, ch, b, iy + 2, slots, h, zero)
                if k == 3:
                    depthwise3x3_row(r0, r1, r2, d_wt, d_bias, dbuf[ch, yl], zero, no_z, c, sw, one_i, pw, d_code,
                                     d_alpha, d_beta, d_lim[0], d_lim[1], d_finish)
                else:
                    r3 = _input_row(ring, x3, expand, ch, b, iy + 3, slots, h, zero)
                    r4 = _input_row(ring, x3, expand, ch, b, iy + 4, slots, h, zero)
                    depthwise5x5_row(r0, r1, r2, r3, r4, d_wt, d_bias, dbuf[ch, yl], zero, no_z, c, sw, one_i, pw,
                                     d_code, d_alpha, d_beta, d_lim[0], d_lim[1], d_finish)
            matrix_product(dbuf_flat[ch], zero_i, (o1 - o0) * ow, p_tail[ch], p_koff, p_wp, p_bias, z, has_z,
                           p_lim[0], p_lim[1], y, (b * oh + o0) * ow * m, m, p_mr, p_nv)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _input_row(ring, x3, expand, ch, b, iy, slots, h, zero):
    """Input row ``iy`` of the depthwise stage: the expanded row in the ring, the block's input
    row (no expansion), or zeros outside the image."""
    if iy < 0 or iy >= h:
        return zero
    return ring[ch, iy % slots] if expand else x3[b, iy]


def _band(oh: int, ow: int, sh: int, row_bytes: int, k: int) -> int:
    """Output rows per band: as many as keep the ring of expanded rows within :data:`BAND_BYTES`, but
    at least :data:`MIN_BAND_PIXELS` outputs. Why the floor: each band's projection reads all its
    weights again, and a band of one 7-pixel row ran its 6-pixel tiles half empty: MobileNetV2's
    14x14 -> 7x7 block ran 1.12x slower fused than apart that way."""
    fits = (BAND_BYTES // row_bytes - k + sh) // sh
    return max(1, min(oh, max(fits, -(-MIN_BAND_PIXELS // ow))))


def _even_band(band: int, oh: int, per_image: int) -> int:
    """``band`` shrunk so an image's bands come in a multiple of ``per_image`` equal runs (the
    threads sharing one image at a small batch), each of whole bands."""
    if per_image <= 1:
        return band
    runs = -(-(-(-oh // band)) // per_image) * per_image
    return -(-oh // runs)


class _Stage:
    """A 1x1 stage's tile, clamp and padded bias/weight getters."""

    def __init__(self, k: int, m: int, attrs: dict, stage: str, where: str, tile: tuple[int, int] | None = None):
        e = stage_epilogue(attrs, stage)
        clamps, amin, amax = clamp_epilogue(activation_code(e["activation"]), float(e["alpha"]), float(e["beta"]))
        if not clamps:
            name = {"expand_": "expansion", "": "projection"}[stage]
            raise KernelError(f"{where}: the {name}'s activation {e['activation']!r} is not a clamp; {OP} fuses "
                              f"clamps (none, Relu, Clip) only")
        self.k, self.m = k, m
        self.mr, self.nv = tile or tile_shape(m)
        self.nl = self.nv * LANES
        self.lim = np.array([amin, amax], np.float32)
        self._bias: tuple = (None, None)

    def weight(self, w: np.ndarray, constant: bool) -> tuple[np.ndarray, np.ndarray]:
        return padded_weight(np.ascontiguousarray(w, np.float32).reshape(self.k, self.m), self.nl,
                             w if constant else None)

    def bias(self, b: np.ndarray | None, constant: bool) -> np.ndarray:
        if constant and b is not None and self._bias[0] is b:
            return self._bias[1]
        bp = padded_bias(b, self.m, -(-self.m // self.nl) * self.nl)
        if constant:
            self._bias = (b, bp)
        return bp


def prepare_inverted_residual(x_shape: tuple, w1_shape: tuple | None, w2_shape: tuple, attrs: dict,
                              constant_weights: bool, kernel: tuple[int, int], where: str = OP):
    """The call ``(x, w1, b1, wd, bd, w2, b2, z) -> y`` for these shapes (``kernel``: the depthwise
    weight's), everything that follows from them settled once (the window, tiles, band, dims)."""
    n, h, w, cin = x_shape
    c = cin if w1_shape is None else w1_shape[3]
    m = w2_shape[3]
    win = _window((h, w), attrs, where, kernel)
    k = win.kernel[0]
    if win.kernel[1] != k or k not in KERNELS or win.dilations != (1, 1):
        raise KernelError(f"{where}: a square depthwise of size {KERNELS} with dilation 1 only, got {win.kernel}, "
                          f"{win.dilations}")
    (oh, ow), (sh, sw), (ph, pw) = win.out_shape, win.strides, win.pads_begin
    expand = None if w1_shape is None else _Stage(cin, c, attrs, "expand_", where)
    project = _Stage(c, m, attrs, "", where)
    d = stage_epilogue(attrs, "depthwise_")
    d_code, d_alpha, d_beta = activation_code(d["activation"]), float(d["alpha"]), float(d["beta"])
    clamps, amin, amax = clamp_epilogue(d_code, d_alpha, d_beta)
    if not clamps:  # the activation in a pass over each row
        amin, amax = np.float32(-np.inf), np.float32(np.inf)
    d_lim = np.array([amin, amax], np.float32)
    band = _band(oh, ow, sh, w * c * 4, k)
    slots = (band - 1) * sh + k
    e_mr, e_nv = (expand.mr, expand.nv) if expand else (1, 1)
    dims_base = [n, h, w, cin, c, m, oh, ow, sh, sw, ph, pw]
    no_z = np.zeros(1, np.float32)
    empty = np.zeros(1, np.float32)
    empty_koff = np.zeros(1, np.int64)
    zero_row = np.zeros(w * c, np.float32)  # read only: the rows above and below the image
    out_shape = (n, oh, ow, m)

    apart: list = []  # the stages as three calls, made when first needed
    splits: dict = {}  # threads -> the block split among them by expanded channels
    bands: dict = {}  # threads -> band_plan(threads)
    last = LastWeights()  # constant weights: their kernel arguments, derived once

    def band_plan(threads: int) -> tuple:
        """The parallel runs, the dims table and the scratch shapes at ``threads`` threads."""
        bnd = _even_band(band, oh, -(-threads // n))
        nchunks = max(1, min(n * -(-oh // bnd), threads))
        dims = np.array(dims_base + [bnd, e_mr, e_nv, project.mr, project.nv, 0, 1, k], np.int64)
        return (nchunks, dims, (nchunks, slots if expand else 1, w * c), (nchunks, bnd, ow * c),
                (nchunks, max(e_mr * cin, 1)), (nchunks, project.mr * c))

    def weights(w1, b1, wd, bd, w2, b2) -> tuple:
        """The kernel's weight arguments: the 1x1 stages' panels and padded biases, the depthwise flat."""
        if expand is not None:
            e_wp, e_koff = expand.weight(w1, constant_weights)
            e_bias, e_lim = expand.bias(b1, constant_weights), expand.lim
        else:
            e_wp, e_koff, e_bias, e_lim = empty, empty_koff, empty, project.lim
        p_wp, p_koff = project.weight(w2, constant_weights)
        return (e_wp, e_koff, e_bias, e_lim, np.ascontiguousarray(wd, np.float32).reshape(-1), _vector(bd, c),
                p_wp, p_koff, project.bias(b2, constant_weights))

    def run(x, w1, b1, wd, bd, w2, b2, z):
        if n == 0:  # an empty batch: nothing to compute (the bands below divide by n)
            return np.empty(out_shape, np.float32)
        threads = kernel_threads()
        if weight_bound(n * h * w, cin if expand else 0, c, m, threads):
            if expand is None:
                if not apart:
                    apart.append(_stages_apart(x_shape, w1_shape, w2_shape, win, attrs, constant_weights))
                return apart[0](x, w1, b1, wd, bd, w2, b2, z)
            split = splits.get(threads)
            if split is None:
                split = splits[threads] = ChannelSplit(
                    x_shape, c, m, (oh, ow), k, (sh, sw), (ph, pw),
                    _Stage(cin, c, attrs, "expand_", where, expansion_tile(c, threads)), (project.mr, project.nv),
                    threads)
            return split(x, w1, b1, wd, _vector(bd, c), d_code, d_alpha, d_beta, d_lim, not clamps, w2, _vector(b2, m),
                         z, project.lim, constant_weights)
        plan = bands.get(threads)
        if plan is None:
            plan = bands[threads] = band_plan(threads)
        nchunks, dims, ring_shape, dbuf_shape, e_tail_shape, p_tail_shape = plan
        e_wp, e_koff, e_bias, e_lim, d_wt, d_bias, p_wp, p_koff, p_bias = (
            last.get((w1, b1, wd, bd, w2, b2), lambda: weights(w1, b1, wd, bd, w2, b2)) if constant_weights
            else weights(w1, b1, wd, bd, w2, b2))
        ring = new_scratch(ring_shape)
        dbuf = new_scratch(dbuf_shape)
        y = new_output(out_shape)
        zz = no_z if z is None else np.ascontiguousarray(z, np.float32).reshape(-1)
        kernel = _blocks.parallel if threads > 1 else _blocks.serial
        xc = np.ascontiguousarray(x, np.float32)
        kernel(xc.reshape(-1), xc.reshape(n, h, w * cin), dims, expand is not None, e_wp, e_koff, e_bias, e_lim,
               d_wt, d_bias, d_code, d_alpha, d_beta, d_lim, not clamps, p_wp, p_koff, p_bias, zz, z is not None,
               project.lim, y.reshape(-1), ring, ring.reshape(nchunks, -1), dbuf, dbuf.reshape(nchunks, -1),
               new_scratch(e_tail_shape), new_scratch(p_tail_shape), zero_row, nchunks)
        return y

    return run


def weight_bound(pixels: int, expand_in: int, c: int, m: int, threads: int) -> bool:
    """Whether a block over ``pixels`` input pixels (expansion from ``expand_in`` channels, 0 for
    none, to ``c``; projection to ``m``) has weights enough to be split otherwise than by rows at
    ``threads`` (:data:`APART_RATIO`): by its expanded channels
    (:class:`~inference.kernels.inverted_residual_channels.ChannelSplit`), or, with no expansion to
    split, as its stages apart."""
    return threads > 1 and 4 * c * (m + expand_in) > APART_RATIO * (pixels / threads) * c * 4


def _stages_apart(x_shape: tuple, w1_shape: tuple | None, w2_shape: tuple, win, attrs: dict, constant_weights: bool):
    """The block as its two or three convolutions, each parallel over its own tiles."""
    n, h, w, cin = x_shape
    c = cin if w1_shape is None else w1_shape[3]
    oh, ow = win.out_shape

    def stage(shape: tuple, w_shape: tuple, window, group: int, prefix: str):
        e = stage_epilogue(attrs, prefix)
        return prepare_conv_nhwc(shape, w_shape, window, group, activation_code(e["activation"]), float(e["alpha"]),
                                 float(e["beta"]), constant_weights)

    pointwise = {"strides": None, "pads": None}
    expand = None if w1_shape is None else stage(x_shape, w1_shape, conv_window((h, w), w1_shape, pointwise, OP), 1,
                                                 "expand_")
    depthwise = stage((n, h, w, c), tuple(win.kernel) + (1, c), win, c, "depthwise_")
    project = stage((n, oh, ow, c), w2_shape, conv_window((oh, ow), w2_shape, pointwise, OP), 1, "")

    def run(x, w1, b1, wd, bd, w2, b2, z):
        e = x if expand is None else expand(x, w1, b1, None)
        return project(depthwise(e, wd, bd, None), w2, b2, z)

    return run


def _vector(b: np.ndarray | None, c: int) -> np.ndarray:
    return np.zeros(c, np.float32) if b is None else np.ascontiguousarray(b, np.float32).reshape(c)


def _binder(fn, constant_weights: bool = False):
    """The plan-time ``bind``: attributes once per node, the call once per input shapes; inputs off
    the fast path (not float32) go to the reference kernel."""

    def bind(**attrs):
        calls: dict[tuple, object] = {}

        def run(x, w1=None, b1=None, wd=None, bd=None, w2=None, b2=None, z=None):
            _required(wd, w2)
            if any(a is not None and a.dtype != np.float32 for a in (x, w1, wd, w2)):
                return inverted_residual_reference(x, *map(source, (w1, b1, wd, bd, w2, b2)), z, **attrs)
            key = (x.shape, None if w1 is None else w1.shape, wd.shape, w2.shape, None if z is None else z.shape)
            call = calls.get(key)
            if call is None:
                _check(*key)
                call = prepare_inverted_residual(x.shape, key[1], w2.shape, attrs, constant_weights, wd.shape[:2])
                expected = (x.shape[0],) + _window(x.shape[1:3], attrs, OP, wd.shape[:2]).out_shape + (w2.shape[3],)
                if key[4] is not None and key[4] != expected:
                    raise KernelError(f"{OP}: residual Z has shape {key[4]}, the output {expected}")
                call = remember(calls, key, call)
            return call(x, w1, b1, wd, bd, w2, b2, z)

        return run

    return bind


def _constant_weights(node: Node, graph) -> bool:
    """:func:`~inference.kernels.conv.handles`, and every weight a float32 initializer no feed
    overrides (the kind that keeps their panels)."""
    weights = [node.inputs[i] for i in (1, 3, 5) if len(node.inputs) > i and node.inputs[i]]
    return handles(node, graph) and all(
        (w := constant_weight(graph, name)) is not None and w.dtype == np.float32 and w.ndim == 4 for name in weights)


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=handles, bind=_binder)
def inverted_residual(x, w1=None, b1=None, wd=None, bd=None, w2=None, b2=None, z=None, **attrs):
    return _binder(inverted_residual)(**attrs)(x, w1, b1, wd, bd, w2, b2, z)


@register(OP, since=1, domain=DOMAIN, kind=PACKED, applies=_constant_weights,
          bind=functools.partial(_binder, constant_weights=True))
def inverted_residual_packed(x, w1=None, b1=None, wd=None, bd=None, w2=None, b2=None, z=None, **attrs):
    """The weights are constant initializers: their panels are kept from run to run."""
    return _binder(inverted_residual_packed, constant_weights=True)(**attrs)(x, w1, b1, wd, bd, w2, b2, z)
