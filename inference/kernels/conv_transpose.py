"""Fast 1-D and 2-D float32 ConvTranspose: the reference's tap products, then one scatter pass.

Why: segmentation decoders (UNet's up-path) and autoencoders upsample with ConvTranspose. The
reference does the products as one matmul (kept here: BLAS does it well) and then scatters each
kernel tap with a strided numpy add into a zeroed, padded array, crops it and adds the bias: a
UNet's 32 -> 16 channel 2x2/2 layer on 32x32 maps (batch 2) took ~400 us that way. Here one
numba pass per output plane writes the bias, adds every tap's contributions inside the crop and
never makes the uncropped array; the plane goes to the step's arena slot. A kernel as large as its
stride (UNet's 2x2/2) tiles the output: each pixel is then written once (:func:`interleave_taps`);
overlapping taps at a stride of 1 or 2 (a GAN's 4x4/2) are summed by column phase, then
interleaved (:func:`phase_taps`).
"""
from __future__ import annotations

import numba
import numpy as np

from inference.ir import Graph, Node
from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output, new_scratch
from inference.ops.conv_transpose import conv_transpose, tap_products, transpose_geometry
from inference.ops.registry import register


def _applies(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[0])
    return float32_input(node, graph) and (t is None or getattr(t, "rank", None) in (3, 4, None))


@register("ConvTranspose", since=1, kind="fast", applies=_applies)
def conv_transpose_fast(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                        output_padding=None, output_shape=None, pads=None, strides=None):
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                 output_padding=output_padding, output_shape=output_shape, pads=pads, strides=strides)
    if x.ndim not in (3, 4) or any(a is not None and a.dtype != np.float32 for a in (x, w, b)):
        return conv_transpose(x, w, b, **attrs)
    kernel, strides, dilations, begin, out_shape, _ = transpose_geometry(x, w, **attrs)
    y = new_output((x.shape[0], w.shape[1] * group) + tuple(out_shape))
    if x.ndim == 3:  # a row of height 1
        x, w = x[:, :, None, :], w[:, :, None, :]
        kernel, strides, dilations, begin = (1, *kernel), (1, *strides), (1, *dilations), (0, *begin)
    taps = new_scratch((x.shape[0], y.shape[1]) + tuple(kernel) + x.shape[2:])  # the workspace's: no heap per run
    contrib = tap_products(x, w, group, kernel, out=taps)
    m = contrib.shape[1]
    bias = np.zeros(m, np.float32) if b is None else np.ascontiguousarray(b, dtype=np.float32).reshape(m)
    planes = y.reshape(contrib.shape[:2] + (1 if y.ndim == 3 else y.shape[2], y.shape[-1]))
    if tuple(kernel) == tuple(strides) and tuple(dilations) == (1, 1) and tuple(begin) == (0, 0) \
            and planes.shape[2:] == (x.shape[2] * strides[0], x.shape[3] * strides[1]):
        interleave_taps(contrib, bias, planes)  # every output pixel one tap's: written once
    elif tuple(dilations) == (1, 1) and min(begin) >= 0 and strides[1] <= 2:
        phase_taps(contrib, bias, strides[0], strides[1], begin[0], begin[1], planes)
    else:
        scatter_taps(contrib, bias, strides[0], strides[1], dilations[0], dilations[1], begin[0], begin[1], planes)
    return y


