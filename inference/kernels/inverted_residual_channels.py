"""An inverted-residual block (:mod:`inference.kernels.inverted_residual`) split among threads by
its expanded channels instead of its rows.

Why: at batch 1 the late blocks of MobileNet-style models (14x14 and 7x7 maps expanded to 576 and
960 channels) carry more weight bytes than activations. Split by rows, every thread read all of the
block's weights; run as three convolutions apart, each split its own way, the expanded tensor
crossed between the cores' caches and the block paid three launches and their Python (MobileNetV2
at 2 threads: its 7x7 blocks 172-179 us in the model against 138 us for the same calls repeated
alone). Here part t takes a run of whole expansion panels: it expands those channels over the
whole map (its columns of W1), runs the depthwise on them (channels are independent), and
multiplies them by its rows of W2 into a partial projection; a second parallel pass sums the
partials with the bias and residual and clamps. Every weight is read by one thread, and the
intermediates stay in the cache of the thread that wrote them.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._jit import parallel_chunks, threaded_kernel
from inference.kernels._prepack import prepacked
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.channels_last import depthwise3x3_row, depthwise5x5_row
from inference.kernels.rows_gemm import LANES, MATRIX, matrix_product, padded_weight, panel_row_offsets, tile_shape


def part_bounds(c: int, nl: int, parts: int) -> tuple[int, ...]:
    """The channel bounds of ``parts`` runs of whole ``nl``-wide panels of ``c`` channels, as even
    as whole panels allow (the last run ends at ``c``)."""
    panels = -(-c // nl)
    parts = max(1, min(parts, panels))
    return tuple(min(c, (t * panels // parts) * nl) for t in range(parts + 1))


def expansion_tile(c: int, parts: int) -> tuple[int, int]:
    """The expansion's tile when its ``c`` channels are split in ``parts``: the one whose panels
    split most evenly (the widest part sets the time), the block's own tile on a tie. Why: 576
    channels are 9 panels of 64 (parts of 4 and 5) but 18 of 32 (9 and 9)."""
    own = tile_shape(c)
    widest = lambda tile: max(np.diff(part_bounds(c, tile[1] * LANES, parts)))  # noqa: E731
    return min((own,) + tuple(t for t in MATRIX if t != own), key=widest)


def depthwise_parts(wd: np.ndarray, bounds: tuple[int, ...], keep_for: np.ndarray | None) -> np.ndarray:
    """The depthwise weight (k, k, 1, C) as each part's (k*k, its channels) one after another, flat."""

    def build(values: np.ndarray) -> np.ndarray:
        taps = np.asarray(values, np.float32).reshape(-1, values.shape[-1])
        return np.concatenate([taps[:, a:b].reshape(-1) for a, b in zip(bounds[:-1], bounds[1:])])

    return build(wd) if keep_for is None else prepacked(keep_for, ("depthwise_parts", bounds), build)


def projection_parts(w2: np.ndarray, bounds: tuple[int, ...], nl: int, keep_for: np.ndarray | None) -> np.ndarray:
    """The projection (1, 1, C, M) as each part's rows (its channels) in panels of ``nl`` columns
    (:func:`~inference.kernels.rows_gemm.padded_weight`), one part after another, flat."""

    def build(values: np.ndarray) -> np.ndarray:
        rows = np.asarray(values, np.float32).reshape(values.shape[2], values.shape[3])
        return np.concatenate([padded_weight(np.ascontiguousarray(rows[a:b]), nl)[0]
                               for a, b in zip(bounds[:-1], bounds[1:])])

    return build(w2) if keep_for is None else prepacked(keep_for, ("projection_parts", bounds, nl), build)


def part_offsets(bounds: tuple[int, ...], per_channel: int) -> np.ndarray:
    """Where each part's slice starts in a flat array holding ``per_channel`` values per channel."""
    return np.concatenate([[0], np.cumsum(np.diff(bounds) * per_channel)]).astype(np.int64)


