"""``edgelearn::SqueezeExciteNHWC``: a squeeze-and-excitation gate (MobileNetV3, EfficientNet) as one op.

``Y = X * gate(reduce(mean_hw(X) @ W1 + B1) @ W2 + B2)``: each image's channel means, a 1x1
reduction with its activation, a 1x1 expansion with the gate's (HardSigmoid, Sigmoid), and X's
channels scaled by the result. Inputs ``(X, W1, B1, W2, B2)``: X (N, H, W, C), W1 (1, 1, C, R) and
W2 (1, 1, R, C) in HWIO, the biases (R) and (C) optional. Attributes: the reduction's epilogue
(``reduce_activation``, ``reduce_alpha``, ``reduce_beta``) and the gate's (FusedConv's
``activation``, ``alpha``, ``beta``). The pass that makes it is
:mod:`inference.passes.squeeze_excite`; the reference runs the four ops apart (the oracle), as does
the standard-ONNX export.

Why one op: apart a gate is four nodes (a global pool, two one-pixel convolutions, a broadcast Mul)
doing a few microseconds of work each behind a kernel call's Python and, at two threads, a parallel
launch; the gate's activation even ran as a pass of its own after its tile. Here one call runs
four steps, each split over the threads when it has work enough: the map's sums by blocks of
pixels, the reduction by blocks of its outputs, the gates by blocks of channels, the scaled map
by blocks of pixels. The weights are read as they are stored (an HWIO 1x1 weight is a row-major
(C, R) matrix), row by row, every image of the batch per row: once per call, not once per image.
The output may take the memory of X where X dies here (``memory_plan.IN_PLACE_OPS``): every
pixel is summed before any is written, and each is read just before it is overwritten.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._jit import kernel_threads, threaded_kernel
from inference.kernels.activations import activate_row, activation_code
from inference.kernels.arena_slot import OVER_FIRST, new_output, new_scratch, overwritten
from inference.kernels.conv import handles
from inference.kernels.fused import DOMAIN, EPILOGUE_ATTRS, prefixed_epilogue, stage_epilogue
from inference.kernels.nhwc import fused_conv_nhwc_reference
from inference.kernels.pool import fold_tap
from inference.kernels.tile_ir import prefetch
from inference.ops._memo import remember
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "SqueezeExciteNHWC"
REDUCE = "reduce_"  # the attribute prefix of the reduction's epilogue
_REDUCE_ATTRS = prefixed_epilogue({}, REDUCE)
#: multiply-adds (or map elements) below which a step runs on one thread: a parallel step costs a
#: launch and a barrier, more than a few thousand multiply-adds take
MIN_PARALLEL_WORK = 16 * 1024
#: blocks of channels start at multiples of this many (a 64-byte line of float32)
ALIGN = 16


#: rows of a product's weights fetched ahead of the one multiplied: a 960-channel gate's two 920 KB
#: weights arrive from memory (MobileNetV3's gates in the model, eight summed, 0 -> 4 -> 8 -> 16
#: rows: one thread 496, 461, 460, 464 us; two threads 435, 396, 360, 349)
PREFETCH_ROWS = 16


def _shape(node: Node, types: list) -> list:
    x = types[0]
    return [x if isinstance(x, TensorType) else None]


register_schema(OpSchema(OP, DOMAIN, 1, (FormalParam("X"), FormalParam("W1"), FormalParam("B1", optional=True),
                                         FormalParam("W2"), FormalParam("B2", optional=True)),
                         (FormalParam("Y"),), {**_REDUCE_ATTRS, **EPILOGUE_ATTRS}, shape_rule=_shape))


def _check(x: tuple, w1: tuple, w2: tuple, b1: tuple | None, b2: tuple | None) -> None:
    """The shapes chain (a wrong feed named, not an index out of bounds)."""
    c = x[3] if len(x) == 4 else None
    r = w1[3] if len(w1) == 4 else None
    if (c is None or r is None or w1 != (1, 1, c, r) or w2 != (1, 1, r, c) or b1 not in (None, (r,))
            or b2 not in (None, (c,))):
        raise KernelError(f"{OP}: shapes do not chain: X {x} (N, H, W, C), W1 {w1} (1, 1, C, R), B1 {b1} (R) or "
                          f"absent, W2 {w2} (1, 1, R, C), B2 {b2} (C) or absent")


def _shapes(x, w1, b1, w2, b2) -> tuple:
    return x.shape, w1.shape, w2.shape, None if b1 is None else b1.shape, None if b2 is None else b2.shape


@register(OP, since=1, domain=DOMAIN)
def squeeze_excite_reference(x, w1, b1=None, w2=None, b2=None, **attrs):
    """The global average pool, the two 1x1 convolutions and the Mul, apart."""
    if w2 is None:
        raise KernelError(f"{OP}: the expansion weight W2 (input 3) is required")
    _check(*_shapes(x, w1, b1, w2, b2))
    pooled = x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
    hidden = fused_conv_nhwc_reference(pooled, w1, b1, **stage_epilogue(attrs, REDUCE))
    return x * fused_conv_nhwc_reference(hidden, w2, b2, **stage_epilogue(attrs, ""))


# -- the kernel -------------------------------------------------------------------------------------------
@threaded_kernel()
def _squeeze_excite(x, y, in_place, w1, b1, w2, b2, scratch, n, hw, c, r, p_cuts, r_cuts, c_cuts, codes, params, pf):
    """``y = x * gate`` for ``x``/``y`` flat (N*HW pixels, C). Four steps, each over its blocks (one
    parallel run per block; a single block runs here, no parallel step): the sums of blocks of
    pixels ``p_cuts`` (of the N*HW) into partial sums per block, the reduction by blocks of its
    outputs ``r_cuts``, the gates by blocks of channels ``c_cuts``, the scaled map by blocks of
    pixels again. Pixels, not channels, for the map: a thread then reads and writes whole rows, as
    the convolutions before and after split theirs (no cache line shared between the threads'
    blocks of channels). ``in_place``: ``y`` is ``x``'s memory. ``scratch``: the
    partial sums (blocks, N, C), the means and the gates (N, C), the reduction's outputs (N, R);
    ``codes``/``params`` the two activations and their (alpha, beta); ``pf`` the weight rows
    prefetched ahead."""
    parts = p_cuts.size - 1
    partial = scratch[:parts * n * c].reshape((parts, n, c))
    at = parts * n * c
    pooled = scratch[at:at + n * c].reshape((n, c))
    gate = scratch[at + n * c:at + 2 * n * c].reshape((n, c))
    hidden = scratch[at + 2 * n * c:at + 2 * n * c + n * r].reshape((n, r))
    if parts == 1:
        _sum_pixels(x, partial[0], hw, c, p_cuts[0], p_cuts[1])
    else:
        for i in numba.prange(parts):
            _sum_pixels(x, partial[i], hw, c, p_cuts[i], p_cuts[i + 1])
    _mean(partial, pooled, hw)
    if r_cuts.size == 2:
        _product_block(pooled, w1, b1, hidden, r_cuts[0], r_cuts[1], codes[0], params[0], params[1], pf)
    else:
        for i in numba.prange(r_cuts.size - 1):
            _product_block(pooled, w1, b1, hidden, r_cuts[i], r_cuts[i + 1], codes[0], params[0], params[1], pf)
    if c_cuts.size == 2:
        _product_block(hidden, w2, b2, gate, c_cuts[0], c_cuts[1], codes[1], params[2], params[3], pf)
    else:
        for i in numba.prange(c_cuts.size - 1):
            _product_block(hidden, w2, b2, gate, c_cuts[i], c_cuts[i + 1], codes[1], params[2], params[3], pf)
    if parts == 1:
        _scale_pixels(x, y, gate, hw, c, p_cuts[0], p_cuts[1], in_place)
    else:
        for i in numba.prange(parts):
            _scale_pixels(x, y, gate, hw, c, p_cuts[i], p_cuts[i + 1], in_place)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _sum_pixels(x, sums, hw, c, p0, p1):
    """``sums[b]`` = the sum of image b's pixels among the flat pixels [p0, p1) (0 for the images
    the block misses). Loops over slices from 0 (as :func:`~inference.kernels.pool.fold_tap`'s): a
    loop indexed ``x[o + k]`` stayed scalar (a 28x28x120 gate took 145 us)."""
    for b in range(sums.shape[0]):
        row = sums[b]
        for k in range(c):
            row[k] = 0
    for p in range(p0, p1):
        fold_tap(sums[p // hw], x[p * c:(p + 1) * c], c, False, False)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _mean(partial, pooled, hw):
    """The blocks' partial sums added up and divided by the pixels per image."""
    n, c = pooled.shape
    for b in range(n):
        out = pooled[b]
        first = partial[0, b]
        for k in range(c):
            out[k] = first[k]
        for i in range(1, partial.shape[0]):
            more = partial[i, b]
            for k in range(c):
                out[k] += more[k]
        for k in range(c):
            out[k] /= hw


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _product_block(a, w, bias, out, m0, m1, code, alpha, beta, pf):
    """``out[:, m0:m1] = act(a @ W[:, m0:m1] + bias)`` for ``a`` (N, K) and ``w`` flat (K, M), M
    ``out``'s width: a row of weights at a time for every image (each weight read once per call),
    the row ``pf`` ahead prefetched (:data:`PREFETCH_ROWS`)."""
    n, k_in = a.shape
    m = out.shape[1]
    width = m1 - m0
    bs = bias[m0:m1]
    for b in range(n):
        o = out[b, m0:m1]
        for j in range(width):
            o[j] = bs[j]
    for kk in range(k_in):
        if pf > 0 and kk + pf < k_in:
            for q in range((kk + pf) * m + m0, (kk + pf) * m + m1, 16):
                prefetch(w, q)
        ws = w[kk * m + m0:kk * m + m1]
        for b in range(n):
            s = a[b, kk]
            o = out[b, m0:m1]
            for j in range(width):
                o[j] += s * ws[j]
    for b in range(n):
        activate_row(out[b, m0:m1], code, alpha, beta)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _scale_pixels(x, y, gate, hw, c, p0, p1, in_place):
    """``y = x * gate`` on the flat pixels [p0, p1), each by its image's gates. ``in_place``: ``y``
    is ``x``'s memory, scaled through ``y`` alone (:func:`~inference.kernels.arena_slot.overwritten`:
    why)."""
    for p in range(p0, p1):
        g = gate[p // hw]
        ys = y[p * c:(p + 1) * c]
        if in_place:
            for k in range(c):
                ys[k] *= g[k]
        else:
            xs = x[p * c:(p + 1) * c]
            for k in range(c):
                ys[k] = xs[k] * g[k]


def _cuts(size: int, work: int, threads: int, align: int = ALIGN) -> np.ndarray:
    """Bounds of the blocks ``size`` items (channels, pixels) split into: one per thread (at
    multiples of ``align`` where the size allows), one block when the step's ``work`` is too small
    to share."""
    blocks = min(threads, max(1, work // MIN_PARALLEL_WORK), max(1, size // align))
    cuts = [0] + [round(size * i / blocks / align) * align for i in range(1, blocks)] + [size]
    return np.array(sorted(set(cuts)), np.int64)


def prepare_squeeze_excite(x_shape: tuple, r: int, attrs: dict):
    """The call ``(x, w1, b1, w2, b2) -> y`` for these shapes, its blocks and activations settled once
    per thread count."""
    n, h, w, c = x_shape
    hw = h * w
    reduce_, gate_ = stage_epilogue(attrs, REDUCE), stage_epilogue(attrs, "")
    codes = np.array([activation_code(reduce_["activation"]), activation_code(gate_["activation"])], np.int64)
    params = np.array([reduce_["alpha"], reduce_["beta"], gate_["alpha"], gate_["beta"]], np.float32)
    zeros_r, zeros_c = np.zeros(r, np.float32), np.zeros(c, np.float32)
    plans: dict[int, tuple] = {}

    def run(x, w1, b1, w2, b2):
        threads = kernel_threads()
        plan = plans.get(threads)
        if plan is None:
            plan = plans[threads] = (_cuts(n * hw, n * hw * c, threads, 1), _cuts(r, n * c * r, threads),
                                     _cuts(c, n * c * r, threads))
        y = new_output(x_shape)
        if y.size == 0:  # an empty batch, map or channel axis: nothing to scale
            return y
        p_cuts, r_cuts, c_cuts = plan
        kernel = _squeeze_excite.parallel if threads > 1 else _squeeze_excite.serial
        xf = _flat(x)
        yf = y.reshape(-1)
        kernel(xf, yf, overwritten(yf, xf) == OVER_FIRST, _flat(w1), zeros_r if b1 is None else _flat(b1), _flat(w2),
               zeros_c if b2 is None else _flat(b2), new_scratch(n * ((p_cuts.size + 1) * c + r)), n, hw, c, r,
               p_cuts, r_cuts, c_cuts, codes, params, PREFETCH_ROWS)
        return y

    return run


def _flat(a: np.ndarray) -> np.ndarray:
    """``a`` as a flat float32 view (a copy only when it is not C-contiguous float32)."""
    if a.flags.c_contiguous and a.dtype == np.float32:
        return a.reshape(-1)
    return np.ascontiguousarray(a, np.float32).reshape(-1)


def _binder(fn):
    """The plan-time ``bind``: attributes once per node, the call once per input shapes; inputs off
    the fast path (not float32) go to the reference kernel."""

    def bind(**attrs):
        calls: dict[tuple, object] = {}

        def run(x, w1, b1=None, w2=None, b2=None):
            if (w2 is None or x.dtype != np.float32 or w1.dtype != np.float32 or w2.dtype != np.float32
                    or (b1 is not None and b1.dtype != np.float32) or (b2 is not None and b2.dtype != np.float32)):
                return squeeze_excite_reference(x, w1, b1, w2, b2, **attrs)
            key = _shapes(x, w1, b1, w2, b2)
            call = calls.get(key)
            if call is None:
                _check(*key)
                call = remember(calls, key, prepare_squeeze_excite(x.shape, w1.shape[3], attrs))
            return call(x, w1, b1, w2, b2)

        return run

    return bind


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=handles, bind=_binder)
def squeeze_excite(x, w1, b1=None, w2=None, b2=None, **attrs):
    return _binder(squeeze_excite)(**attrs)(x, w1, b1, w2, b2)