@threaded_kernel()
def scatter_taps(contrib, bias, sh, sw, dh, dw, ph, pw, y):
    """``y[n, m]`` = bias[m] + each tap's products at ``(i*sh + ki*dh - ph, j*sw + kj*dw - pw)``
    where that falls inside ``y``; an output plane per parallel step (no two steps write one)."""
    n, m, kh, kw, h, w = contrib.shape
    oh, ow = y.shape[2], y.shape[3]
    for t in numba.prange(n * m):
        i_n, i_m = t // m, t % m
        plane = y[i_n, i_m]
        plane[:, :] = bias[i_m]
        for ki in range(kh):
            for kj in range(kw):
                src = contrib[i_n, i_m, ki, kj]
                off = kj * dw - pw
                j0 = max(0, (-off + sw - 1) // sw)  # first j with j*sw + off >= 0
                j1 = min(w, (ow - 1 - off) // sw + 1) if ow - 1 - off >= 0 else 0
                for i in range(h):
                    oy = i * sh + ki * dh - ph
                    if oy < 0 or oy >= oh:
                        continue
                    row, s = plane[oy], src[i]
                    for j in range(j0, j1):
                        row[j * sw + off] += s[j]


@threaded_kernel()
def interleave_taps(contrib, bias, y):
    """``y[n, m, i*kh + ki, j*kw + kj] = bias[m] + contrib[n, m, ki, kj, i, j]``: the kernel as large
    as the stride, no pads or dilation (a UNet's 2x2/2 up-convolution), so the taps tile the output
    and each pixel is written once. A tap's row goes to every kw-th pixel of an output row; with
    the row's kw taps in one loop the stores interleave and vectorise, where :func:`scatter_taps`'
    add through a stride of 2 ran one element at a time (64 -> 32 channels, 56x56 -> 112x112, one
    thread: 321 -> 43 us; bitwise the same, one add either way)."""
    n, m, kh, kw, h, w = contrib.shape
    for t in numba.prange(n * m):
        i_n, i_m = t // m, t % m
        plane, b = y[i_n, i_m], bias[i_m]
        for i in range(h):
            for ki in range(kh):
                row = plane[i * kh + ki]
                if kw == 2:
                    s0, s1 = contrib[i_n, i_m, ki, 0, i], contrib[i_n, i_m, ki, 1, i]
                    for j in range(w):
                        row[2 * j] = s0[j] + b
                        row[2 * j + 1] = s1[j] + b
                else:
                    for kj in range(kw):
                        s = contrib[i_n, i_m, ki, kj, i]
                        for j in range(w):
                            row[j * kw + kj] = s[j] + b


@threaded_kernel()
def phase_taps(contrib, bias, sh, sw, ph, pw, y):
    """:func:`scatter_taps` for no dilation, pads >= 0 and a column stride ``sw`` of 1 or 2, a row
    at a time: output column ``v - pw`` (``v = q*sw + r``) sums the taps ``kj = r + t*sw`` of input
    column ``q - t``, so each tap's row is added whole, shifted, into its phase ``r``'s sums (a
    vectorised add), and the phases are then interleaved into the row with the bias. The scatter
    had added through a stride of 2 one element at a time (a 4x4/2 from 128 to 64 channels, 28x28
    -> 56x56, one thread: 660 -> 270 us)."""
    n, m, kh, kw, h, w = contrib.shape
    oh, ow = y.shape[2], y.shape[3]
    qn = (ow - 1 + pw) // sw + 1
    for t in numba.prange(n * m):
        i_n, i_m = t // m, t % m
        plane, b = y[i_n, i_m], bias[i_m]
        acc = np.empty((sw, qn), np.float32)
        for oy in range(oh):
            u = oy + ph
            a, base = u % sh, u // sh
            for r in range(sw):
                line = acc[r]
                for q in range(qn):
                    line[q] = 0
            for ki in range(a, kh, sh):
                i = base - (ki - a) // sh
                if i < 0 or i >= h:
                    continue
                for kj in range(kw):
                    shift = kj // sw
                    q1 = min(qn, shift + w)
                    if q1 <= shift:
                        continue
                    d, s = acc[kj % sw, shift:q1], contrib[i_n, i_m, ki, kj, i]
                    for j in range(q1 - shift):
                        d[j] += s[j]
            row = plane[oy]
            if sw == 2:
                even, odd = acc[pw % 2, pw // 2:], acc[(pw + 1) % 2, (pw + 1) // 2:]
                half = ow // 2
                for q in range(half):
                    row[2 * q] = even[q] + b
                    row[2 * q + 1] = odd[q] + b
                if ow % 2:
                    row[ow - 1] = even[half] + b
            else:
                line = acc[0, pw:]
                for q in range(ow):
                    row[q] = line[q] + b
