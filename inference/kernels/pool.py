"""Fast 2-D pooling (Max/Average, their Global forms) for float32 NCHW, as numba loops; max pools
also on the uint8 / int8 tensors of quantized models, where a window reads no padding.

Why: the reference pools reduce a strided window view, which numpy walks element by element
through a 6-D iterator; here each output row is a running max/sum over the kernel taps read
through contiguous slices. Geometry (pads, auto_pad, ceil_mode) comes from ``inference.ops._window``.

Small tensors (a batch-1 CNN's 2x2 pools) are dominated by fixed costs, so the geometry is
resolved once per distinct (input shape, attributes) and memoised, and windows that need no
padding are read straight from the input (no padded copy per channel).
"""
from __future__ import annotations

import functools

import numba
import numpy as np

from inference.ir import Graph, Node, TensorType
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.conv import phase_planes
from inference.ops import pool as reference
from inference.ops._memo import remember
from inference.ops._window import window_geometry
from inference.ops.registry import register

POOL_2X2, POOL_UNPADDED, POOL_PADDED, POOL_ROWS, POOL_GLOBAL, POOL_3X3S2 = range(6)  # the kernel a plan runs


@numba.njit(cache=True, error_model="numpy", inline="always")
def max_nan(a, b):
    """``np.maximum`` of two floats: NaN when either is (the reference's max pool). Python's
    ``max(a, b)`` keeps ``a`` when ``b`` is NaN, so pools folding with it dropped a NaN in any tap
    but a window's first (as onnxruntime's pools still do). Branch-free, so the folds still
    vectorise, but at a cost where they were compute-bound: the NCHW 3x3/2 max fold on 64x112x112
    ran 350-380 us against 195-210 (one thread, alone), a 2x2/2 on 32x28x28 5.1 against 4.4 us.
    Skipping it for rows without NaN (a count per row first) ran slower still: the count did not
    vectorise beside the fold."""
    return a if (a > b) | (a != a) else b


@numba.njit(cache=True, error_model="numpy", inline="always")
def fold_tap(out, src, ow, first, is_max):
    """One contiguous tap into an output row: the first tap copies, later ones max or add
    (the vectorised inner step of both general pooling kernels and the channels-last one,
    :mod:`inference.kernels.pool_nhwc`)."""
    if first:
        for k in range(ow):
            out[k] = src[k]
    elif is_max:
        for k in range(ow):
            out[k] = max_nan(out[k], src[k])
    else:
        for k in range(ow):
            out[k] += src[k]


