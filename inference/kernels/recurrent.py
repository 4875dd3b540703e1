"""Fast float32 LSTM, GRU and RNN: every time step of every direction in one numba call.

Why: the reference (:mod:`inference.ops.rnn`) runs a Python loop over time steps of numpy calls
(splits, products, ``where``s): a PyTorch ``nn.LSTM(40, 64, 2)`` over 20 steps at batch 2 took
1.9 ms against onnxruntime's 0.08. Here the input projections of all steps are one product on our
register tile (:func:`~inference.kernels.rows_gemm.matrix_product`), then the time loop runs the
recurrent product (tiles of up to 4 batch rows x 64 columns, :func:`_recurrent`) and the gate math
(sigmoid and tanh as vectorised float32 arithmetic, :mod:`~inference.kernels.vmath`) in the same
compiled function; directions run side by side on the parallel twin. All of it is numba, so a
model of these replays (:mod:`inference.kernel_replay`). Measured (``benchmarks/recurrent.py``,
one thread): that LSTM 0.07 ms a run at batch 1 against onnxruntime's 0.062, a bidirectional
GRU 0.046 against 0.056.

The weights are laid out as the tiles read them (W^T and R^T in panels of 64 columns) and the
biases folded (input and recurrence bias added where the cell equations allow): on every call
for the ``fast`` kind, whose weights may change between runs (a training session's), and once
per weight for the ``packed`` kind, which only sessions with constant initializers ask for (a
Predictor's): the repacking is a transpose of every weight, more than the recurrence itself at
20 steps.

Cases taken: float32, the default activations (LSTM Sigmoid/Tanh/Tanh, GRU Sigmoid/Tanh, RNN
Tanh), any direction and layout, optional B, sequence_lens, initial states and peepholes, GRU's
``linear_before_reset`` 0 and 1. ``clip``, other activations and ``input_forget`` stay with the
reference, as does anything the reference would reject (it names the error).
"""
from __future__ import annotations

from typing import Any, Callable

import numba
import numpy as np

from inference.ir import Graph, Node
from inference.kernels._applies import float32_input
from inference.kernels._jit import kernel_threads, threaded_kernel
from inference.kernels._prepack import LastWeights, constant_weight
from inference.kernels.activations import NONE
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.rows_gemm import LANES, SINGLE, WIDE, matrix_product, panel_row_offsets
from inference.kernels.tile_ir import make_out_tile
from inference.kernels.vmath import FAST_FINITE, sigmoid_segment, tanh_row
from inference.ops._memo import remember
from inference.ops.registry import register
from inference.ops.rnn import gru, lstm, rnn

#: weight panels' width: what both the 1 x 64 row tile and the 6 x 64 matrix tile read
NL = SINGLE[1] * LANES
#: batch rows per tile of the recurrent product (:func:`_recurrent`): 4 x 64 holds 16 accumulators
ROW_BLOCK = 4
_rows1, _rows2, _rows3, _rows4 = (make_out_tile(r, SINGLE[1], residual=False, lanes="channels")
                                  for r in range(1, ROW_BLOCK + 1))
_LSTM, _GRU, _RNN = range(3)
_GATES = {_LSTM: 4, _GRU: 3, _RNN: 1}
_OPS = {"LSTM": _LSTM, "GRU": _GRU, "RNN": _RNN}
_DEFAULT_ACTS = {_LSTM: ("sigmoid", "tanh", "tanh"), _GRU: ("sigmoid", "tanh"), _RNN: ("tanh",)}
_REFERENCE = {_LSTM: lstm, _GRU: gru, _RNN: rnn}
#: the attributes each op may set for this kernel to take it (others: the reference decides)
_ATTRS = {_LSTM: {"hidden_size", "activations", "activation_alpha", "activation_beta", "direction", "layout",
                  "input_forget"},
          _GRU: {"hidden_size", "activations", "activation_alpha", "activation_beta", "direction", "layout",
                 "linear_before_reset"},
          _RNN: {"hidden_size", "activations", "activation_alpha", "activation_beta", "direction", "layout",
                 "output_sequence"}}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_LO, _HI = np.float32(-np.inf), np.float32(np.inf)
