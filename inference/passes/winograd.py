"""Pick Winograd's F(2x2, 3x3) for the channels-last 3x3 convolutions where it is faster.

A 3x3 stride-1 convolution takes 9 multiply-adds per output and channel pair on the direct tile,
4 (plus the transforms) with Winograd's minimal filtering (:mod:`inference.kernels.winograd`):
ResNet-18's 3x3 stride-1 layers on 56x56 to 14x14 maps ran in 0.73-0.90x the direct tile's time
(one thread, in model order, ``benchmarks/winograd.py``). Its sums round differently from the
direct ones (relative difference ~1e-6 on those layers), so it is a pass of its own:
``Config(passes={"winograd_conv": False})`` keeps every convolution direct, also in a model saved
by ``edgelearn optimize`` with marks (the switch runs :func:`unmark_winograd` on it).

Marked ``algorithm="winograd"``: an ``edgelearn::FusedConvNHWC`` of NHWC input of known height,
width and channels, with a constant float32 3x3 weight, stride and dilation 1, group 1, no
``input_order``, :func:`~inference.kernels.winograd.eligible` by its shapes and with few of the
weight's (tap, output) planes all zero (a 1x1 branch merged into a 3x3 convolution by
:mod:`inference.passes.concat_convs` is cheaper on the direct tile, which skips its zero taps).
A mark that no longer holds (the node changed) is taken back. The kernel still runs a marked
convolution directly at a batch too small for Winograd to pay (``MIN_TILE_CHANNELS``).
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels import winograd
from inference.kernels.fused import DOMAIN
from inference.kernels.nhwc import DIRECT, OP, WINOGRAD, conv_window
from inference.passes._rewrite import constant_value


def _qualifies(g: Graph, n: Node) -> bool:
    a = n.attrs
    if (int(a.get("group", 1)) != 1 or a.get("input_order") is not None
            or a.get("input_layout", "NHWC") != "NHWC"):
        return False
    w = constant_value(g, n.inputs[1])
    x = g.type_of(n.inputs[0])
    if (w is None or w.dtype != np.float32 or w.ndim != 4 or not isinstance(x, TensorType) or x.rank != 4
            or not all(isinstance(d, int) for d in x.shape[1:])):
        return False
    win = conv_window(x.shape[1:3], w.shape, a, n.label())
    return winograd.eligible(x.shape[3], w.shape, win) and winograd.zero_plane_share(w) <= winograd.MAX_ZERO_PLANES


def choose_winograd(model: Model) -> bool:
    """Mark the convolutions Winograd serves (and unmark those it no longer does); returns whether
    any mark changed."""
    g, changed = model.graph, False
    for n in g.nodes:
        if (n.domain, n.op_type) != (DOMAIN, OP):
            continue
        want = WINOGRAD if _qualifies(g, n) else DIRECT
        if n.attrs.get("algorithm", DIRECT) != want:
            if want == DIRECT:
                n.attrs.pop("algorithm")
            else:
                n.attrs["algorithm"] = want
            changed = True
    return changed


def unmark_winograd(model: Model) -> bool:
    """The pass switched off: every convolution direct (a saved model's marks taken back); returns
    whether any mark was there."""
    changed = False
    for n in model.graph.nodes:
        if (n.domain, n.op_type) == (DOMAIN, OP) and n.attrs.pop("algorithm", DIRECT) != DIRECT:
            changed = True
    return changed