@threaded_kernel()
def pool2d(x, kh, kw, sh, sw, dh, dw, ph, pw, hp, wp, y, is_max):
    """Max (``is_max``) or sum pooling of ``x`` (N, C, H, W) into ``y`` (N, C, OH, OW).

    Each channel is padded (-inf for max, 0 for sum) and split by column phase like the depthwise
    conv, so every tap of an output row is one contiguous slice folded into the row in a
    vectorised loop (a per-tap bounds check per output ran ~10x slower).
    """
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    fill = -np.inf if is_max else 0.0
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        planes = phase_planes(x, b, ch, ph, pw, hp, wp, sw, fill)
        for yo in range(oh):
            out = y[b, ch, yo]
            for i in range(kh):
                for j in range(kw):
                    src = planes[(j * dw) % sw, yo * sh + i * dh, (j * dw) // sw:]
                    fold_tap(out, src, ow, i == 0 and j == 0, is_max)


@threaded_kernel()
def pool2d_unpadded(x, kh, kw, sh, sw, dh, dw, y, is_max):
    """:func:`pool2d` for windows that all lie inside ``x``: taps read ``x``'s rows in place.

    Skips the padded phase-plane copy, which cost as much as the pooling on small planes; stride 1
    reads contiguous slices (vectorised), other strides gather. Measured against :func:`pool2d`:
    1.4x on 3x3/1 (8x14x14 to 64x56x56), 1.05-1.8x on 2x2/2 (8x14x14 to 32x112x112, batch 32).
    """
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        for yo in range(oh):
            out = y[b, ch, yo]
            for i in range(kh):
                row = x[b, ch, yo * sh + i * dh]
                for j in range(kw):
                    off = j * dw
                    first = i == 0 and j == 0
                    if sw == 1:
                        fold_tap(out, row[off:], ow, first, is_max)
                    elif first:
                        for k in range(ow):
                            out[k] = row[k * sw + off]
                    elif is_max:
                        for k in range(ow):
                            out[k] = max_nan(out[k], row[k * sw + off])
                    else:
                        for k in range(ow):
                            out[k] += row[k * sw + off]


@threaded_kernel()
def pool2x2s2(x, y, is_max):
    """2x2 stride-2 max (``is_max``) or average pooling of windows inside ``x`` (N, C, H, W) into ``y``.

    The commonest pool of small CNNs, specialised: each output is its four taps in one expression,
    indexed straight into the channel plane, which LLVM vectorises as interleaved loads. Slicing a
    row per output row and tap (as the general kernels do) cost ~1 ns per input element on a 28x28
    map, most of a batch-1 pool; this runs at ~0.2 ns.
    """
    n, c = x.shape[0], x.shape[1]
    oh, ow = y.shape[2], y.shape[3]
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        xp, yp = x[b, ch], y[b, ch]
        for yo in range(oh):
            i = 2 * yo
            if is_max:
                for xo in range(ow):
                    j = 2 * xo
                    yp[yo, xo] = max_nan(max_nan(xp[i, j], xp[i, j + 1]), max_nan(xp[i + 1, j], xp[i + 1, j + 1]))
            else:
                for xo in range(ow):
                    j = 2 * xo
                    yp[yo, xo] = (xp[i, j] + xp[i, j + 1] + xp[i + 1, j] + xp[i + 1, j + 1]) * np.float32(0.25)


@threaded_kernel()
def pool3x3s2(x, ph, pw, y, is_max):
    """3x3 stride-2 max (``is_max``) or sum pooling of ``x`` (N, C, H, W) into ``y``: the stem pool of
    ResNet, squeezenet and shufflenet, and shufflenet's average pools. Each output folds its nine
    taps read straight from three input rows, in a loop LLVM vectorises as stride-2 interleaved
    loads. A row above or below the image reads the nearest row inside instead, which lies in the
    same window (the plan checks every window starts inside): a max is unchanged, a sum weighs
    that row by 0; border columns skip their outside taps. The separable kernel
    (:func:`pool_rows`), whose stride-2 fold stayed scalar, took 1.2-2.3x this kernel's time on
    ResNet's and squeezenet's first max pools, 2-6x on squeezenet's 27x27 one and 1.7-3x on
    shufflenet's average pools (one thread, alternating runs)."""
    n, c, h, w = x.shape
    ow = y.shape[3]
    lo = min(ow, (pw + 1) // 2)  # first column whose taps are all inside
    hi = max(lo, min(ow, (w - 3 + pw) // 2 + 1))
    for r in numba.prange(n * c):
        if is_max:
            _max3x3s2_plane(x[r // c, r % c], ph, pw, y[r // c, r % c], lo, hi)
        else:
            _sum3x3s2_plane(x[r // c, r % c], ph, pw, y[r // c, r % c], lo, hi)


# One plane per call, each a function of its own: the parallel twin's lowering cannot devectorise
# it, and a call per row (views passed and reference-counted) cost 100-170 ns, more than a row's
# work on squeezenet's 54-wide rows. The interior columns run from index 0 of sliced rows: LLVM
# vectorised only that form (not ``j = 2*xo - pw``). A first version that shared one plane
# function between max and sum, its rows picked by a helper returning them (and its border
# columns listed per row), ran 2-3x slower than these two, kept apart and spelled out.
@numba.njit(cache=True, error_model="numpy", nogil=True)
def _max3x3s2_plane(xp, ph, pw, yp, lo, hi):
    h, w = xp.shape
    oh, ow = yp.shape
    first = 2 * lo - pw
    for yo in range(oh):
        top = 2 * yo - ph
        r0, r1, r2 = xp[min(max(top, 0), h - 1)], xp[min(max(top + 1, 0), h - 1)], xp[min(max(top + 2, 0), h - 1)]
        out = yp[yo]
        s0, s1, s2, inner = r0[first:], r1[first:], r2[first:], out[lo:hi]
        for k in range(hi - lo):
            j = 2 * k
            a = max_nan(max_nan(s0[j], s1[j]), s2[j])
            b1 = max_nan(max_nan(s0[j + 1], s1[j + 1]), s2[j + 1])
            c2 = max_nan(max_nan(s0[j + 2], s1[j + 2]), s2[j + 2])
            inner[k] = max_nan(max_nan(a, b1), c2)
        _border_3x3s2(r0, r1, r2, 1.0, 1.0, 1.0, out, pw, w, 0, lo, True)
        _border_3x3s2(r0, r1, r2, 1.0, 1.0, 1.0, out, pw, w, hi, ow, True)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sum3x3s2_plane(xp, ph, pw, yp, lo, hi):
    h, w = xp.shape
    oh, ow = yp.shape
    first = 2 * lo - pw
    for yo in range(oh):
        top = 2 * yo - ph
        r0, r1, r2 = xp[min(max(top, 0), h - 1)], xp[min(max(top + 1, 0), h - 1)], xp[min(max(top + 2, 0), h - 1)]
        f0 = np.float32(1.0) if 0 <= top < h else np.float32(0.0)
        f1 = np.float32(1.0) if 0 <= top + 1 < h else np.float32(0.0)
        f2 = np.float32(1.0) if 0 <= top + 2 < h else np.float32(0.0)
        out = yp[yo]
        s0, s1, s2, inner = r0[first:], r1[first:], r2[first:], out[lo:hi]
        for k in range(hi - lo):
            j = 2 * k
            inner[k] = (f0 * (s0[j] + s0[j + 1] + s0[j + 2]) + f1 * (s1[j] + s1[j + 1] + s1[j + 2])
                        + f2 * (s2[j] + s2[j + 1] + s2[j + 2]))
        _border_3x3s2(r0, r1, r2, f0, f1, f2, out, pw, w, 0, lo, False)
        _border_3x3s2(r0, r1, r2, f0, f1, f2, out, pw, w, hi, ow, False)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _border_3x3s2(r0, r1, r2, f0, f1, f2, out, pw, w, lo, hi, is_max):
    """Columns [lo, hi) of a 3x3/2 row, taps left or right of the image skipped; a sum weighs row i
    by f_i (inlined: a call per row cost more than its few columns)."""
    for xo in range(lo, hi):
        m = np.float32(-np.inf) if is_max else np.float32(0.0)
        for t in range(3):
            j = 2 * xo - pw + t
            if 0 <= j < w:
                if is_max:
                    m = max_nan(m, max_nan(max_nan(r0[j], r1[j]), r2[j]))
                else:
                    m = m + (f0 * r0[j] + f1 * r1[j] + f2 * r2[j])
        out[xo] = m


@threaded_kernel()
def pool_rows(x, kh, kw, sh, sw, ph, pw, y, scratch, is_max):
    """Max (``is_max``) or sum pooling (no dilation) of ``x`` (N, C, H, W) into ``y``, separated:
    per output row, the max or sum over its ``kh`` input rows first (contiguous, vectorised), into
    a padded row (-inf or 0), then each output folds ``kw`` neighbours of that row (read from L1).
    The padded-plane kernel folded every tap over strided slices: 3x3/2 max pools (ResNet's stem,
    squeezenet, shufflenet) ran ~5x slower than onnxruntime's, shufflenet's 3x3/2 average pools
    3-5x. ``scratch`` holds one padded row per plane."""
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    wpad = scratch.shape[1]
    lo, hi = min(pw, wpad), min(wpad, pw + w)
    fill = np.float32(-np.inf) if is_max else np.float32(0.0)
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        vm, xp, yp = scratch[r], x[b, ch], y[b, ch]
        inner = vm[lo:hi]  # the columns inside x: indexed by loop counters only, so the fold vectorises
        for yo in range(oh):
            for u in range(wpad):
                vm[u] = fill
            for i in range(kh):
                iy = yo * sh - ph + i
                if 0 <= iy < h:
                    row = xp[iy]
                    if is_max:
                        for u in range(hi - lo):
                            inner[u] = max_nan(inner[u], row[u])
                    else:
                        for u in range(hi - lo):
                            inner[u] += row[u]
            out = yp[yo]
            if kw == 3 and sw == 2:
                if is_max:
                    for xo in range(ow):
                        out[xo] = max_nan(max_nan(vm[2 * xo], vm[2 * xo + 1]), vm[2 * xo + 2])
                else:
                    for xo in range(ow):
                        out[xo] = vm[2 * xo] + vm[2 * xo + 1] + vm[2 * xo + 2]
            else:
                for xo in range(ow):
                    m = vm[xo * sw]
                    for j in range(1, kw):
                        m = max_nan(m, vm[xo * sw + j]) if is_max else m + vm[xo * sw + j]
                    out[xo] = m


@threaded_kernel(fastmath={"reassoc"})
def global_pool(x, y, is_max):
    """Global max or average over each (H*W) plane of ``x`` (N, C, P) into ``y`` (N, C). The sums
    may be reassociated (float64 vector accumulators): in order they stayed scalar, and
    squeezenet's 1000 x 13x13 average took 0.13-0.2 ms against onnxruntime's 0.06."""
    n, c, p = x.shape
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        row = x[b, ch]
        if is_max:  # NaNs counted apart: a max_nan fold does not vectorise as a reduction (2.7x slower)
            acc, nans = row[0], 0
            for k in range(p):
                v = row[k]
                acc = max(acc, v)
                nans += v != v
            y[b, ch] = acc if nans == 0 else np.nan
        else:
            s = 0.0
            for k in range(p):
                s += row[k]
            y[b, ch] = s / p


def _handles(node: Node, graph: Graph, elem_types: tuple = (1,)) -> bool:
    t = graph.type_of(node.inputs[0])
    return (not isinstance(t, TensorType) or (t.elem_type in elem_types and t.rank in (4, None))) \
        and len(node.outputs) == 1


def _handles_max(node: Node, graph: Graph) -> bool:
    """float32, and the uint8 / int8 tensors a quantized model max-pools without dequantizing."""
    return _handles(node, graph, (1, 2, 3))


_EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))
#: the kernels that read only taps inside the image, so never a padding value (-inf has no 8-bit form)
_INSIDE_ONLY = (POOL_GLOBAL, POOL_2X2, POOL_3X3S2, POOL_UNPADDED)


def _fast(x: np.ndarray, is_max: bool = False) -> bool:
    return x.ndim == 4 and (x.dtype == np.float32 or (is_max and x.dtype in _EIGHT_BIT))


def _runs(x: np.ndarray, plan: tuple) -> bool:
    """Whether :func:`_run_plan` computes ``plan`` on ``x`` (8-bit: a max pool reading no padding)."""
    return x.dtype == np.float32 or plan[2] in _INSIDE_ONLY


def _tuple(v):
    return None if v is None else tuple(v)


@functools.lru_cache(maxsize=256)
def _pool_plan(spatial: tuple, kernel_shape: tuple, strides, dilations, pads, auto_pad: str, ceil_mode: int,
               count_include_pad: int, op: str):
    """Output spatial shape, the pool2d geometry ints, the kernel to run (``POOL_*``), (average pools
    off the 2x2 kernel) the read-only float32 divisor and whether it is a max: derived once per
    distinct call, not on every run."""
    win = window_geometry(spatial, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, op)
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = win.kernel, win.strides, win.dilations, win.pads_begin
    end_h, end_w = win.padded_end(spatial)
    hp, wp = ph + spatial[0] + end_h, pw + spatial[1] + end_w + sw
    counts = None
    if op != "MaxPool":  # the reference's own divisor: pads count only if count_include_pad
        counts = reference._window_counts(spatial, win, count_include_pad).astype(np.float32)
        counts.flags.writeable = False
    # in place beat the padded copy everywhere measured but for many strided taps on a large plane
    # (3x3/2 on 64x56x56: 0.92x), where the copy's contiguous reads pay for it
    inside = ph == pw == end_h == end_w == 0
    if inside and (kh, kw) == tuple(spatial) and win.out_shape == (1, 1):
        method = POOL_GLOBAL  # one window over the whole plane (shufflenet's 7x7 head): the global kernel
        counts = None
    elif (kh, kw, sh, sw, dh, dw) == (3, 3, 2, 2, 1, 1) and all(
            p < 3 and (o - 1) * 2 - p < size for o, p, size in zip(win.out_shape, (ph, pw), spatial)):
        method = POOL_3X3S2  # every window starts inside the image: its clamped taps stay in it
    elif inside and (kh, kw, sh, sw, dh, dw) == (2, 2, 2, 2, 1, 1):
        method = POOL_2X2  # every window has its 4 taps: the kernel averages itself, no divisor
        counts = None
    elif dh == dw == 1:
        method = POOL_ROWS
    elif inside and (sw == 1 or kh * kw <= 4 or spatial[0] * spatial[1] <= 1024):
        method = POOL_UNPADDED
    else:
        method = POOL_PADDED
    return win.out_shape, (kh, kw, sh, sw, dh, dw, ph, pw, hp, wp), method, counts, op == "MaxPool"


def _pool(x: np.ndarray, op: str, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode,
          count_include_pad: int = 0) -> np.ndarray | None:
    """The pool by its plan's kernel; None where that kernel would need an 8-bit padding value."""
    plan = _pool_plan(x.shape[2:], tuple(kernel_shape), _tuple(strides), _tuple(dilations), _tuple(pads), auto_pad,
                      ceil_mode, count_include_pad, op)
    return _run_plan(np.ascontiguousarray(x), plan) if _runs(x, plan) else None


def _run_plan(x: np.ndarray, plan) -> np.ndarray:
    out_shape, geo, method, counts, is_max = plan
    y = new_output(x.shape[:2] + out_shape, x.dtype)
    if method == POOL_GLOBAL:
        n, c = x.shape[:2]
        global_pool(x.reshape(n, c, -1), y.reshape(n, c), is_max)
    elif method == POOL_2X2:
        pool2x2s2(x, y, is_max)
    elif method == POOL_3X3S2:
        pool3x3s2(x, geo[6], geo[7], y, is_max)
    elif method == POOL_ROWS:
        kh, kw, sh, sw, _, _, ph, pw = geo[:8]
        scratch = new_scratch((x.shape[0] * x.shape[1], (out_shape[1] - 1) * sw + kw))
        pool_rows(x, kh, kw, sh, sw, ph, pw, y, scratch, is_max)
    elif method == POOL_UNPADDED:
        kh, kw, sh, sw, dh, dw = geo[:6]
        pool2d_unpadded(x, kh, kw, sh, sw, dh, dw, y, is_max)
    else:
        pool2d(x, *geo, y, is_max)
    if counts is not None:
        y /= counts
    return y


def _pool_binder(op: str):
    """The plan-time ``bind`` of a fast pool kernel: attributes resolved once per node, the plan once
    per input shape; anything off the fast path (and MaxPool's Indices output) goes to the kernel."""

    def binder(fn):
        def bind(*, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET", ceil_mode=0,
                 count_include_pad=0, **rest):
            attrs = dict(kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads,
                         auto_pad=auto_pad, ceil_mode=ceil_mode, **rest)
            if op != "MaxPool":
                attrs["count_include_pad"] = count_include_pad
            ctx = rest.get("ctx")
            if kernel_shape is None or (ctx is not None and ctx.num_outputs > 1):
                return functools.partial(fn, **attrs)
            key = (tuple(kernel_shape), _tuple(strides), _tuple(dilations), _tuple(pads), auto_pad, ceil_mode,
                   count_include_pad, op)
            plans: dict[tuple, tuple] = {}

            def run(x):
                if not _fast(x, op == "MaxPool"):
                    return fn(x, **attrs)
                plan = plans.get(x.shape)
                if plan is None:
                    plan = remember(plans, x.shape, _pool_plan(x.shape[2:], *key))
                if not _runs(x, plan):
                    return fn(x, **attrs)
                return _run_plan(np.ascontiguousarray(x), plan)

            return run

        return bind

    return binder


@register("MaxPool", since=1, kind="fast", applies=_handles_max, bind=_pool_binder("MaxPool"))
def max_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET", ceil_mode=0,
             storage_order=0, ctx):
    y = None
    if _fast(x, True) and ctx.num_outputs == 1 and kernel_shape is not None:
        y = _pool(x, "MaxPool", kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if y is None:
        return reference.max_pool(x, kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads,
                                  auto_pad=auto_pad, ceil_mode=ceil_mode, storage_order=storage_order, ctx=ctx)
    return y


@register("AveragePool", since=1, kind="fast", applies=_handles, bind=_pool_binder("AveragePool"))
def average_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
                 ceil_mode=0, count_include_pad=0):
    if not _fast(x) or kernel_shape is None:
        return reference.average_pool(x, kernel_shape=kernel_shape, strides=strides, dilations=dilations,
                                      pads=pads, auto_pad=auto_pad, ceil_mode=ceil_mode,
                                      count_include_pad=count_include_pad)
    return _pool(x, "AveragePool", kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, count_include_pad)


def _global(x: np.ndarray, is_max: bool) -> np.ndarray:
    n, c = x.shape[:2]
    y = new_output((n, c))
    global_pool(np.ascontiguousarray(x).reshape(n, c, -1), y, is_max)
    return y.reshape(n, c, 1, 1)


@register("GlobalAveragePool", since=1, kind="fast", applies=_handles)
def global_average_pool(x):
    return _global(x, False) if _fast(x) else reference.global_average_pool(x)


@register("GlobalMaxPool", since=1, kind="fast", applies=_handles)
def global_max_pool(x):
    return _global(x, True) if _fast(x) else reference.global_max_pool(x)