_NO_Z = np.zeros(1, np.float32)
_NO_LENS = np.zeros(1, np.int32)
_NO_STATE = np.zeros(1, np.float32)


def _padded(m: int) -> int:
    return max(NL, -(-m // NL) * NL)


# -- element math -------------------------------------------------------------------------------

# -- layout of the weights ----------------------------------------------------------------------

@numba.njit(cache=True, error_model="numpy", nogil=True)
def _pack_rows(w, r0, m, k, out, o0):
    """Rows [r0, r0 + m) of the (rows, k) matrix ``w`` (flat) transposed into ``out[o0:]`` as panels
    of :data:`NL` columns, each (k, NL) contiguous and zero-padded: the (k, m) operand the tiles
    multiply by (:func:`~inference.kernels.rows_gemm.padded_weight`'s layout)."""
    zero = np.float32(0.0)
    for pb in range(-(-m // NL)):
        for j in range(NL):
            col = pb * NL + j
            if col < m:
                src = w[(r0 + col) * k:(r0 + col + 1) * k]
                for kk in range(k):
                    out[o0 + (pb * k + kk) * NL + j] = src[kk]
            else:
                for kk in range(k):
                    out[o0 + (pb * k + kk) * NL + j] = zero


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _prepare(op, lbr, w, r, b, has_b, dirs, gates, hidden, k_in, wp, rp1, rp2, xbias, rbias):
    """Every direction's panels and folded biases: ``wp`` W^T (k_in, gates*hidden); ``rp1`` R^T of
    the gates the recurrent product feeds at once, ``rp2`` of GRU's h gate when it multiplies the
    reset state (``linear_before_reset`` 0); ``xbias`` what is added to the input projection
    (both biases, but GRU's recurrence h-gate bias with ``linear_before_reset`` 1, which goes
    to ``rbias`` for the recurrent product, where r multiplies it)."""
    m = gates * hidden
    m1 = 2 * hidden if op == _GRU and not lbr else m
    pm, p1, p2 = wp.size // (dirs * k_in), rp1.size // (dirs * hidden), rp2.size // (dirs * hidden)
    for d in range(dirs):
        _pack_rows(w[d * m * k_in:(d + 1) * m * k_in], 0, m, k_in, wp, d * pm * k_in)
        rd = r[d * m * hidden:(d + 1) * m * hidden]
        _pack_rows(rd, 0, m1, hidden, rp1, d * p1 * hidden)
        if m1 < m:
            _pack_rows(rd, m1, m - m1, hidden, rp2, d * p2 * hidden)
        for j in range(pm):
            xbias[d * pm + j] = 0
        for j in range(p1):
            rbias[d * p1 + j] = 0
        if has_b:
            wb, rb = b[d * 2 * m:d * 2 * m + m], b[d * 2 * m + m:(d + 1) * 2 * m]
            for j in range(m):
                if op == _GRU and lbr and j >= 2 * hidden:
                    xbias[d * pm + j] = wb[j]
                    rbias[d * p1 + j] = rb[j]
                else:
                    xbias[d * pm + j] = wb[j] + rb[j]


class _Weights:
    """One node's panels and folded biases (:func:`_prepare`'s arrays)."""

    __slots__ = ("wp", "rp1", "rp2", "xbias", "rbias")

    def __init__(self, op: int, lbr: int, w: np.ndarray, r: np.ndarray, b: np.ndarray | None, dirs: int,
                 hidden: int, k_in: int, scratch: bool):
        gates = _GATES[op]
        m = gates * hidden
        m1 = 2 * hidden if op == _GRU and not lbr else m
        make = new_scratch if scratch else (lambda n: np.empty(n, np.float32))
        pm, p1, p2 = _padded(m), _padded(m1), _padded(m - m1)
        self.wp, self.rp1, self.rp2 = make(dirs * pm * k_in), make(dirs * p1 * hidden), make(dirs * p2 * hidden)
        self.xbias, self.rbias = make(dirs * pm), make(dirs * p1)
        _prepare(op, lbr, _flat(w), _flat(r), _NO_Z if b is None else _flat(b), b is not None, dirs, gates, hidden,
                 k_in, self.wp, self.rp1, self.rp2, self.xbias, self.rbias)


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


# -- the recurrence -----------------------------------------------------------------------------

@numba.njit(cache=True, error_model="numpy", nogil=True)
def _recurrent(h, batch, rp, koff, bias, out, m, seg):
    """``out (batch, m) = h (batch, hidden) @ R^T + bias`` from R^T's panels ``rp``: per panel, its
    rows in blocks of up to :data:`ROW_BLOCK` on a tile of that many rows, so that the panel
    (16 KB at hidden 64) is read from L2 once per step and reused from L1 by every block. Why
    not the 1 x 64 row tile per row: a step's R (64 KB at 4 x 64) streams from L2 per row, 1.43 us
    a step at batch 2 against 0.78 at batch 1; nor the 6 x 64 tile, whose padded rows cost 2.05
    us at any batch up to 6 (times inside one numba loop)."""
    k = koff.size
    for pb in range(bias.size // NL):
        m0 = pb * NL
        seg[0, 0], seg[0, 1], seg[0, 2] = 0, m0, min(NL, m - m0)
        w0 = pb * k * NL
        for r0 in range(0, batch, ROW_BLOCK):
            rows = min(ROW_BLOCK, batch - r0)
            if rows == 4:
                _rows4(h, r0 * k, rp, w0, koff, k, bias, m0, 4, _LO, _HI, _NO_Z, out, r0 * m, m, seg, 1, NONE)
            elif rows == 3:
                _rows3(h, r0 * k, rp, w0, koff, k, bias, m0, 3, _LO, _HI, _NO_Z, out, r0 * m, m, seg, 1, NONE)
            elif rows == 2:
                _rows2(h, r0 * k, rp, w0, koff, k, bias, m0, 2, _LO, _HI, _NO_Z, out, r0 * m, m, seg, 1, NONE)
            else:
                _rows1(h, r0 * k, rp, w0, koff, k, bias, m0, 1, _LO, _HI, _NO_Z, out, r0 * m, m, seg, 1, NONE)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _start(seq, batch, hidden, lens, has_lens, init, has_init, s_b, s0, state, y, y0, y_t, y_b):
    """The state from ``init`` (or zeros) and zeros in Y past each sequence's length."""
    for b in range(batch):
        for k in range(hidden):
            state[b * hidden + k] = init[s0 + b * s_b + k] if has_init else 0
        length = _length(lens, has_lens, b, seq)
        for t in range(length, seq):
            for k in range(hidden):
                y[y0 + t * y_t + b * y_b + k] = 0


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _finish(batch, hidden, state, out, s_b, s0):
    for b in range(batch):
        for k in range(hidden):
            out[s0 + b * s_b + k] = state[b * hidden + k]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _check_lens(lens, has_lens, batch, seq):
    """Whether every length is within [0, seq] (else the reference decides what happens)."""
    if has_lens:
        for b in range(batch):
            if lens[b] < 0 or lens[b] > seq:
                return False
    return True


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _length(lens, has_lens, b, seq):
    """Sequence ``b``'s length, within [0, seq] whatever ``lens`` holds: the caller sent lengths
    out of range to the reference, but a replay (:mod:`inference.kernel_replay`) skips that check."""
    if not has_lens:
        return seq
    return min(max(np.int64(lens[b]), 0), seq)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _time(s, length, rev):
    return length - 1 - s if rev else s


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=FAST_FINITE)
def _lstm_direction(rev, seq, batch, hidden, xw, t_rows, b_rows, rp, koff, rbias, peep, lens, has_lens, h, c,
                    y, y0, y_t, y_b, gates, pre, cell, seg, e, bits):
    """One direction's time loop: gates i, o, f, c; peepholes (zeros when absent) as the reference."""
    hd = hidden
    m = 4 * hd
    pi, po, pf = peep[:hd], peep[hd:2 * hd], peep[2 * hd:3 * hd]
    for s in range(seq):
        _recurrent(h, batch, rp, koff, rbias, gates, m, seg)
        for b in range(batch):
            length = _length(lens, has_lens, b, seq)
            if s >= length:
                continue
            t = _time(s, length, rev)
            xr = xw[(t * t_rows + b * b_rows) * m:(t * t_rows + b * b_rows + 1) * m]
            g = gates[b * m:(b + 1) * m]
            hb, cb = h[b * hd:(b + 1) * hd], c[b * hd:(b + 1) * hd]
            for k in range(hd):
                pre[k] = g[k] + xr[k] + pi[k] * cb[k]
                pre[2 * hd + k] = g[2 * hd + k] + xr[2 * hd + k] + pf[k] * cb[k]
                pre[3 * hd + k] = g[3 * hd + k] + xr[3 * hd + k]
            sigmoid_segment(pre[:hd], e[:hd], bits[:hd])
            sigmoid_segment(pre[2 * hd:3 * hd], e[:hd], bits[:hd])
            tanh_row(pre[3 * hd:], e, bits)
            for k in range(hd):
                cn = pre[2 * hd + k] * cb[k] + pre[k] * pre[3 * hd + k]
                cb[k] = cn
                cell[k] = cn
                pre[hd + k] = g[hd + k] + xr[hd + k] + po[k] * cn
            sigmoid_segment(pre[hd:2 * hd], e[:hd], bits[:hd])
            tanh_row(cell, e, bits)
            yo = y0 + t * y_t + b * y_b
            for k in range(hd):
                v = pre[hd + k] * cell[k]
                hb[k] = v
                y[yo + k] = v


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=FAST_FINITE)
def _gru_direction(rev, lbr, seq, batch, hidden, xw, t_rows, b_rows, rp1, rp2, koff, rbias, zero_bias, lens,
                   has_lens, h, y, y0, y_t, y_b, gates, gates2, zs, rh, pre, seg, e, bits):
    """One direction's time loop: gates z, r, h; the h gate's recurrent product is of r . h
    (``lbr`` 0, a second product per step) or multiplied by r (``lbr`` 1, one product)."""
    hd = hidden
    m = 3 * hd
    m1 = m if lbr else 2 * hd
    one = np.float32(1.0)
    for s in range(seq):
        _recurrent(h, batch, rp1, koff, rbias, gates, m1, seg)
        for b in range(batch):
            length = _length(lens, has_lens, b, seq)
            if s >= length:
                for k in range(hd):
                    rh[b * hd + k] = 0
                continue
            t = _time(s, length, rev)
            xr = xw[(t * t_rows + b * b_rows) * m:(t * t_rows + b * b_rows + 1) * m]
            g = gates[b * m1:(b + 1) * m1]
            hb = h[b * hd:(b + 1) * hd]
            for k in range(2 * hd):
                pre[k] = g[k] + xr[k]
            sigmoid_segment(pre[:2 * hd], e[:2 * hd], bits[:2 * hd])
            if lbr:
                for k in range(hd):
                    pre[2 * hd + k] = xr[2 * hd + k] + pre[hd + k] * g[2 * hd + k]
                tanh_row(pre[2 * hd:], e, bits)
                yo = y0 + t * y_t + b * y_b
                for k in range(hd):
                    z = pre[k]
                    v = (one - z) * pre[2 * hd + k] + z * hb[k]
                    hb[k] = v
                    y[yo + k] = v
            else:
                for k in range(hd):
                    zs[b * hd + k] = pre[k]
                    rh[b * hd + k] = pre[hd + k] * hb[k]
        if lbr:
            continue
        _recurrent(rh, batch, rp2, koff, zero_bias, gates2, hd, seg)
        for b in range(batch):
            length = _length(lens, has_lens, b, seq)
            if s >= length:
                continue
            t = _time(s, length, rev)
            xr = xw[(t * t_rows + b * b_rows) * m + 2 * hd:(t * t_rows + b * b_rows + 1) * m]
            hb = h[b * hd:(b + 1) * hd]
            cand = pre[2 * hd:]
            for k in range(hd):
                cand[k] = xr[k] + gates2[b * hd + k]
            tanh_row(cand, e, bits)
            yo = y0 + t * y_t + b * y_b
            for k in range(hd):
                z = zs[b * hd + k]
                v = (one - z) * cand[k] + z * hb[k]
                hb[k] = v
                y[yo + k] = v


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=FAST_FINITE)
def _rnn_direction(rev, seq, batch, hidden, xw, t_rows, b_rows, rp, koff, rbias, lens, has_lens, h, y, y0, y_t,
                   y_b, gates, seg, e, bits):
    """One direction's time loop: Ht = tanh(x W^T + H(t-1) R^T + Wb + Rb)."""
    hd = hidden
    for s in range(seq):
        _recurrent(h, batch, rp, koff, rbias, gates, hd, seg)
        for b in range(batch):
            length = _length(lens, has_lens, b, seq)
            if s >= length:
                continue
            t = _time(s, length, rev)
            xr = xw[(t * t_rows + b * b_rows) * hd:(t * t_rows + b * b_rows + 1) * hd]
            g = gates[b * hd:(b + 1) * hd]
            for k in range(hd):
                g[k] += xr[k]
            tanh_row(g, e, bits)
            yo = y0 + t * y_t + b * y_b
            hb = h[b * hd:(b + 1) * hd]
            for k in range(hd):
                hb[k] = g[k]
                y[yo + k] = g[k]


@threaded_kernel()
def _run(op, lbr, reverse, x, seq, batch, k_in, hidden, dirs, parts, t_rows, b_rows, wp, koff_in, xbias, rp1, rp2,
         koff, rbias, peep, lens, has_lens, h0, has_h0, c0, has_c0, s_d, s_b, y, y_t, y_d, y_b, yh, yc, scratch, bits):
    """Every direction of one node in ``parts`` per direction, a (direction, part) per parallel
    step: first the input projection of all steps (its rows in parts), then the recurrence (the
    batch in parts: its rows recur independently; a unidirectional LSTM at batch 8 had run on
    one of two threads), each part from its initial states through the time loop to its final
    states. ``scratch`` holds each direction's projection and each part's tail and working rows
    (:func:`_scratch_floats`), ``bits`` each part's int32 exp rows."""
    m = (4 if op == _LSTM else 3 if op == _GRU else 1) * hidden
    m1 = 2 * hidden if op == _GRU and not lbr else m
    rows = seq * batch
    pm, p1, p2 = xbias.size // dirs, rbias.size // dirs, rp2.size // (dirs * hidden)
    per_dir, per_part = _scratch_floats(op, lbr, seq, batch, k_in, hidden, parts)
    zero_bias = np.zeros(max(p2, NL), np.float32)
    part_rows = dirs * per_dir  # where the parts' working rows start
    for t in numba.prange(dirs * parts):  # the projection: a part of the rows per parallel step
        d, part = t // parts, t % parts
        r0, r1 = part * rows // parts, (part + 1) * rows // parts
        tail = scratch[part_rows + t * per_part:part_rows + t * per_part + _tail_floats(k_in, hidden)]
        matrix_product(x, r0 * k_in, r1 - r0, tail, koff_in, wp[d * pm * k_in:(d + 1) * pm * k_in],
                       xbias[d * pm:(d + 1) * pm], _NO_Z, False, _LO, _HI, scratch[d * per_dir:(d + 1) * per_dir],
                       r0 * m, m, WIDE[0], WIDE[1])
    for t in numba.prange(dirs * parts):
        d, part = t // parts, t % parts
        b0, b1 = part * batch // parts, (part + 1) * batch // parts
        nb = b1 - b0
        if nb == 0:
            continue
        sc = scratch[part_rows + t * per_part + _tail_floats(k_in, hidden):part_rows + (t + 1) * per_part]
        gts, sc = sc[:nb * m1], sc[nb * m1:]
        h, sc = sc[:nb * hidden], sc[nb * hidden:]
        c, sc = sc[:nb * hidden], sc[nb * hidden:]
        gates2, sc = sc[:nb * hidden], sc[nb * hidden:]
        zs, sc = sc[:nb * hidden], sc[nb * hidden:]
        rh, sc = sc[:nb * hidden], sc[nb * hidden:]
        pre, sc = sc[:m], sc[m:]
        cell, sc = sc[:hidden], sc[hidden:]
        e = sc[:m]
        bt = bits[t * m:(t + 1) * m]
        seg = np.empty((1, 3), np.int64)
        xw = scratch[d * per_dir + b0 * b_rows * m:d * per_dir + rows * m]  # the part's first row at 0
        part_lens = lens[b0:] if has_lens else lens
        rev = reverse or d == 1
        y0, s0 = d * y_d + b0 * y_b, d * s_d + b0 * s_b
        _start(seq, nb, hidden, part_lens, has_lens, h0, has_h0, s_b, s0, h, y, y0, y_t, y_b)
        r1 = rp1[d * p1 * hidden:(d + 1) * p1 * hidden]
        rb = rbias[d * p1:(d + 1) * p1]
        if op == _LSTM:
            for b in range(nb):
                for k in range(hidden):
                    c[b * hidden + k] = c0[s0 + b * s_b + k] if has_c0 else 0
            _lstm_direction(rev, seq, nb, hidden, xw, t_rows, b_rows, r1, koff, rb,
                            peep[d * 3 * hidden:(d + 1) * 3 * hidden], part_lens, has_lens, h, c, y, y0, y_t, y_b,
                            gts, pre, cell, seg, e, bt)
            _finish(nb, hidden, c, yc, s_b, s0)
        elif op == _GRU:
            _gru_direction(rev, lbr, seq, nb, hidden, xw, t_rows, b_rows, r1,
                           rp2[d * p2 * hidden:(d + 1) * p2 * hidden], koff, rb, zero_bias, part_lens, has_lens, h, y,
                           y0, y_t, y_b, gts, gates2, zs, rh, pre, seg, e, bt)
        else:
            _rnn_direction(rev, seq, nb, hidden, xw, t_rows, b_rows, r1, koff, rb, part_lens, has_lens, h, y, y0,
                           y_t, y_b, gts, seg, e, bt)
        _finish(nb, hidden, h, yh, s_b, s0)


@numba.njit(cache=True, nogil=True)
def _scratch_floats(op, lbr, seq, batch, k_in, hidden, parts):
    """Floats of (one direction's projection and tail, one batch part's working rows) in
    :func:`_run` (its slicing, in order)."""
    m = (4 if op == _LSTM else 3 if op == _GRU else 1) * hidden
    m1 = 2 * hidden if op == _GRU and not lbr else m
    rows = -(-batch // parts)  # a part's most rows
    return seq * batch * m, _tail_floats(k_in, hidden) + rows * m1 + 5 * rows * hidden + 2 * m + hidden


@numba.njit(cache=True, nogil=True, inline="always")
def _tail_floats(k_in, hidden):
    """The projection's zero-padded last block of rows (``rows_gemm.matrix_product``'s tail)."""
    return WIDE[0] * max(k_in, hidden)


def batch_parts(dirs: int, batch: int) -> int:
    """Parts a direction's batch recurs in: enough that every kernel thread has a (direction, part)."""
    threads = kernel_threads()
    return max(1, min(batch, threads // dirs)) if threads > dirs else 1


# -- plan-time choice and binding ---------------------------------------------------------------

def _supported(op: int, attrs: dict[str, Any]) -> bool:
    """Whether the node's attributes are ones this kernel computes (else the reference runs)."""
    if not set(attrs) <= _ATTRS[op] or attrs.get("direction", "forward") not in _DIRECTIONS:
        return False
    if attrs.get("layout", 0) not in (0, 1) or attrs.get("input_forget", 0) or \
            attrs.get("linear_before_reset", 0) not in (0, 1):
        return False
    acts = attrs.get("activations")
    if acts:
        n_dirs = _DIRECTIONS[attrs.get("direction", "forward")]
        names = [a.decode() if isinstance(a, bytes) else str(a) for a in acts]
        if [a.lower() for a in names] != list(_DEFAULT_ACTS[op]) * n_dirs:
            return False
    return True


def _applies(op: int) -> Callable[[Node, Graph], bool]:
    def applies(node: Node, graph: Graph) -> bool:
        return float32_input(node, graph) and _supported(op, node.attrs)
    return applies


def _applies_packed(op: int) -> Callable[[Node, Graph], bool]:
    """The ``packed`` kind: also W, R (and B when given) constant initializers, laid out once."""
    def applies(node: Node, graph: Graph) -> bool:
        if not (float32_input(node, graph) and _supported(op, node.attrs)) or len(node.inputs) < 3:
            return False
        weights = [node.inputs[1], node.inputs[2]] + [n for n in node.inputs[3:4] if n]
        return all(constant_weight(graph, n) is not None for n in weights)
    return applies


class _Cell:
    """A node's bound kernel: attributes resolved once, shapes checked per call (the reference runs
    whatever this does not take, so that its errors and results stay the op's)."""

    def __init__(self, op: int, keep: bool, attrs: dict[str, Any]):
        self.op, self.keep, self.attrs = op, keep, attrs
        self.reference = _REFERENCE[op]
        direction = attrs.get("direction", "forward")
        self.dirs = _DIRECTIONS.get(direction, 0)
        self.reverse = direction == "reverse"
        self.layout = attrs.get("layout", 0)
        self.lbr = int(attrs.get("linear_before_reset", 0))
        self.hidden_attr = attrs.get("hidden_size")
        self.weights = LastWeights()
        self.koffs: dict = {}
        self.supported = _supported(op, attrs)  # the unbound kernel may be called with any attributes

    def __call__(self, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None):
        args = (X, W, R, B, sequence_lens, initial_h) + ((initial_c, P) if self.op == _LSTM else ())
        if not self.supported or not self._takes(X, W, R, B, sequence_lens, initial_h, initial_c, P):
            return self.reference(*args, **self.attrs)
        op, dirs, hidden = self.op, self.dirs, R.shape[-1]
        if self.layout:
            batch, seq, k_in = X.shape
            t_rows, b_rows = 1, seq
            y = new_output((batch, seq, dirs, hidden))
            y_t, y_d, y_b = dirs * hidden, hidden, seq * dirs * hidden
            s_d, s_b = hidden, dirs * hidden
            state = (batch, dirs, hidden)
        else:
            seq, batch, k_in = X.shape
            t_rows, b_rows = batch, 1
            y = new_output((seq, dirs, batch, hidden))
            y_t, y_d, y_b = dirs * batch * hidden, batch * hidden, hidden
            s_d, s_b = batch * hidden, hidden
            state = (dirs, batch, hidden)
        lens = _NO_LENS if sequence_lens is None else _flat(sequence_lens)
        if not _check_lens(lens, sequence_lens is not None, batch, seq):
            return self.reference(*args, **self.attrs)
        if self.keep:
            w = self.weights.get((W, R, B), lambda: _Weights(op, self.lbr, W, R, B, dirs, hidden, k_in, False))
        else:
            w = _Weights(op, self.lbr, W, R, B, dirs, hidden, k_in, True)
        koffs = self.koffs.get((k_in, hidden))
        if koffs is None:
            koffs = remember(self.koffs, (k_in, hidden), (panel_row_offsets(k_in, NL), panel_row_offsets(hidden, NL)))
        yh = new_output(state)
        yc = new_output(state) if op == _LSTM else _NO_STATE
        peep = _NO_STATE if P is None else _flat(P)
        if op == _LSTM and P is None:
            peep = self._zero_peepholes(dirs * 3 * hidden)
        parts = batch_parts(dirs, batch)
        per_dir, per_part = _scratch_floats(op, self.lbr, seq, batch, k_in, hidden, parts)
        scratch = new_scratch(dirs * (per_dir + parts * per_part))
        bits = new_scratch(dirs * parts * _GATES[op] * hidden, np.int32)
        _run(op, self.lbr, self.reverse, _flat(X), seq, batch, k_in, hidden, dirs, parts, t_rows, b_rows, w.wp,
             koffs[0], w.xbias, w.rp1, w.rp2, koffs[1], w.rbias, peep, lens, sequence_lens is not None,
             _NO_STATE if initial_h is None else _flat(initial_h), initial_h is not None,
             _NO_STATE if initial_c is None else _flat(initial_c), initial_c is not None, s_d, s_b,
             y.reshape(-1), y_t, y_d, y_b, yh.reshape(-1), yc.reshape(-1), scratch, bits)
        return (y, yh, yc) if op == _LSTM else (y, yh)

    def _zero_peepholes(self, n: int) -> np.ndarray:
        z = getattr(self, "_zeros", None)
        if z is None or z.size != n:
            z = self._zeros = np.zeros(n, np.float32)
        return z

    def _takes(self, X, W, R, B, lens, h0, c0, P) -> bool:
        """Shapes and types this kernel computes; anything else goes to the reference (its errors)."""
        f32 = np.float32
        if X.dtype != f32 or W.dtype != f32 or R.dtype != f32 or X.ndim != 3 or W.ndim != 3 or R.ndim != 3:
            return False
        dirs, hidden = self.dirs, R.shape[-1]
        rows = _GATES[self.op] * hidden
        if self.hidden_attr not in (None, hidden) or hidden == 0 or W.shape != (dirs, rows, X.shape[2]) \
                or R.shape != (dirs, rows, hidden) or 0 in X.shape:
            return False
        batch = X.shape[0] if self.layout else X.shape[1]
        state = (batch, dirs, hidden) if self.layout else (dirs, batch, hidden)
        if B is not None and (B.dtype != f32 or B.shape != (dirs, 2 * rows)):
            return False
        if lens is not None and (lens.dtype.kind not in "iu" or lens.shape != (batch,)):
            return False
        for s in (h0, c0):
            if s is not None and (s.dtype != f32 or s.shape != state):
                return False
        return P is None or (P.dtype == f32 and P.shape == (dirs, 3 * hidden))


def _binder(op: int, keep: bool) -> Callable[[Callable], Callable[..., Callable[..., Any]]]:
    def make(_fn: Callable) -> Callable[..., Callable[..., Any]]:
        def bind(**attrs: Any) -> Callable[..., Any]:
            return _Cell(op, keep, attrs)
        return bind
    return make


def _unbound(op: int) -> Callable[..., Any]:
    """The kernel called without its binder (what the registry keeps as ``fn``)."""
    def kernel(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, **attrs):
        return _Cell(op, False, attrs)(X, W, R, B, sequence_lens, initial_h, initial_c, P)
    kernel.__name__ = kernel.__qualname__ = f"{_NAMES[op].lower()}_fast"
    return kernel


_NAMES = {v: k for k, v in _OPS.items()}
lstm_fast, gru_fast, rnn_fast = (_unbound(op) for op in (_LSTM, _GRU, _RNN))
for _op, _fn in ((_LSTM, lstm_fast), (_GRU, gru_fast), (_RNN, rnn_fast)):
    register(_NAMES[_op], since=1, kind="fast", applies=_applies(_op), bind=_binder(_op, False))(_fn)
    register(_NAMES[_op], since=1, kind="packed", applies=_applies_packed(_op), bind=_binder(_op, True))(_fn)
