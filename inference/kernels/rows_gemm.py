"""``act(A @ W + bias + Z)`` for a row-major float32 ``A`` (P, K), on our register tile with output
channels along its lanes: the channels-last convolutions' GEMM.

Why not BLAS: a channels-last 1x1 convolution is ``(pixels, C) @ (C, M)`` with short K and M
(MobileNetV2: K and M 16-960). OpenBLAS ran those at 66-130 GFLOP/s on one core and then needed a
second pass over the output for bias and activation; at 2 threads it gained only 1.0-1.5x, and
its pool spinning beside numba's forced the depthwise kernels serial (``inference.thread_policy``).
Here the tile (:func:`~inference.kernels.tile_ir.make_out_tile`, ``lanes="channels"``) broadcasts
6 pixels' inputs straight from rows of ``A`` (no packing), multiplies 64 channels of ``W``'s row k
(``W`` laid out once per weight as zero-padded panels), and stores bias + residual + clamp from
registers. Where 64-lane tiles would leave more lanes idle (M = 24, 96, 160 ...), the tile is
12 pixels x 32 channels; for at most 16 channels, 16 pixels x 16.

:func:`gemm_gathered` runs the same product over rows gathered from anywhere in a flat input
(:class:`Rows` says where each starts, a step table where each step reads): a kxk or strided
channels-last convolution over its padded input in place, an implicit GEMM.
"""
from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import numba
import numpy as np

from inference.kernels._jit import kernel_threads, parallel_chunks, threaded_kernel
from inference.kernels._prepack import NO_REF, prepacked
from inference.kernels.activations import NONE
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.tile_ir import LANES, make_out_tile

# (pixels per tile, 16-lane vectors per tile): 24 accumulators (SLIM: 16, for at most 16 outputs),
# the tiles matrix_tiles runs; SINGLE: products of one row, run by _gemv
WIDE, NARROW, SLIM, SINGLE = (6, 4), (12, 2), (16, 1), (1, 4)
MATRIX = (WIDE, NARROW, SLIM)
_TILES = {shape: (make_out_tile(*shape, residual=False, lanes="channels"),
                  make_out_tile(*shape, residual=True, lanes="channels")) for shape in MATRIX + (SINGLE,)}
_wide, _wide_z = _TILES[WIDE]
_narrow, _narrow_z = _TILES[NARROW]
_slim, _slim_z = _TILES[SLIM]
_single, _single_z = _TILES[SINGLE]
# gathered rows (an implicit-GEMM convolution): (pixels, vectors) per tile, 16-24 accumulators; per
# padded multiply-add these ran alike (12 x 32 ran 1.3-1.7x slower, its 12 row pointers spilling,
# and never had the least work), each shape ~0.25 s more to compile with an empty cache. 8 x 32:
# for RGB stems into 32 or 24 channels (MobileNetV2's, shufflenet's), which 8 x 48 ran a third
# idle: 1.25-1.34x faster on them (thread time, same process, alternating). 8 x 16: for at most 16
# outputs, which 8 x 32 ran half idle (12 and 16 rows ran no faster: their row pointers spill)
GATHERED = ((6, 4), (8, 3), (4, 5), (8, 2), (8, 1))
_g4, _g4z, _g3, _g3z, _g5, _g5z, _g2, _g2z, _g1, _g1z = (
    make_out_tile(*shape, residual=z, lanes="channels", gathered=True) for shape in GATHERED for z in (False, True))


