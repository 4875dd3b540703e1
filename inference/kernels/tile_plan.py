"""The geometry of one implicit-GEMM convolution (int8 or float32 tiles), worked out once per
(input shape, weight shape, attributes).

Why: at batch 1 ResNet-18's later convolutions take ~0.3-0.7 ms of arithmetic, and deriving their
pads, layout, plane sizes and tap-offset table on every call cost ~0.1 ms each in Python. The
session calls a node's kernel with the same shapes run after run, so the plan is memoised.

Layouts (see ``inference.kernels.int8`` and ``inference.kernels.conv_f32``): ``direct`` (stride 1:
implicit GEMM over the padded input, its channels interleaved by the tile's ``chans`` per step),
``s2d<s>`` (stride s as stride 1 over the input's s*s phases, each phase with its own taps),
``subsample`` (strided 1x1 without padding: pick the pixels, then direct), ``im2col`` (dilated
strided convolutions: packed columns).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from inference.errors import KernelError
from inference.ops._window import window_geometry

NP = 32  # pixels per tile (int8.NP)


@dataclass(frozen=True)
class ConvPlan:
    layout: str  # "direct", "subsample", "s2d<s>" or "im2col"
    oh: int
    ow: int
    cg: int  # input channels per group as the tile sees them (x s*s after space-to-depth)
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    ph: int  # padding the interleave (direct) or packing (im2col) applies
    pw: int
    subsample: tuple[int, int] | None  # strides of a "subsample" plan's pixel picking
    s2d: tuple[int, int, int, int, int] | None  # (s, pad top, pad left, rows, cols) of the s2d input
    wrow: int  # direct: width of the padded input rows (flat positions per output row)
    nflat: int  # flat output positions (direct: oh * wrow; im2col: oh * ow)
    plane: int  # direct: uint8 pixels per interleaved channel group plane
    groups: int  # direct: channel groups of ``chans`` (one plane each)
    k4: int  # im2col: tile steps (``chans`` taps each)
    koff: np.ndarray  # per tile step, the offset of its pixel vectors (read-only)

    @property
    def weight_layout(self) -> str:
        """How the weights are packed for this plan (``_packed``'s layout)."""
        return "direct" if self.layout == "subsample" else self.layout


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=1024)
def conv_plan(x_shape: tuple, w_shape: tuple, group: int, auto_pad: str, dilations, kernel_shape, pads,
              strides, chans: int = 4) -> ConvPlan:
    """The plan of a convolution on ``x_shape`` (N, C, H, W) with weight ``w_shape`` (M, C/group,
    kh, kw); attribute sequences as tuples (or None); ``chans`` input channels per tile step (4 for
    the int8 tile, whose lanes hold 4 taps; 1 for float32)."""
    _, c, h, wd = x_shape
    m, cg, kh, kw = w_shape
    if c != cg * group or m % group:
        raise KernelError(f"Conv: X has {c} channels, W {tuple(w_shape)} with group={group}")
    win = window_geometry((h, wd), kernel_shape or (kh, kw), strides, dilations, pads, auto_pad, 0, "QConv")
    (oh, ow), (sh, sw), (dh, dw) = win.out_shape, win.strides, win.dilations
    (ph, pw), (qh, qw) = win.pads_begin, win.pads_end
    layout, sub, s2d = "direct", None, None
    if kh == kw == 1 and (sh, sw) != (1, 1) and not any(win.pads_begin + win.pads_end):
        layout, sub, h, wd, sh, sw, qh, qw = "subsample", (sh, sw), oh, ow, 1, 1, 0, 0
    elif sh == sw > 1 and dh == dw == 1:
        s = sh
        kh, kw = -(-kh // s), -(-kw // s)  # taps of the fullest phase
        h, wd = oh + kh - 1, ow + kw - 1
        s2d = (s, ph, pw, h, wd)
        layout = f"s2d{s}"
        sh = sw = 1
        ph = pw = qh = qw = 0
    elif (sh, sw) != (1, 1):
        npix, k4 = oh * ow, -(-(cg * kh * kw) // chans)
        return ConvPlan("im2col", oh, ow, cg, kh, kw, sh, sw, dh, dw, ph, pw, None, None, ow, npix, 0, 0, k4,
                        _readonly(np.arange(k4, dtype=np.int64) * NP))
    # a row's right padding is read as the next row's left padding (zeros either way), so rows
    # need only max(pw, qw) pad columns: 3x3 on 13x13 then fills 3 64-pixel tiles, not 4
    wrow = wd + pw + max(0, qw - pw)
    if wrow < ow:  # pads wider than the kernel reaches: every output column needs its own slot
        wrow = wd + pw + qw
    nflat = oh * wrow
    plane = max((h + ph + qh) * wrow, -(-nflat // NP) * NP + (kh - 1) * dh * wrow + (kw - 1) * dw)
    cb = -(-cg // chans)
    if s2d is None:
        groups = cb
        koff = (np.arange(groups)[:, None, None] * plane + np.arange(kh)[None, :, None] * (dh * wrow)
                + np.arange(kw)[None, None, :] * dw).reshape(-1)
    else:  # groups (phase, channel block); each phase only its own taps: no zero taps in K
        groups = s * s * cb
        koff = np.array([gi * plane + qy * wrow + qx for gi in range(groups)
                         for qy, qx in phase_taps(w_shape[2:], s, *divmod(gi // cb, s))], dtype=np.int64)
    return ConvPlan(layout, oh, ow, cg, kh, kw, sh, sw, dh, dw, ph, pw, sub, s2d, wrow, nflat, plane, groups, 0,
                    _readonly(koff.astype(np.int64)))


def phase_taps(kernel: tuple, s: int, a: int, b: int) -> list[tuple[int, int]]:
    """The (qy, qx) taps of phase (a, b) of a stride-``s`` kernel: original taps (a + s qy, b + s qx)."""
    kh, kw = kernel
    return [(qy, qx) for qy in range(-(-(kh - a) // s)) for qx in range(-(-(kw - b) // s))]


def conv_weight_rows(w: np.ndarray, direct: bool, chans: int = 4) -> np.ndarray:
    """Conv weight (M, C, kh, kw) as (M, K) in the tap order of the pixel operand: (c, ky, kx)
    for im2col columns, (c/chans, ky, kx, c%chans) for the direct layout (channels padded)."""
    m, c, kh, kw = w.shape
    if not direct or chans == 1:
        return w.reshape(m, -1)
    cb = -(-c // chans)
    padded = np.zeros((m, cb * chans, kh, kw), w.dtype)
    padded[:, :c] = w
    return padded.reshape(m, cb, chans, kh, kw).transpose(0, 1, 3, 4, 2).reshape(m, -1)


def phase_weight_rows(w: np.ndarray, s: int, chans: int = 4) -> np.ndarray:
    """Weight (M, C, kh, kw) of a stride-``s`` conv as (M, K) in the tap order of the phase
    layout: per group (phase (a, b), ``chans`` channels), that phase's taps (qy, qx), ``chans``
    channels each (channels padded): the order of the phase layout and the plan's offsets."""
    m, c, kh, kw = w.shape
    cb = -(-c // chans)
    padded = np.zeros((m, cb * chans, kh, kw), w.dtype)
    padded[:, :c] = w
    cols = [padded[:, chans * g:chans * g + chans, a + s * qy, b + s * qx]
            for a in range(s) for b in range(s) for g in range(cb) for qy, qx in phase_taps((kh, kw), s, a, b)]
    return np.stack(cols, axis=1).reshape(m, -1)