class ChannelSplit:
    """The block split into ``parts`` runs of expanded channels, for fixed shapes: ``x_shape``
    (N, H, W, Cin) expanded to ``c`` channels by ``expansion`` (the block's stage object: its tile
    ``mr``/``nv``, best :func:`expansion_tile`; its packed ``weight``, padded ``bias`` and clamp
    ``lim``), projected to ``m`` on the tile ``p_tile``, the depthwise ``k`` x ``k`` with
    ``strides`` and begin ``pads``, ``out_shape`` (OH, OW)."""

    def __init__(self, x_shape: tuple, c: int, m: int, out_shape: tuple[int, int], k: int, strides: tuple,
                 pads: tuple, expansion, p_tile: tuple[int, int], parts: int):
        n, h, w, cin = x_shape
        oh, ow = out_shape
        self.m = m
        self.expansion = expansion
        self.e_mr, self.e_nv = expansion.mr, expansion.nv
        self.e_nl = self.e_nv * LANES
        self.p_mr, self.p_nv = p_tile
        self.p_nl = self.p_nv * LANES
        self.bounds = part_bounds(c, self.e_nl, parts)
        self.parts = len(self.bounds) - 1
        self.widest = int(max(np.diff(self.bounds)))
        self.zero = np.zeros(w * self.widest, np.float32)  # read only: rows above and below the map
        self.bounds_array = np.array(self.bounds, np.int64)
        self.p_off = part_offsets(self.bounds, -(-m // self.p_nl) * self.p_nl)
        self.d_off = part_offsets(self.bounds, k * k)
        self.koff = panel_row_offsets(self.widest, self.p_nl)
        self.no_bias = np.zeros(-(-m // self.p_nl) * self.p_nl, np.float32)
        self.out_shape = (n, oh, ow, m)
        self.dims = np.array([n, h, w, cin, m, oh, ow, strides[0], strides[1], pads[0], pads[1], self.e_mr,
                              self.e_nv, self.p_mr, self.p_nv, k, 0, 1], np.int64)

    def __call__(self, x, w1, b1, wd, d_bias, d_code, d_alpha, d_beta, d_lim, d_finish, w2, p_bias, z, p_lim,
                 constant: bool) -> np.ndarray:
        """The block's output. ``w1``, ``b1``, ``wd``, ``w2`` as the node gets them (packed and split
        here; kept with a ``constant`` weight); ``d_*``: the depthwise's bias (C,) and epilogue;
        ``p_bias`` (M,) and ``p_lim``: the projection's bias and clamp, applied where the partials
        are summed."""
        n, h, w, cin = x.shape
        oh, ow, m = self.out_shape[1], self.out_shape[2], self.m
        e_wp, e_koff = self.expansion.weight(w1, constant)
        e_bias, e_lim = self.expansion.bias(b1, constant), self.expansion.lim
        d_wt = depthwise_parts(wd, self.bounds, wd if constant else None)
        p_wp = projection_parts(w2, self.bounds, self.p_nl, w2 if constant else None)
        parts, widest = self.parts, self.widest
        ebuf = new_scratch((parts, h * w * widest))
        dbuf = new_scratch((parts, oh * ow * widest))
        partial = new_scratch((parts, n * oh * ow * m))
        e_tail = new_scratch((parts, self.e_mr * cin))
        p_tail = new_scratch((parts, self.p_mr * widest))
        xc = np.ascontiguousarray(x, np.float32).reshape(-1)
        _expand_depthwise_project.parallel(xc, self.dims, self.bounds_array, e_wp, e_koff, e_bias, e_lim, d_wt,
                                           self.d_off, d_bias, d_code, d_alpha, d_beta, d_lim, d_finish, p_wp,
                                           self.p_off, self.koff, self.no_bias, partial, ebuf, dbuf, e_tail, p_tail,
                                           self.zero)
        y = new_output(self.out_shape)
        rows = n * oh * ow
        zz = self.zero if z is None else np.ascontiguousarray(z, np.float32).reshape(-1)
        _sum_parts.parallel(partial, p_bias, zz, z is not None, p_lim, y.reshape(-1), rows, m,
                            parallel_chunks(rows, self.parts))
        return y


@threaded_kernel()
def _expand_depthwise_project(x, dims, bounds, e_wp, e_koff, e_bias, e_lim, d_wt, d_off, d_bias, d_code, d_alpha,
                              d_beta, d_lim, d_finish, p_wp, p_off, koff, no_bias, partial, ebuf, dbuf, e_tail, p_tail,
                              zero):
    """Part t (one parallel run each): channels [bounds[t], bounds[t+1]) of every image expanded into
    ``ebuf[t]`` (H, W, its channels), their depthwise into ``dbuf[t]``, and their share of the
    projection into ``partial[t]`` (N*OH*OW, M). ``dims``: n, h, w, cin, m, oh, ow, sh, sw, ph, pw,
    e_mr, e_nv, p_mr, p_nv, k, 0, 1."""
    n, h, w, cin, m, oh, ow, sh, sw, ph, pw = (dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
                                               dims[7], dims[8], dims[9], dims[10])
    e_mr, e_nv, p_mr, p_nv, k = dims[11], dims[12], dims[13], dims[14], dims[15]
    zero_i, one_i = dims[16], dims[17]  # values, not literals: the callees compile once (see _blocks)
    no_z = zero_i != 0
    e_nl = e_nv * LANES
    lo, hi = np.float32(-np.inf), np.float32(np.inf)
    for t in numba.prange(bounds.size - 1):
        c0, c1 = bounds[t], bounds[t + 1]
        cp = c1 - c0
        first, last = c0 // e_nl, -(-c1 // e_nl)  # the part's expansion panels
        ew, eb = e_wp[first * cin * e_nl:last * cin * e_nl], e_bias[first * e_nl:last * e_nl]
        wt, db = d_wt[d_off[t]:d_off[t + 1]], d_bias[c0:c1]
        pwt, kof = p_wp[p_off[t]:p_off[t + 1]], koff[:cp]
        et, dt, row = ebuf[t], dbuf[t], w * cp
        zrow = zero[:row]
        for b in range(n):
            matrix_product(x, b * h * w * cin, h * w, e_tail[t], e_koff, ew, eb, zero, no_z, e_lim[0], e_lim[1], et,
                           zero_i, cp, e_mr, e_nv)
            for oy in range(oh):
                iy = oy * sh - ph
                r0 = _map_row(et, iy, h, row, zrow)
                r1 = _map_row(et, iy + 1, h, row, zrow)
                r2 = _map_row(et, iy + 2, h, row, zrow)
                out = dt[oy * ow * cp:(oy + 1) * ow * cp]
                if k == 3:
                    depthwise3x3_row(r0, r1, r2, wt, db, out, zrow, no_z, cp, sw, one_i, pw, d_code, d_alpha, d_beta,
                                     d_lim[0], d_lim[1], d_finish)
                else:
                    r3, r4 = _map_row(et, iy + 3, h, row, zrow), _map_row(et, iy + 4, h, row, zrow)
                    depthwise5x5_row(r0, r1, r2, r3, r4, wt, db, out, zrow, no_z, cp, sw, one_i, pw, d_code, d_alpha,
                                     d_beta, d_lim[0], d_lim[1], d_finish)
            matrix_product(dt, zero_i, oh * ow, p_tail[t], kof, pwt, no_bias, zero, no_z, lo, hi, partial[t],
                           b * oh * ow * m, m, p_mr, p_nv)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _map_row(flat, iy, h, row, zero):
    """Row ``iy`` of a map of ``h`` rows of ``row`` values held flat, or ``zero`` above and below it."""
    return flat[iy * row:(iy + 1) * row] if 0 <= iy < h else zero


@threaded_kernel()
def _sum_parts(partial, bias, z, has_z, lim, y, rows, m, nchunks):
    """``y`` = clamp(sum of the parts' partials + bias + z), rows split over ``nchunks`` runs. The
    clamp keeps NaN (a comparison with NaN is false), as the tile's does."""
    parts = partial.shape[0]
    lo, hi = lim[0], lim[1]
    for ch in numba.prange(nchunks):
        for i in range(ch * rows // nchunks, (ch + 1) * rows // nchunks):
            out, head = y[i * m:(i + 1) * m], partial[0, i * m:(i + 1) * m]
            for j in range(m):
                out[j] = head[j] + bias[j]
            for t in range(1, parts):
                more = partial[t, i * m:(i + 1) * m]
                for j in range(m):
                    out[j] += more[j]
            if has_z:
                zi = z[i * m:(i + 1) * m]
                for j in range(m):
                    out[j] += zi[j]
            for j in range(m):
                v = out[j]
                out[j] = lo if v < lo else (hi if v > hi else v)
