"""What the channels-last block fusions (inverted residuals, squeeze-and-excitation) ask of the
``FusedConvNHWC`` nodes they take in."""
from __future__ import annotations

from inference.ir import Graph, Node, TensorType
from inference.kernels.fused import DOMAIN
from inference.kernels.nhwc import OP as CONV


def plain_nhwc_conv(n: Node) -> bool:
    """A FusedConvNHWC on an NHWC input without a channel order, dilation 1."""
    a = n.attrs
    return ((n.domain, n.op_type) == (DOMAIN, CONV) and a.get("input_layout", "NHWC") == "NHWC"
            and a.get("input_order") is None and all(int(d) == 1 for d in a.get("dilations") or ()))


def residual_input(n: Node) -> str:
    """A FusedConvNHWC's residual Z, "" when it has none."""
    return n.input_at(3)


def static_weight_shape(g: Graph, n: Node) -> tuple | None:
    """A conv's HWIO weight shape when it is known and static."""
    t = g.type_of(n.inputs[1]) if len(n.inputs) > 1 else None
    return tuple(t.shape) if isinstance(t, TensorType) and t.rank == 4 and all(isinstance(d, int) for d in t.shape) \
        else None
