"""Sparse kernels: MatMul/Gemm/Conv (and our fused ops) by a constant weight that is mostly zeros.

Why CSR, not block-sparse: magnitude pruning (``compress.prune``) zeroes weights one by one, so
the zeros have no block structure. At 90% random sparsity a 1x4 block is all-zero with
probability 0.9**4 = 0.66, so a 1x4 block format would still store 34% of the blocks, 3.4x the
multiply-adds of CSR; CSR does only the nonzeros' work. What the zeros would add for an inf or a
NaN input (0 * inf is NaN) is added after the loops, by a scan of the input (:func:`zero_weight_nans`).

One format and one loop serve every op: the weight is seen as rows of output channels
(``W^T`` of a matrix product, ``W`` of a convolution) over (input channel, tap row, tap column),
and each nonzero adds ``value * a contiguous run of the input`` into its output row. For a
convolution that is direct convolution: no im2col (the dense path builds a 9x larger column
matrix for a 3x3, which is why sparse wins there from ~60% zeros); strides become extra
channels (the input split by phase), and the output is computed on rows as wide as the input's
so each nonzero is one loop over the whole plane. Matrix products with several rows use the same
loop on ``x^T``; with a few rows a gather-dot per output is faster (no transposes).

A session planned with kind ``"sparse"`` first (``inference.session.CONSTANT_WEIGHT_KINDS``, what
a Predictor plans with) picks these kernels when the weight is a graph initializer no feed
overrides, float32, and at least :data:`MATMUL_SPARSITY`, :data:`POINTWISE_SPARSITY` or
:data:`CONV_SPARSITY` of it is zero: below that the dense BLAS path wins. The CSR form is built
once per weight array when the session plans and reused by every run. That is why the kind is
opt-in: training shares live parameter arrays with its forward sessions and rewrites them in
place between runs, and checking a matrix for changes costs as much as the dense product at
batch 1. :func:`use_sparse_kernels` switches the sparse path off for sessions planned afterwards.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Graph, Node
from inference.kernels import conv as fast_conv
from inference.kernels import fused
from inference.kernels._applies import constant_float32_weight, float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels._prepack import constant_weight, prepacked, source
from inference.kernels.activations import NO_RESIDUAL_2D, activation_code, as_f32, epilogue_cols, epilogue_rows
from inference.ops._window import window_geometry
from inference.ops.matmul import gemm as reference_gemm
from inference.ops.matmul import matmul as reference_matmul
from inference.ops.registry import register

KIND = "sparse"

# Fractions of zeros from which the session runs a layer sparse: the crossovers printed by
# ``env -u OPENBLAS_CORETYPE python benchmarks/sparse.py`` (1 thread, min of 15; 2 cores shared
# with other jobs, load 9-15 while measured). Both sides read the same input; the dense side is
# BLAS (im2col + GEMM for a kxk convolution), the sparse side the loops below.
#: Matrix products (MatMul, Gemm, FusedMatMul): 1024x1024 crosses at 85-90% at batch 1, 85% at 32.
MATMUL_SPARSITY = 0.9
#: 1x1 stride-1 convolutions: 256->256 on 28x28 crosses at 80% (85% in one run of four).
POINTWISE_SPARSITY = 0.8
#: Other 2-D convolutions: 3x3 64->64 on 56x56 crosses at 60% (direct sparse needs no im2col).
CONV_SPARSITY = 0.6
#: Matrix products with at most this many rows use the gather-dot kernel, more rows the
#: transposed one (benchmarks/sparse.py, "rows" table: equal at 4 rows, gather 2x faster at 1).
GATHER_MAX_ROWS = 3

_SETTINGS = {"enabled": True}


def use_sparse_kernels(enabled: bool) -> None:
    """Let sessions planned from now on pick sparse kernels (on by default); off: always dense.

    A module-level switch because the choice is made when a session plans its kernels.
    """
    _SETTINGS["enabled"] = bool(enabled)


# -- the format ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsrWeight:
    """A weight as CSR rows of output channels over (input channel, tap row, tap column)."""

    indptr: np.ndarray  # int64 (rows + 1,)
    chan: np.ndarray  # int32 (nnz,) input channel (a matrix product: the reduction index k)
    ti: np.ndarray  # int32 (nnz,) tap row (0 for matrix products)
    tj: np.ndarray  # int32 (nnz,) tap column
    vals: np.ndarray  # float32 (nnz,)
    rows: int
    #: the same nonzeros by tap ``t = (channel*kh + tap row)*kw + tap column``: the rows storing tap
    #: ``t`` are ``trows[tptr[t]:tptr[t + 1]]`` (ascending), what :func:`zero_weight_nans` reads
    tptr: np.ndarray  # int64 (C*kh*kw + 1,)
    trows: np.ndarray  # int32 (nnz,)

    @property
    def nnz(self) -> int:
        return int(self.vals.size)


def to_csr(w4: np.ndarray) -> CsrWeight:
    """CSR of ``w4`` (rows, C, kh, kw); the nonzeros of a row in (channel, tap) order."""
    if w4.ndim != 4:
        raise KernelError(f"sparse weight must be viewed as (rows, C, kh, kw), got shape {w4.shape}")
    r, c, i, j = np.nonzero(w4)
    indptr = np.zeros(w4.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=w4.shape[0]), out=indptr[1:])
    _, kh, kw = w4.shape[1:]
    tap = (c.astype(np.int64) * kh + i) * kw + j
    taps = w4.shape[1] * kh * kw
    tptr = np.zeros(taps + 1, np.int64)
    np.cumsum(np.bincount(tap, minlength=taps), out=tptr[1:])
    return CsrWeight(indptr, c.astype(np.int32), i.astype(np.int32), j.astype(np.int32),
                     np.ascontiguousarray(w4[r, c, i, j], dtype=np.float32), int(w4.shape[0]),
                     tptr, r[np.argsort(tap, kind="stable")].astype(np.int32))


def sparsity(w: np.ndarray) -> float:
    """Fraction of exact zeros in ``w`` (1.0 for an empty array)."""
    return 1.0 - np.count_nonzero(w) / w.size if w.size else 1.0


def packed(w: np.ndarray, layout: str) -> CsrWeight:
    """The CSR form of weight ``w`` for ``layout`` ("matmul": W (K, N); "matmul_t": W (N, K);
    "conv": W (M, C, kh, kw)), built once per weight array (:func:`~inference.kernels._prepack.prepacked`)."""

    def build(w: np.ndarray) -> CsrWeight:
        if layout == "matmul":
            return to_csr(w.T[:, :, None, None])
        if layout == "matmul_t":
            return to_csr(w[:, :, None, None])
        return to_csr(w)

    return prepacked(w, ("csr", layout), build)


# -- the loops -------------------------------------------------------------------------------------
@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=True)
def _madd4(dst, s0, s1, s2, s3, v0, v1, v2, v3, n):
    """``dst += v0*s0 + v1*s1 + v2*s2 + v3*s3``: four nonzeros per pass over the output row (one
    load and store of ``dst`` per four multiply-adds; one nonzero per pass ran 1.3-2.5x slower)."""
    for k in range(n):
        dst[k] += v0 * s0[k] + v1 * s1[k] + v2 * s2[k] + v3 * s3[k]


@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=True)
def _madd1(dst, s0, v0, n):
    for k in range(n):
        dst[k] += v0 * s0[k]


@threaded_kernel(fastmath=True)
def sparse_rows(xf, plane, wq, indptr, chan, ti, tj, vals, y):
    """``y[m, :] = sum over nonzeros j of row m: vals[j] * xf[o_j : o_j + L]`` with
    ``o_j = chan[j]*plane + ti[j]*wq + tj[j]`` and ``L = y.shape[1]``.

    One loop for every op: a stride-1 convolution over planes (hq, wq) computed on "wide rows"
    (the output plane with the input's row width, the extra columns cut off afterwards), so each
    nonzero is one contiguous multiply-add over the whole plane instead of one per output row
    (3-5x fewer loop trips for 56x56); a 1x1 convolution over one plane row; a matrix product over
    the rows of ``x^T``. The output row stays in L1 while its nonzeros are added, four at a time;
    the input is read through slices starting at the offset (index = loop counter), so numba drops
    the negative-index fix-up and the loop vectorises (``xf[o + k]`` did not, ~4x slower).
    """
    rows, n = y.shape
    for m in numba.prange(rows):
        ym = y[m]
        ym[:] = 0
        j, hi = indptr[m], indptr[m + 1]
        while j + 4 <= hi:
            o0 = chan[j] * plane + ti[j] * wq + tj[j]
            o1 = chan[j + 1] * plane + ti[j + 1] * wq + tj[j + 1]
            o2 = chan[j + 2] * plane + ti[j + 2] * wq + tj[j + 2]
            o3 = chan[j + 3] * plane + ti[j + 3] * wq + tj[j + 3]
            _madd4(ym, xf[o0:], xf[o1:], xf[o2:], xf[o3:], vals[j], vals[j + 1], vals[j + 2], vals[j + 3], n)
            j += 4
        while j < hi:
            _madd1(ym, xf[chan[j] * plane + ti[j] * wq + tj[j]:], vals[j], n)
            j += 1


@threaded_kernel(fastmath=True)
def sparse_gather(x, indptr, chan, vals, y):
    """``y[r, n] = sum over nonzeros j of row n: vals[j] * x[r, chan[j]]`` (x (R, K), y (R, N))."""
    nr, nn = y.shape
    for n in numba.prange(nn):
        lo, hi = indptr[n], indptr[n + 1]
        for r in range(nr):
            xr = x[r]
            acc = np.float32(0.0)
            for j in range(lo, hi):
                acc += vals[j] * xr[chan[j]]
            y[r, n] = acc


# -- the zero weights' share of a non-finite input ----------------------------------------------------
# The loops above skip zero weights, but the dense product (the reference's, onnxruntime's) adds
# 0 * x for them too, which is NaN for an inf or a NaN x: the output is NaN wherever a non-finite
# input meets a zero weight (the stored weights carry it through their own products). These run
# after the loops, in numba so a kernel replay repeats them, and without fast-math: under nnan/ninf
# LLVM may fold the finiteness tests away. A finite input costs one vectorised scan of it.
_FLOAT32_MAX = np.float32(np.finfo(np.float32).max)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def _all_finite(a):
    """Whether no element of 1-D ``a`` is an inf or a NaN; blocks of 64 without a branch vectorise."""
    n, i = a.shape[0], 0
    while i + 64 <= n:
        ok = True
        for k in range(i, i + 64):
            ok &= abs(a[k]) <= _FLOAT32_MAX
        if not ok:
            return False
        i += 64
    for k in range(i, n):
        if not abs(a[k]) <= _FLOAT32_MAX:
            return False
    return True


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def zero_weight_nans(xf, toff, tptr, trows, y):
    """What :func:`sparse_rows` skipped: ``y[m, p] = NaN`` where ``xf[toff[t] + p]`` is not finite
    for a tap ``t`` (input channel, tap row, tap column) whose weight in row ``m`` is zero; ``toff``
    the taps' offsets as the loop reads its nonzeros' (:func:`_tap_offsets`).

    A NaN input makes its whole output column NaN, once: an all-NaN input (a model gone NaN) costs
    a pass over the output, not one over the rows per tap (which took 36x the product's time on a
    3x3 64->64 56x56; an all-inf input still costs ~15x, its rows written per tap)."""
    if _all_finite(xf):
        return
    rows, n = y.shape
    nan_col = np.zeros(n, np.bool_)
    pos = np.empty(n, np.int64)  # this tap's infs, by output column
    for t in range(tptr.shape[0] - 1):
        src = xf[toff[t]:toff[t] + n]
        if _all_finite(src):
            continue
        infs = 0
        for p in range(n):
            v = src[p]
            if nan_col[p] or abs(v) <= _FLOAT32_MAX:
                continue
            if v != v:
                nan_col[p] = True
                y[:, p] = np.nan
            else:
                pos[infs] = p
                infs += 1
        if infs:
            j, hi = tptr[t], tptr[t + 1]
            for m in range(rows):
                if j < hi and trows[j] == m:  # ascending: stored, its product carries the inf
                    j += 1
                    continue
                ym = y[m]
                for i in range(infs):
                    ym[pos[i]] = np.nan


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def zero_weight_nans_gather(x, tptr, trows, y):
    """What :func:`sparse_gather` skipped: ``y[r, n] = NaN`` where ``x[r, k]`` is not finite and the
    weight (k, n) is zero (any n for a NaN)."""
    for r in range(x.shape[0]):
        xr, yr = x[r], y[r]
        if _all_finite(xr):
            continue
        for k in range(xr.shape[0]):
            v = xr[k]
            if abs(v) <= _FLOAT32_MAX:
                continue
            if v != v:
                yr[:] = np.nan
                break
            j, hi = tptr[k], tptr[k + 1]
            for col in range(yr.shape[0]):
                if j < hi and trows[j] == col:
                    j += 1
                else:
                    yr[col] = np.nan


@numba.njit(cache=True, error_model="numpy", nogil=True)
def phase_split(x, ph, pw, sh, sw, hq, wq):
    """``x`` (C, H, W) zero-padded by (ph, pw) and split by row and column phase, flat:
    ``out[((c*sh + qr)*sw + qc)*hq*wq + i*wq + k] = padded[c, i*sh + qr, k*sw + qc]``, plus ``wq``
    zeros at the end (wide rows of the last plane read past it). A strided tap then reads
    contiguous rows of one phase plane: every convolution becomes a stride-1 one."""
    c, h, w = x.shape
    plane = hq * wq
    out = np.zeros(c * sh * sw * plane + wq, np.float32)
    for ch in range(c):
        for i in range(h):
            pr = ph + i
            src = x[ch, i]
            if sh == 1 and sw == 1:
                dst = out[ch * plane + pr * wq + pw:]
                for col in range(w):
                    dst[col] = src[col]
                continue
            base = (ch * sh + pr % sh) * sw * plane + (pr // sh) * wq
            for col in range(w):
                pc = pw + col
                out[base + (pc % sw) * plane + pc // sw] = src[col]
    return out


# -- host side ---------------------------------------------------------------------------------------
def _phase_taps(chan: np.ndarray, ti: np.ndarray, tj: np.ndarray, geometry: tuple[int, int, int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps (input channel, tap row, tap column) as (phase plane, row, column) of
    :func:`phase_split`'s input, for strides and dilations ``geometry`` (sh, sw, dh, dw): where
    :func:`sparse_rows` reads a tap's plane."""
    sh, sw, dh, dw = geometry
    if (sh, sw, dh, dw) == (1, 1, 1, 1):
        return chan, ti, tj
    a, b = ti * dh, tj * dw
    return (((chan * sh + a % sh) * sw + b % sw).astype(np.int32), (a // sh).astype(np.int32),
            (b // sw).astype(np.int32))


@functools.lru_cache(maxsize=256)
def _tap_offsets(channels: int, kernel: tuple[int, int], geometry: tuple[int, int, int, int], plane: int,
                 wq: int) -> np.ndarray:
    """Every tap's offset into the input :func:`sparse_rows` reads (planes of ``plane`` elements,
    rows of ``wq``), tap ``t = (channel * kh + tap row) * kw + tap column``, placed by
    :func:`_phase_taps` as the nonzeros are: what :func:`zero_weight_nans` scans. Read-only,
    kept per geometry (the same layer's calls ask for the same)."""
    kh, kw = kernel
    t = np.arange(channels * kh * kw, dtype=np.int64)
    chan, ti, tj = _phase_taps(t // (kh * kw), t // kw % kh, t % kw, geometry)
    offsets = chan.astype(np.int64) * plane + ti.astype(np.int64) * wq + tj
    offsets.flags.writeable = False
    return offsets


def sparse_matmul(x: np.ndarray, csr: CsrWeight) -> np.ndarray:
    """``x (..., K) @ W`` with ``W`` (K, N) given by its CSR over output columns; float32."""
    k = x.shape[-1]
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, k)
    nr = x2.shape[0]
    if nr <= GATHER_MAX_ROWS:
        y = np.empty((nr, csr.rows), np.float32)
        sparse_gather(x2, csr.indptr, csr.chan, csr.vals, y)
        zero_weight_nans_gather(x2, csr.tptr, csr.trows, y)
    else:
        yt = np.empty((csr.rows, nr), np.float32)
        xf = np.ascontiguousarray(x2.T).reshape(-1)
        sparse_rows(xf, nr, 0, csr.indptr, csr.chan, csr.ti, csr.tj, csr.vals, yt)
        zero_weight_nans(xf, _tap_offsets(k, (1, 1), (1, 1, 1, 1), nr, 0), csr.tptr, csr.trows, yt)
        y = np.ascontiguousarray(yt.T)
    return y.reshape(x.shape[:-1] + (csr.rows,))


def sparse_conv2d(x: np.ndarray, csr: CsrWeight, kernel: tuple[int, int], auto_pad="NOTSET", dilations=None,
                  pads=None, strides=None) -> np.ndarray:
    """Direct sparse 2-D convolution (group 1, no bias) of float32 NCHW ``x`` -> (N, M, oh, ow)."""
    n, c, h, w = x.shape
    win = window_geometry((h, w), kernel, strides, dilations, pads, auto_pad, 0, "Conv")
    oh, ow = win.out_shape
    (sh, sw), (dh, dw), (ph, pw) = win.strides, win.dilations, win.pads_begin
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty((n, csr.rows, oh, ow), np.float32)
    if kernel == (1, 1) and sh == sw == 1 and ph == pw == 0 and (oh, ow) == (h, w):  # pointwise: no copy
        for i in range(n):
            xf, yi = x[i].reshape(-1), y[i].reshape(csr.rows, h * w)
            sparse_rows(xf, h * w, 0, csr.indptr, csr.chan, csr.ti, csr.tj, csr.vals, yi)
            zero_weight_nans(xf, _tap_offsets(c, (1, 1), (1, 1, 1, 1), h * w, 0), csr.tptr, csr.trows, yi)
        return y
    chan, ti, tj = _phase_taps(csr.chan, csr.ti, csr.tj, (sh, sw, dh, dw))
    hq = -(-max(h + ph, (oh - 1) * sh + (kernel[0] - 1) * dh + 1) // sh)
    wq = -(-max(w + pw, (ow - 1) * sw + (kernel[1] - 1) * dw + 1) // sw)
    wide = np.empty((csr.rows, oh * wq), np.float32)
    toff = _tap_offsets(c, kernel, (sh, sw, dh, dw), hq * wq, wq)
    for i in range(n):
        xf = phase_split(x[i], ph, pw, sh, sw, hq, wq)  # the zero pads are no inputs: finite
        sparse_rows(xf, hq * wq, wq, csr.indptr, chan, ti, tj, csr.vals, wide)
        zero_weight_nans(xf, toff, csr.tptr, csr.trows, wide)
        y[i] = wide.reshape(csr.rows, oh, wq)[:, :, :ow]
    return y


# -- selection ---------------------------------------------------------------------------------------
def _accept(node: Node, graph: Graph, rank: int, threshold: float, layout: str) -> bool:
    """Whether ``node``'s weight (input 1) is a float32 constant of ``rank`` sparse enough; if so it
    is packed now, while the session plans."""
    if not _SETTINGS["enabled"] or not float32_input(node, graph):
        return False
    w = constant_float32_weight(node, graph, rank)
    if w is None or w.size == 0 or sparsity(source(w)) < threshold:  # a released weight reads as zeros
        return False
    packed(w, layout)
    return True


def _matmul_applies(node: Node, graph: Graph) -> bool:
    return _accept(node, graph, 2, MATMUL_SPARSITY, "matmul")


def _gemm_applies(node: Node, graph: Graph) -> bool:
    if node.attrs.get("transA", 0):
        return False
    return _accept(node, graph, 2, MATMUL_SPARSITY, "matmul_t" if node.attrs.get("transB", 0) else "matmul")


def _conv_applies(node: Node, graph: Graph) -> bool:
    if node.attrs.get("group", 1) != 1 or not fast_conv.handles(node, graph):
        return False
    w = constant_weight(graph, node.inputs[1]) if len(node.inputs) > 1 else None
    a = node.attrs
    # a 1x1 stride-1 kernel needs no padding whatever auto_pad says: only explicit pads add any
    pointwise = (w is not None and w.shape[2:] == (1, 1) and set(a.get("strides") or [1]) == {1}
                 and not any(a.get("pads") or [0]))
    return _accept(node, graph, 4, POINTWISE_SPARSITY if pointwise else CONV_SPARSITY, "conv")


def _matmul_ok(x: np.ndarray, w: np.ndarray) -> bool:
    return x.dtype == np.float32 and w.dtype == np.float32 and w.ndim == 2 and x.ndim >= 1 and x.shape[-1] == w.shape[0]


def _conv_ok(x: np.ndarray, w: np.ndarray, group: int) -> bool:
    return fast_conv.fast_path(x, w) and group == 1 and x.shape[1] == w.shape[1]


# -- kernels -----------------------------------------------------------------------------------------
@register("MatMul", since=1, kind=KIND, applies=_matmul_applies)
def matmul(a, b):
    if not _matmul_ok(a, b):
        return reference_matmul(a, b)
    return sparse_matmul(a, packed(b, "matmul"))


@register("Gemm", since=1, kind=KIND, applies=_gemm_applies)
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    wk = b.T if transB else b
    if transA or a.ndim != 2 or not _matmul_ok(a, wk):
        return reference_gemm(a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB, broadcast=broadcast)
    y = sparse_matmul(a, packed(b, "matmul_t" if transB else "matmul"))
    if alpha != 1.0:
        y *= np.float32(alpha)
    if c is not None and beta != 0.0:
        y += c * np.float32(beta) if beta != 1.0 else c
    return y


@register("Conv", since=1, kind=KIND, applies=_conv_applies)
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    return fused_conv(x, w, b, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                      pads=pads, strides=strides)


@register("FusedConv", since=1, domain=fused.DOMAIN, kind=KIND, applies=_conv_applies)
def fused_conv(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0, auto_pad="NOTSET", dilations=None,
               group=1, kernel_shape=None, pads=None, strides=None):
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                 strides=strides)
    if not _conv_ok(x, w, group):
        return fused.fused_conv(x, w, b, z, activation=activation, alpha=alpha, beta=beta, **attrs)
    kernel = w.shape[2:]  # the weight's taps, which the loop reads (import checks kernel_shape against it)
    y = sparse_conv2d(x, packed(w, "conv"), kernel, auto_pad, dilations, pads, strides)
    n, m = y.shape[:2]
    if z is not None and z.shape != y.shape:
        raise KernelError(f"residual Z has shape {z.shape}, the output {y.shape}")
    if b is not None or z is not None or activation:
        zz = as_f32(z, (n, m, -1)) if z is not None else np.empty((1, 1, 1), np.float32)
        epilogue_rows(y.reshape(n, m, -1), as_f32(b, (m,)), zz, z is not None, activation_code(activation),
                      float(alpha), float(beta))
    return y


@register("FusedMatMul", since=1, domain=fused.DOMAIN, kind=KIND, applies=_matmul_applies)
def fused_matmul(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0):
    n = w.shape[-1] if w.ndim else 0
    if not _matmul_ok(x, w) or (z is not None and z.shape != x.shape[:-1] + (n,)):
        return fused.fused_matmul(x, w, b, z, activation=activation, alpha=alpha, beta=beta)
    y = sparse_matmul(x, packed(w, "matmul"))
    if b is not None or z is not None or activation:
        y2 = y.reshape(-1, n)
        zz = as_f32(z, y2.shape) if z is not None else NO_RESIDUAL_2D
        epilogue_cols(y2, as_f32(b, (n,)), zz, z is not None, activation_code(activation), float(alpha), float(beta))
    return y