def tile_shape(m: int, p: int = 2) -> tuple[int, int]:
    """The tile for ``m`` output channels: 32 lanes when 64 would leave more of them idle, 16 for
    at most 16. Why 16: a 16-output layer left half of the 32-lane tile idle; on 16 pixels x 16
    lanes squeezenet's 64 -> 16 and 128 -> 16 1x1 layers ran 1.3-1.5x faster and MobileNetV2's
    32 -> 16 one 1.2-1.5x (alone, one thread, the same kernel with either tile, interleaved). Not
    wider: with no idle lanes, one vector per step ran slower than 12 x 32 (more broadcasts per
    multiply-add). One row (``p`` 1) takes :data:`SINGLE`."""
    if p == 1:
        return SINGLE
    if m <= LANES:
        return SLIM
    waste = lambda nv: -(-m // (nv * LANES)) * nv * LANES - m  # noqa: E731
    return NARROW if waste(NARROW[1]) < waste(WIDE[1]) else WIDE


#: the gathered shapes slower per padded multiply-add than 6 x 64, by this factor: 8 x 32 does 16
#: multiply-adds per step for the same row bookkeeping (ResNet-18's 3x3 layers with every lane
#: busy: 0.91-1.09x 6 x 64's time at 64 channels, 1.09x at 128), 8 x 16 8 (a YOLO-style body's
#: 16 -> 16 3x3 on 80x80: 179 us against 261 on 8 x 32, i.e. 1.37x 8 x 32's time per padded one;
#: 16 -> 24 still ran faster on 8 x 32: 67 against 92 us)
_SLOWER = {(8, 2): 1.08, (8, 1): 1.48}


def gathered_shape(p: int, m: int) -> tuple[int, int]:
    """The gathered tile for ``p`` pixels into ``m`` outputs (per group): the least padded work,
    weighed by :data:`_SLOWER` (ties: the first of :data:`GATHERED`). Why: grouped layers have
    awkward widths (shufflenet's 28, 34, 68, 136 channels per group), and 64 lanes for 68 channels
    doubled the work: shufflenet's grouped 1x1 layers ran 1.2-1.4x faster on their best shape
    than on 6 x 64."""

    def cost(shape: tuple[int, int]) -> float:
        mr, nl = shape[0], shape[1] * LANES
        return -(-p // mr) * mr * -(-m // nl) * nl * _SLOWER.get(shape, 1.0)

    return min(GATHERED, key=cost)


class Rows(NamedTuple):
    """Where the rows (output pixels) of a gathered GEMM start in its flat input: row p = (image n,
    output row oy, column ox) of ``count // per_image`` images of ``per_image // width`` rows
    starts at ``n*image_pitch + oy*row_pitch + ox*col_pitch``. For a zero-padded channels-last
    image (N, Hp, Wp, C) under strides (sh, sw): ``col_pitch`` sw*C, ``row_pitch`` sh*Wp*C,
    ``image_pitch`` Hp*Wp*C."""

    count: int
    per_image: int
    width: int
    col_pitch: int
    row_pitch: int
    image_pitch: int


#: a one-row product (:func:`_gemv`) reads each weight panel as this many runs of its rows at once,
#: a step from each in turn, where the panel has at least :data:`STREAMED_K` rows. Why: a decoder's
#: token streams every weight from memory once, and one sequential run per panel drew 12.8 GB/s
#: where OpenBLAS's GEMV drew 21; four runs 18-22 (512 x 2048, 2048 x 512, 512 x 8000 weights,
#: ~100 MB in turn, one thread; 2 and 8 runs fewer, 128 rows no gain). The steps' order is the
#: only change: the same tile, the same panels, a sum in another order
GEMV_STREAMS = 4
STREAMED_K = 256


@functools.lru_cache(maxsize=256)
def stream_order(k: int) -> np.ndarray:
    """The order of a one-row product's ``k`` steps: :data:`GEMV_STREAMS` runs of the rows in turn
    (row 0, q, 2q, 3q, 1, q + 1, ...; q = k / streams rounded up), or in order below
    :data:`STREAMED_K` rows."""
    if k < STREAMED_K:
        return np.arange(k, dtype=np.int64)
    q = -(-k // GEMV_STREAMS)
    order = np.arange(GEMV_STREAMS * q, dtype=np.int64).reshape(GEMV_STREAMS, q).T.reshape(-1)
    return np.ascontiguousarray(order[order < k])


def panel_row_offsets(k: int, nl: int) -> np.ndarray:
    """Where each of a panel's ``k`` rows starts within it (:func:`padded_weight`'s layout)."""
    return np.arange(k, dtype=np.int64) * nl


def padded_weight(w: np.ndarray, nl: int, keep_for: np.ndarray | None = None,
                  groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``w`` (K, M) as panels of ``nl`` columns (M zero-padded to whole panels), each panel's (K, nl)
    contiguous, flat; and the offsets of a panel's K rows. Why panels: a tile then reads its
    weights as one sequential run; rows of the whole (K, M) matrix put each step on another page
    (5 KB apart for M = 1280). MobileNetV2's last 1x1 (49 x 320 -> 1280), weights arriving from L3,
    ran 1.5x its time alone that way; as panels, as fast as OpenBLAS in the same setting.
    ``groups``: M is that many groups' columns, each padded to whole panels of its own (group g's
    panels follow group g-1's). ``keep_for``: the constant weight whose values, in C order, ``w``
    holds (a reshape of it); the panels are then kept while it lives."""
    k, m = w.shape

    def build(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mg = m // groups
        per = -(-mg // nl)  # panels per group
        flat = np.ascontiguousarray(values, np.float32).reshape(-1)
        panels = np.empty(groups * per * k * nl, np.float32)
        for g in range(groups):
            pack_panels(flat, g * mg, k, mg, m, nl, panels, g * per * k * nl, 0, per)
        return panels, panel_row_offsets(k, nl)

    return build(w) if keep_for is None else prepacked(keep_for, ("rows_gemm", nl, groups), build)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def pack_panels(b, b0, k, n, stride, nl, wp, w0, pb0, pb1):
    """Panels [pb0, pb1) of the (k, n) matrix at ``b[b0:]`` (rows ``stride`` apart) into ``wp[w0:]``
    in :func:`padded_weight`'s layout: panel after panel, each (k, nl), n zero-padded. What both
    a constant weight's packing and a per-call packing (:mod:`inference.kernels.activation_matmul`)
    run. Rows through views indexed from 0: flat indices kept LLVM from vectorising the copy
    (4 x 64 x 128 in 20 us against these 4)."""
    zero = np.float32(0.0)
    for pb in range(pb0, pb1):
        c0 = pb * nl
        cols = min(nl, n - c0)
        for r in range(k):
            src = b[b0 + r * stride + c0:b0 + r * stride + c0 + cols]
            dst = wp[w0 + (pb * k + r) * nl:w0 + (pb * k + r + 1) * nl]
            for j in range(cols):
                dst[j] = src[j]
            for j in range(cols, nl):
                dst[j] = zero


def unpacked_panels(panels: np.ndarray, k: int, m: int, nl: int, groups: int) -> np.ndarray:
    """The (K, M) weight whose :func:`padded_weight` panels are ``panels``: every value is in them
    (the padding is zeros), so a released weight comes back from them exactly."""
    mg = m // groups
    mp = -(-mg // nl) * nl
    full = panels.reshape(groups * mp // nl, k, nl).transpose(1, 0, 2).reshape(k, groups, mp)
    return np.ascontiguousarray(full[:, :, :mg]).reshape(k, m)


def padded_bias(bias: np.ndarray | None, m: int, padded_m: int, groups: int = 1) -> np.ndarray:
    """``bias`` (M,) laid out as :func:`padded_weight`'s panels are: each group's M/groups entries
    zero-padded to ``padded_m``, flat; all zeros when absent."""
    bp = np.zeros((groups, padded_m), np.float32)
    if bias is not None:
        bp[:, :m // groups] = bias.reshape(groups, -1)
    return bp.reshape(-1)


class _PanelSteps(NamedTuple):
    """The steps a gathered GEMM's panel j runs: ``count[j]`` of them, the offsets in row
    ``row[j]`` of ``koff`` (its group's row, or the panel's own when zero rows are skipped)."""

    koff: np.ndarray
    row: np.ndarray
    count: np.ndarray


_EPILOGUE_STEPS = 8  # a tile's bias, clamp and stores, in steps of its K loop (for balancing chunks)


def compact_panels(wp: np.ndarray, k: int, nl: int, keep_for: np.ndarray,
                   groups: int) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`padded_weight`'s panels ``wp`` with each panel's all-zero rows dropped (the rest
    moved up, in order) and the kept-rows mask (panels, k); (``wp``, None) when every row of
    every panel has a nonzero. Kept with the constant ``keep_for``, as the panels are."""

    def build(_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        panels = wp.reshape(-1, k, nl)
        kept = (panels != 0).any(axis=2)
        if kept.all():
            return wp, None
        compact = np.zeros_like(panels)
        for j in range(panels.shape[0]):
            rows = panels[j][kept[j]]
            compact[j, :rows.shape[0]] = rows
        return compact.reshape(-1), kept

    return prepacked(keep_for, ("rows_gemm_compact", nl, groups), build)


_NO_Z = np.zeros(1, np.float32)
_NO_TAIL = np.zeros(1, np.float32)


def _check_out(out: np.ndarray | None, p: int, m: int) -> np.ndarray:
    if out is None:
        return new_output((p, m))
    if out.shape != (p, m) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"gemm_rows: out must be a C-contiguous float32 ({p}, {m}) array, got {out.dtype} "
                         f"{out.shape}{'' if out.flags.c_contiguous else ' (not C-contiguous)'}")
    return out


class PreparedGemm:
    """:func:`gemm_rows` (or, given ``rows`` and ``koff``, :func:`gemm_gathered`) for fixed shapes:
    ``p`` rows of ``k`` steps into ``m`` outputs. What follows from the shapes (the tile, the
    partial last block, the tile count) is settled once; a call only pads the bias, finds the
    weight's panels and runs the kernel. Why: a bound convolution or product calls this on every
    run, and deriving all of it per call had cost ~7 us of Python (the kernel stubbed out), about
    a tenth of a batch-1 1x1 layer on a 14x14 map and more on smaller ones.

    ``groups`` (gathered only): a grouped convolution's product in one call. The weight (K, M)
    holds each group's M/groups columns side by side, ``koff`` is then (groups, K): group g's steps
    (its input channels), and group g writes its columns of the (P, M) output; every group's tiles
    share one parallel run (a call per group paid a parallel region each)."""

    __slots__ = ("p", "k", "m", "mr", "nv", "nl", "padded_m", "tiles", "partial", "geo", "koff", "groups", "panels",
                 "_dense", "_bounds", "_weight", "_bias", "_streamed")

    def __init__(self, p: int, k: int, m: int, shape: tuple[int, int] | None = None, rows: Rows | None = None,
                 koff: np.ndarray | None = None, groups: int = 1):
        if (rows is None) != (koff is None):
            raise ValueError("PreparedGemm: a gathered GEMM needs both rows and koff")
        if groups < 1 or m % groups or (groups > 1 and koff is None):
            raise ValueError(f"PreparedGemm: {groups} groups of {m} outputs (groups need a gathered GEMM whose "
                             f"outputs they divide)")
        if koff is not None:
            if koff.size != groups * k:
                raise ValueError(f"gemm_gathered: step offsets of shape {koff.shape} for {groups} group(s) of a "
                                 f"weight of {k} rows")
            koff = koff.reshape(groups, k)
            if shape is not None and shape not in GATHERED:
                raise ValueError(f"gemm_gathered: no gathered tile of shape {shape}; have {GATHERED}")
        elif shape is not None and shape not in MATRIX + (SINGLE,):
            raise ValueError(f"gemm_rows: no tile of shape {shape}; have {MATRIX + (SINGLE,)}")
        self.p, self.k, self.m, self.groups = p, k, m, groups
        self.mr, self.nv = shape or (gathered_shape(p, m // groups) if koff is not None else tile_shape(m, p))
        self.nl = self.nv * LANES
        self.padded_m = -(-(m // groups) // self.nl) * self.nl  # per group
        self.tiles = groups * -(-p // self.mr) * (self.padded_m // self.nl)
        self.partial = p % self.mr  # rows in the last, partial block (matrix form: read from a padded copy)
        self.geo = None if rows is None else np.array(rows[1:], np.int64)
        self.koff = koff
        self.panels = groups * (self.padded_m // self.nl)
        mbs = self.panels // groups
        self._dense = None if koff is None else _PanelSteps(koff, np.arange(self.panels) // mbs,
                                                            np.full(self.panels, k, np.int64))
        self._bounds: dict = {}  # (id of the steps, chunks, weights outer) -> (those steps, chunk bounds)
        self._weight: tuple = (NO_REF,)  # (the constant weight's weakref, its panels, their row offsets, the steps)
        self._bias: tuple = (None, None)  # (the bias beside a constant weight, padded)
        self._streamed: tuple = (None, None)  # (a panel's row offsets, in the one-row product's step order)

    def __call__(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, amin: np.float32,
                 amax: np.float32, keep_for: np.ndarray | None = None, out: np.ndarray | None = None,
                 act: int = NONE) -> np.ndarray:
        p, k, m, mr, groups = self.p, self.k, self.m, self.mr, self.groups
        if keep_for is not None and self._weight[0]() is keep_for:  # the constant weight of the last call
            _, wp, wkoff, steps = self._weight
        else:
            if w.shape != (k, m):
                raise ValueError(f"gemm_rows: weight of shape {w.shape}, prepared for ({k}, {m})")
            wp, wkoff = padded_weight(w, self.nl, keep_for, groups)
            steps = self._dense
            if keep_for is not None:
                if self.koff is not None:  # a constant weight: its all-zero rows per panel are skipped
                    wp, steps = self._skipping_zero_rows(wp, keep_for)
                self._weight = (weakref.ref(keep_for), wp, wkoff, steps)  # weak: a released weight goes
        bp = self._padded_bias(bias, keep_for is not None)
        y = _check_out(out, p, m)
        zz = _NO_Z if z is None else np.ascontiguousarray(z, dtype=np.float32).reshape(-1)
        threads = kernel_threads()
        chunks = parallel_chunks(self.tiles, threads)
        if mr == 1:  # rows one by one (the shape SINGLE, picked for one row)
            order = stream_order(k)
            if self._streamed[0] is not wkoff:
                self._streamed = (wkoff, np.ascontiguousarray(wkoff[order]))
            kernel = _gemv.parallel if threads > 1 else _gemv.serial
            kernel(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), wp, self._streamed[1], order, bp, zz,
                   z is not None, amin, amax, y.reshape(-1), m, act, min(chunks, threads))
            return y
        if self.koff is None:
            a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
            tail = _NO_TAIL
            if self.partial:  # zero-padded to a whole tile
                tail = new_scratch(mr * k)
                copy_tail(a, (p - self.partial) * k, self.partial * k, tail)
            kernel = _gemm_matrix.parallel if threads > 1 else _gemm_matrix.serial
            kernel(a, tail, p, wkoff, wp, bp, zz, z is not None, amin, amax, y.reshape(-1), m, mr, self.nv, chunks,
                   wp.size > a.size, act)  # deep layers: each channel block's weights stay cached over the pixels
        else:
            outer = wp.size > x.size
            kernel = _gemm_gathered.parallel if threads > 1 else _gemm_gathered.serial
            kernel(x, self.geo, p, steps.koff, steps.row, steps.count, self._chunk_bounds(steps, chunks, outer), wp,
                   bp, zz, z is not None, amin, amax, y.reshape(-1), m, outer, groups, mr, self.nv, act)
        return y

    def _padded_bias(self, bias: np.ndarray, constant: bool) -> np.ndarray:
        """``bias`` zero-padded per group to whole panels; kept for the next call when it comes
        beside a constant weight (a Predictor's layer passes the same two arrays on every run).
        Why kept: padding it cost ~1 us of a batch-1 layer's ~10 us of Python per call."""
        if constant and self._bias[0] is bias:
            return self._bias[1]
        bp = padded_bias(bias, self.m, self.padded_m, self.groups)
        if constant:
            self._bias = (bias, bp)
        return bp

    def _skipping_zero_rows(self, wp: np.ndarray, keep_for: np.ndarray) -> tuple[np.ndarray, "_PanelSteps"]:
        """The panels with each one's all-zero weight rows left out, and the step tables that go
        with them (the dense ones when no panel has a zero row). Why: a 1x1 branch merged into a
        3x3 conv (:mod:`inference.passes.concat_convs`) is a 3x3 weight whose other 8 taps are
        zero in its panels; they cost nothing this way."""
        compact, kept = compact_panels(wp, self.k, self.nl, keep_for, self.groups)
        if kept is None:
            return wp, self._dense
        mbs = self.panels // self.groups
        koff = np.zeros((self.panels, self.k), np.int64)
        for j in range(self.panels):
            rows = self.koff[j // mbs][kept[j]]
            koff[j, :rows.size] = rows
        return compact, _PanelSteps(koff, np.arange(self.panels), kept.sum(axis=1).astype(np.int64))

    def _chunk_bounds(self, steps: "_PanelSteps", chunks: int, weights_outer: bool) -> np.ndarray:
        """Where each of ``chunks`` parallel runs starts in the tile order (and the last ends):
        equal shares of the steps (plus an epilogue's worth per tile), so that panels of unequal
        depth still split evenly over the threads."""
        key = (id(steps), chunks, weights_outer)
        kept = self._bounds.get(key)
        if kept is not None and kept[0] is steps:
            return kept[1]
        mbs = self.panels // self.groups
        pbs = self.tiles // self.panels
        depth = steps.count.reshape(self.groups, mbs) + _EPILOGUE_STEPS
        per_tile = np.repeat(depth, pbs, axis=1) if weights_outer else np.tile(depth, (1, pbs))
        work = np.concatenate(([0], np.cumsum(per_tile.reshape(-1))))
        bounds = np.searchsorted(work, np.arange(chunks + 1) * work[-1] / chunks).astype(np.int64)
        bounds[0], bounds[-1] = 0, self.tiles
        self._bounds[key] = (steps, bounds)  # the steps kept with them: their id stays theirs
        return bounds


def gemm_rows(a: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, amin: np.float32,
              amax: np.float32, keep_for: np.ndarray | None = None, out: np.ndarray | None = None,
              shape: tuple[int, int] | None = None) -> np.ndarray:
    """``clamp(a @ w + bias + z, amin, amax)``: ``a`` (P, K), ``w`` (K, M), ``bias`` (M,), ``z``
    (P, M) or None, all float32; ``keep_for`` as in :func:`padded_weight`; ``out``: a C-contiguous
    (P, M) float32 array to write (else a new one); ``shape``: force a tile (one of :data:`MATRIX`)."""
    p, k = a.shape
    return PreparedGemm(p, k, w.shape[1], shape)(a, w, bias, z, amin, amax, keep_for, out)


def gemm_gathered(x: np.ndarray, rows: Rows, koff: np.ndarray, w: np.ndarray, bias: np.ndarray,
                  z: np.ndarray | None, amin: np.float32, amax: np.float32, keep_for: np.ndarray | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
    """:func:`gemm_rows` over rows gathered from the flat float32 ``x``: row p's step k reads
    ``x[start(p) + koff[k]]`` (``start`` from ``rows``; ``koff`` int64, one entry per row of ``w``).
    A channels-last convolution passes its padded input and its taps' offsets: an implicit GEMM,
    no im2col copy. The caller vouches that every read is inside ``x``."""
    return PreparedGemm(rows.count, w.shape[0], w.shape[1], rows=rows, koff=koff)(x, w, bias, z, amin, amax,
                                                                                   keep_for, out)


@numba.njit(cache=True, error_model="numpy")
def _row_starts(p0, rows, geo, roff):
    """``roff[r]`` = the start of row ``p0 + r`` for ``geo`` = Rows[1:] (rows past ``rows``: row p0's)."""
    per_image, width, col_pitch, row_pitch, image_pitch = geo[0], geo[1], geo[2], geo[3], geo[4]
    n, q = p0 // per_image, p0 % per_image
    oy, ox = q // width, q % width
    for r in range(roff.size):
        if r < rows:
            roff[r] = n * image_pitch + oy * row_pitch + ox * col_pitch
            ox += 1
            if ox == width:
                ox, oy = 0, oy + 1
                if oy * width == per_image:
                    oy, n = 0, n + 1
        else:
            roff[r] = roff[0]


@threaded_kernel()
def _gemv(a, wp, koff, order, bias, z, has_z, amin, amax, y, m, act, nchunks):
    """``act(a @ W + bias + z)`` row by row of ``a`` on the 1 x 64 tile, (row, panel) items in
    ``nchunks`` parallel runs; the steps in ``order`` (:func:`stream_order`: ``koff`` the panel's
    row offsets in that order, each row of ``a`` gathered into it). Why: on the 6 x 64 or 12 x 32
    tile a single row (a squeeze-and-excitation gate's 1x1 convolutions, a batch-1 classifier)
    left 5 of 6 (11 of 12) rows padding, their multiply-adds the work: 672 -> 168 took 10.8 us hot
    against 4.6 for OpenBLAS's GEMV, now 6.2. A kernel of its own, not a branch of
    :func:`matrix_tiles`: the fused blocks inline that, and would compile this tile too."""
    nl = SINGLE[1] * LANES
    k = koff.size
    panels = bias.size // nl
    items = a.size // k * panels
    for ch in numba.prange(nchunks):
        seg = np.empty((1, 3), np.int64)
        row = np.empty(k, np.float32)
        gathered = -1
        for t in range(ch * items // nchunks, (ch + 1) * items // nchunks):
            r, pb = t // panels, t % panels
            if r != gathered:
                for j in range(k):
                    row[j] = a[r * k + order[j]]
                gathered = r
            m0 = pb * nl
            seg[0, 0], seg[0, 1], seg[0, 2] = 0, m0, min(nl, m - m0)
            if has_z:
                _single_z(row, 0, wp, pb * k * nl, koff, k, bias, m0, 1, amin, amax, z, y, r * m, m, seg, 1, act)
            else:
                _single(row, 0, wp, pb * k * nl, koff, k, bias, m0, 1, amin, amax, z, y, r * m, m, seg, 1, act)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _tile_at(t, pbs, mbs, weights_outer, mr, nl, k, m, seg):
    """Tile ``t`` of ``pbs`` pixel blocks x ``mbs`` channel blocks: (pixel block, first pixel, first
    channel, its panel's offset); sets the one store segment ``seg`` (first lane 0)."""
    if weights_outer:
        mb, pb = t // pbs, t % pbs
    else:
        pb, mb = t // mbs, t % mbs
    m0 = mb * nl
    seg[0, 0], seg[0, 1], seg[0, 2] = 0, m0, min(nl, m - m0)
    return pb, pb * mr, m0, mb * k * nl


@numba.njit(cache=True, error_model="numpy", nogil=True)
def copy_tail(a, first, count, tail):
    """``tail`` = ``a[first:first + count]`` then zeros: a partial last block of rows padded to a
    whole tile. Element loops: a slice assignment compiled numba's shape-mismatch error path (~3 s
    cold). In numba, not numpy, also where Python calls it: a kernel replay
    (:mod:`inference.kernel_replay`) repeats only numba calls."""
    for i in range(tail.size):
        tail[i] = a[first + i] if i < count else 0


# Two kernels, not one with a flag: numba compiles every branch of a function, and the matrix
# form's users (MobileNetV2, the transformer) would pay the gathered tiles' compile time at a cold
# start (one kernel with both compiled in 1.45 s, the matrix one alone in 0.5-0.6 s).
@threaded_kernel()
def _gemm_matrix(a, tail, p, koff, wp, bias, z, has_z, amin, amax, y, m, mr, nv, nchunks, weights_outer, act):
    """The (pixel block, channel block) tiles of the (p, k) matrix ``a`` in ``nchunks`` parallel
    runs, its partial last block read from ``tail``; ``mr``/``nv`` pick the tile (one of :data:`MATRIX`)."""
    tiles = -(-p // mr) * (bias.size // (nv * LANES))
    for ch in numba.prange(nchunks):
        matrix_tiles(a, 0, tail, p, koff, wp, bias, z, has_z, amin, amax, y, 0, m, mr, nv, ch * tiles // nchunks,
                     (ch + 1) * tiles // nchunks, weights_outer, act)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def matrix_tiles(a, a0, tail, p, koff, wp, bias, z, has_z, amin, amax, y, y0, m, mr, nv, t0, t1, weights_outer,
                 act=NONE):
    """Tiles [t0, t1) of the product of the (p, k) matrix at ``a[a0:]`` into the (p, m) one at
    ``y[y0:]`` (``z`` read at the same offsets), the partial last block read from ``tail`` (its
    rows, zero-padded to ``mr``). One serial run: :func:`_gemm_matrix`'s body, and what a fused
    kernel (:mod:`inference.kernels.inverted_residual`) runs on a band of rows in cache."""
    nl = nv * LANES
    k = koff.size
    pbs, mbs = -(-p // mr), bias.size // nl
    full = p // mr
    seg = np.empty((1, 3), np.int64)
    for t in range(t0, t1):
        pb, p0, m0, w0 = _tile_at(t, pbs, mbs, weights_outer, mr, nl, k, m, seg)
        rows = min(mr, p - p0)
        src, off = (a, a0 + p0 * k) if pb < full else (tail, 0)
        yo = y0 + p0 * m
        if nv == WIDE[1]:
            if has_z:
                _wide_z(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, yo, m, seg, 1, act)
            else:
                _wide(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, yo, m, seg, 1, act)
        elif nv == NARROW[1]:
            if has_z:
                _narrow_z(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, yo, m, seg, 1, act)
            else:
                _narrow(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, yo, m, seg, 1, act)
        elif has_z:
            _slim_z(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, yo, m, seg, 1, act)
        else:
            _slim(src, off, wp, w0, koff, k, bias, m0, rows, amin, amax, z, y, yo, m, seg, 1, act)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def matrix_product(a, a0, p, tail, koff, wp, bias, z, has_z, amin, amax, y, y0, m, mr, nv):
    """``clamp(a[a0:] (p, k) @ W + bias + z)`` into ``y[y0:]`` (p, m) on one thread: the last partial
    block of rows copied to ``tail`` zero-padded, then every tile of :func:`matrix_tiles`. What the
    fused block kernels run on rows in their cache."""
    k = koff.size
    full = p // mr
    rest = p - full * mr
    if rest:
        copy_tail(a, a0 + full * mr * k, rest * k, tail)
    tiles = -(-p // mr) * (bias.size // (nv * LANES))
    matrix_tiles(a, a0, tail, p, koff, wp, bias, z, has_z, amin, amax, y, y0, m, mr, nv, 0, tiles, wp.size > p * k)


@threaded_kernel()
def _gemm_gathered(x, geo, p, koff, krow, kcount, bounds, wp, bias, z, has_z, amin, amax, y, m, weights_outer,
                   groups, mr, nv, act):
    """The (``mr`` pixels, ``nv`` vectors) tiles of a gathered GEMM (a shape of :data:`GATHERED`),
    tiles [bounds[i], bounds[i+1]) in parallel run i: rows through :func:`_row_starts`; panel j
    (group g = j // panels per group, ``bias`` and ``wp`` padded per group) runs ``kcount[j]``
    steps at the offsets ``koff[krow[j]]`` and writes columns [g*mg, (g+1)*mg) of the (p, m) ``y``."""
    nl = nv * LANES
    k = koff.shape[1]
    mg = m // groups
    pbs, mbs = -(-p // mr), bias.size // (nl * groups)
    per_group = pbs * mbs
    for ch in numba.prange(bounds.size - 1):
        seg = np.empty((1, 3), np.int64)
        roff = np.empty(mr, np.int64)
        for t in range(bounds[ch], bounds[ch + 1]):
            g = t // per_group
            _, p0, m0, w0 = _tile_at(t - g * per_group, pbs, mbs, weights_outer, mr, nl, k, mg, seg)
            rows = min(mr, p - p0)
            _row_starts(p0, rows, geo, roff)
            panel = g * mbs + m0 // nl
            seg[0, 1] += g * mg
            w0 += g * mbs * k * nl
            b0 = g * mbs * nl + m0
            _gathered_tile(x, wp, w0, koff[krow[panel]], kcount[panel], bias, b0, rows, amin, amax, z, has_z, y,
                           p0 * m, m, seg, roff, nv, act)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _gathered_tile(x, wp, w0, koff, k, bias, b0, rows, amin, amax, z, has_z, y, y0, m, seg, roff, nv, act):
    """The gathered tile of :data:`GATHERED` with ``nv`` vectors (4, 3, 5, 2 or 1), with or without Z."""
    if nv == 4:
        if has_z:
            _g4z(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
        else:
            _g4(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
    elif nv == 3:
        if has_z:
            _g3z(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
        else:
            _g3(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
    elif nv == 5:
        if has_z:
            _g5z(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
        else:
            _g5(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
    elif nv == 2:
        if has_z:
            _g2z(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
        else:
            _g2(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
    elif has_z:
        _g1z(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
    else:
        _g1(x, 0, wp, w0, koff, k, bias, b0, rows, amin, amax, z, y, y0, m, seg, 1, act, roff)
