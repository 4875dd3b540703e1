"""Run conv chains channels-last: regions of convolutions become ``edgelearn::FusedConvNHWC``.

Why: depthwise convolutions dominate MobileNet-style models, and in NCHW their inner loop runs
over a short output row; in NHWC it runs over contiguous channels (measured per MobileNetV2 layer,
batch 1: 1.7-13x faster at 96-960 channels, on par at 32; see ``inference.kernels.nhwc``). 1x1
and kxk convolutions join a region to keep the data channels-last between depthwise layers, and
since they gather their patches in place (``inference.kernels.nhwc``) they gain on their own too,
though less (the rule below).

What converts: float32 ``FusedConv``/``Conv`` nodes with a constant weight, static channels and
spatial size, any group. A group-1 kxk conv on fewer than :data:`MIN_KXK_CHANNELS` input channels
(an RGB stem) reads its NCHW input in place (``input_layout`` "NCHW": the gathered GEMM's step
table addresses channel planes) and writes channels-last, so no transpose precedes the region. Why:
MobileNetV2's 3->32 stem on the NCHW tile plus the transpose after it took ~0.95 ms in the model
(the transpose of 32x112x112 alone ~0.34), read in place ~0.55 ms alone; squeezenet's 3->64 stem
1.25 ms on the NCHW tile, ~0.5 read in place. (Transposing the RGB input instead ran 1.4x slower
than the NCHW tile: 0.80 against 0.56 ms, half the 64-lane tile idle at 32 outputs then, 8 x 48
tiles now.) Also converted: elementwise ops between them (activations, same-shape
Add/Sub/Mul/Div/Max/Min, or one operand a per-channel (N, C, 1, 1) gate); Concat, Split, Slice and
``edgelearn::ChannelShuffle`` along the channels (axis 3 once converted); a Resize of the height
and width alone (nearest or linear, constant scales or sizes, permuted to NHWC's order: the
standard op on the channels-last tensor; a YOLO-style neck's upsampling had cut its CNN into
regions too small to pay); and Max/Average pools, global ones included
(``edgelearn::MaxPoolNHWC``/``AveragePoolNHWC``, a global pool as one window over the map), when
what they read is channels-last anyway; and a model's own permutes between NCHW and NHWC (a
ConvNeXt block's), which become Identities (:func:`_permute`). Nodes connected through NHWC
tensors, or reading the same outside tensor, form one region. Transposes go only at a region's
boundary: one into NHWC per outside tensor a region reads, one back to NCHW (under the original
name) per region tensor something else reads or the graph outputs.

int8 convolutions join the same way (``edgelearn::QConv`` -> ``edgelearn::QConvNHWC``, its weight
kept OIHW; :mod:`inference.kernels.int8_nhwc`): depthwise ones and group-1 1x1 ones (a kxk one
reads its NCHW input in place on the NCHW tile, where channels-last it would gather im2col
patches: an RGB stem 0.45 against 0.72 ms), with the per-tensor Quantize/DequantizeLinear and
``edgelearn::QAdd`` between them, so that a quantized MobileNetV2 runs channels-last from its stem
to its pool as onnxruntime's does (its 14x14 and 7x7 depthwise layers had run one short plane at a
time in NCHW: 960 x 7 x 7 200 against 51 us; the whole model 9.9 -> ~5 ms at one thread).

The rule for converting a region, either of: the output elements (per sample) of its depthwise
convolutions are at least :data:`MIN_DEPTHWISE_PER_BOUNDARY` times the elements its boundary
transposes move; or the multiply-adds of its other (group-1) convolutions are at least
:data:`MIN_GEMM_MACS_PER_BOUNDARY` times those elements.
Measured: a transpose of an image costs about what NHWC saves on one depthwise layer of that size
at ~144 channels (0.3-0.5 ms at 56x56, batch 1), more than it saves at 32 channels and far less
than at 192 and up. Group-1 convolutions gain less: gathered channels-last (output channels along
the tile's lanes, ``inference.kernels.nhwc``) against the NCHW tile, each bound once as in a
session, ResNet-18's convolutions ran 0.99x onnxruntime's time against 1.16x, squeezenet's 0.90x
against 1.19x (``benchmarks/conv_layouts.py --model``): ~2.8 ps saved per multiply-add on
ResNet-18 (~9 on squeezenet's short-K layers), where a transpose costs ~1.6 ns per element
(64x56x56 in 0.33 ms): break-even near 570 multiply-adds per moved element, the threshold is twice
that. ResNet-18 has ~8000 (its one region, from the MaxPool to the global pool); squeezenet ~1700
(one region from its stem pool to its global pool: 10% faster per run than NCHW, alternating
runs); a lone 3x3 layer has a few hundred and stays NCHW.
"""
from __future__ import annotations

import math

import numpy as np

from inference.ir import Graph, Model, Node, TensorType, Value
from inference.kernels.fused import CONV_ATTRS, DOMAIN, EPILOGUE_ATTRS
from inference.kernels.channel_shuffle import OP as SHUFFLE
from inference.kernels.int8_add import OP as QADD
from inference.kernels.int8_nhwc import OP as QCONV_NHWC, runs_here
from inference.kernels.nhwc import HWIO, OIHW, OP, TO_NCHW, TO_NHWC, is_depthwise, supports
from inference.kernels.pool_nhwc import POOLS
from inference.passes._epilogue import FUSABLE_ACTIVATIONS
from inference.passes._rewrite import constant_scalars, constant_value, drop_unused_initializers

MIN_DEPTHWISE_PER_BOUNDARY = 1.0
MIN_GEMM_MACS_PER_BOUNDARY = 1200.0
MIN_KXK_CHANNELS = 16
SUFFIX = "__nhwc"
BOUNDARY = "layout/"  # the names of the transposes at a region's boundary begin so

_UNARY = FUSABLE_ACTIVATIONS + ("Tanh", "Elu", "Softplus", "Identity")
_QUANTIZERS = ("QuantizeLinear", "DequantizeLinear")  # per tensor: elementwise, between int8 convolutions
_EIGHT_BIT, _IMAGE = (2, 3), (1, 2, 3)  # ONNX element types: uint8/int8; those and float32
_BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min")
_NHWC_POOL = {onnx_op: ours for ours, onnx_op in POOLS.items()}  # MaxPool -> MaxPoolNHWC, ...
_GLOBAL_POOL = {"GlobalAveragePool": "AveragePool", "GlobalMaxPool": "MaxPool"}  # = a window over the map


# -- which nodes can run channels-last --------------------------------------------------------------
def _nchw_type(g: Graph, name: str, elems: tuple[int, ...] = (1,)) -> TensorType | None:
    """The rank-4 type of ``name`` with static C, H, W (the batch may be symbolic), its element type
    one of ``elems`` (float32 unless said)."""
    t = g.type_of(name)
    if isinstance(t, TensorType) and t.elem_type in elems and t.rank == 4 \
            and all(isinstance(d, int) for d in t.shape[1:]):
        return t
    return None


def _is_conv(n: Node) -> bool:
    return (n.domain, n.op_type) in ((DOMAIN, "FusedConv"), ("", "Conv"))


def _is_qconv(n: Node) -> bool:
    return (n.domain, n.op_type) == (DOMAIN, "QConv")


def _weight(g: Graph, n: Node) -> np.ndarray:
    """The constant weight of a convolution: input 1 of a float one, input 3 of a QConv."""
    return constant_value(g, n.inputs[3 if _is_qconv(n) else 1])


def _qconv_ok(g: Graph, n: Node) -> bool:
    """An int8 QConv (8-bit X, constant int8 W) the channels-last kernels compute
    (:func:`inference.kernels.int8_nhwc.runs_here`): depthwise, or a group-1 1x1 (a kxk one would
    gather im2col patches channels-last, slower than the NCHW tile reading its input in place)."""
    x = _nchw_type(g, n.inputs[0], _EIGHT_BIT)
    w = constant_value(g, n.inputs[3]) if len(n.inputs) > 3 else None
    if x is None or w is None or w.dtype != np.int8 or w.ndim != 4 or _nchw_type(g, n.outputs[0], _IMAGE) is None:
        return False
    group = int(n.attrs.get("group", 1))
    return runs_here(x.shape[1], w.shape, group) and (group > 1 or w.shape[2:] == (1, 1))


def _conv_ok(g: Graph, n: Node) -> bool:
    x = _nchw_type(g, n.inputs[0])
    w = constant_value(g, n.inputs[1]) if len(n.inputs) > 1 else None
    if x is None or w is None or w.ndim != 4 or w.dtype != np.float32 or _nchw_type(g, n.outputs[0]) is None:
        return False
    c, group = x.shape[1], int(n.attrs.get("group", 1))
    hwio = w.shape[2:] + (w.shape[1], w.shape[0])
    small_kxk = c < MIN_KXK_CHANNELS and w.shape[2:] != (1, 1) and not is_depthwise(c, hwio, group)
    return supports(c, hwio, group) and (not small_kxk or group == 1)  # group 1: a stem, read NCHW


def _reads_nchw(g: Graph, n: Node) -> bool:
    """A group-1 kxk conv on fewer than :data:`MIN_KXK_CHANNELS` channels (an RGB stem): it reads
    its NCHW input in place (``input_layout`` "NCHW") and writes channels-last."""
    if not _is_conv(n) or int(n.attrs.get("group", 1)) != 1:
        return False
    x, w = _nchw_type(g, n.inputs[0]), constant_value(g, n.inputs[1]) if len(n.inputs) > 1 else None
    return x is not None and w is not None and w.ndim == 4 and w.shape[2:] != (1, 1) and x.shape[1] < MIN_KXK_CHANNELS


def _elementwise_ok(g: Graph, n: Node) -> bool:
    if n.domain == "" and n.op_type in _QUANTIZERS:
        return _quantizer_ok(g, n)
    if (n.domain, n.op_type) == (DOMAIN, QADD):  # an 8-bit residual Add: elementwise on two same-shape images
        a, b, y = (_nchw_type(g, i, _EIGHT_BIT) for i in (n.inputs[0], n.inputs[3], n.outputs[0]))
        return None not in (a, b, y) and a.shape == b.shape
    if n.domain != "" or len(n.outputs) != 1 or _nchw_type(g, n.outputs[0]) is None:
        return False
    if n.op_type in _BINARY:
        types = [_nchw_type(g, i) for i in n.inputs]
        if len(n.inputs) != 2 or None in types:
            return False
        a, b = (t.shape for t in types)
        return a == b or _channel_scale(a, b) or _channel_scale(b, a)
    if n.op_type not in _UNARY or _nchw_type(g, n.inputs[0]) is None:
        return False
    return constant_scalars(g, n.inputs[1:])  # Clip's bounds: constant scalars only


def _quantizer_ok(g: Graph, n: Node) -> bool:
    """A Quantize/DequantizeLinear of an image by constant per-tensor parameters (one value each:
    elementwise in any layout). Why: an int8 model's residual Adds and the tensors its float ops
    read sit between such pairs; outside, they had cut its convolutions into regions of one."""
    if len(n.outputs) != 1 or n.attrs.get("block_size", 0) or None in (_nchw_type(g, n.inputs[0], _IMAGE),
                                                                        _nchw_type(g, n.outputs[0], _IMAGE)):
        return False
    return constant_scalars(g, n.inputs[1:])



def _channel_scale(image: tuple, scale: tuple) -> bool:
    """``scale`` is (N, C, 1, 1) against ``image`` (N, C, H, W): one value per channel, broadcast
    over the map (a squeeze-and-excitation's gate). Channels-last it is (N, 1, 1, C), which
    broadcasts the same way. Why: MobileNetV3's gated blocks had cut its network into small
    regions that stayed NCHW (1.96x onnxruntime's time)."""
    return scale[0] == image[0] and scale[1] == image[1] and tuple(scale[2:]) == (1, 1)


def _channel_axis(g: Graph, n: Node) -> bool:
    """Concat, Split or ChannelShuffle along the channels of rank-4 NCHW tensors (Split: by constant
    sizes, or in equal parts). Why Split: a YOLOv8-style C2f block splits its 1x1's output in two
    along the channels; standing outside, it cut every block out of the channels-last region and
    the whole network stayed NCHW (1.46x onnxruntime's time)."""
    key = (n.domain, n.op_type)
    if key == ("", "Slice"):
        return _channel_slice(g, n)
    if key == ("", "Split"):
        sizes = n.input_at(1)
        if not n.inputs[0] or _nchw_type(g, n.inputs[0]) is None or (sizes and constant_value(g, sizes) is None):
            return False
        axis = int(n.attrs.get("axis", 0))  # Split's default axis is 0, Concat's has none (1 in Concat-1)
    elif key in (("", "Concat"), (DOMAIN, SHUFFLE)) and len(n.outputs) == 1:
        if any(i == "" or _nchw_type(g, i) is None for i in n.inputs):
            return False
        axis = int(n.attrs.get("axis", 1))
    else:
        return False
    return axis in (1, -3) and all(o and _nchw_type(g, o) is not None for o in n.outputs)


def _channel_slice(g: Graph, n: Node) -> bool:
    """A Slice (opset 10+) of the channels alone of an NCHW tensor, by constant starts, ends and
    steps. Why: PyTorch exports ``chunk`` as such Slices once the channel count is known (a
    YOLOv8-style C2f block under a dynamic batch), which cut each block out of the region."""
    if len(n.inputs) < 4 or len(n.outputs) != 1 or None in (_nchw_type(g, n.inputs[0]), _nchw_type(g, n.outputs[0])):
        return False
    axes = constant_value(g, n.inputs[3])
    bounds = [constant_value(g, i) for i in n.inputs[1:3] + n.inputs[4:5] if i]
    return axes is not None and axes.size == 1 and int(axes.reshape(-1)[0]) in (1, -3) and None not in bounds


def _resize_ok(g: Graph, n: Node) -> bool:
    """A Resize (opset 11+) of an NCHW image's height and width only, by constant scales or sizes,
    in a mode whose result along an axis of scale 1 is that axis as it was (nearest, linear; no
    ``axes``, antialias or crop box): then it computes the same on the channels-last tensor with
    its scales or sizes permuted the same way."""
    if (n.domain, n.op_type) != ("", "Resize") or len(n.outputs) != 1 or _nchw_type(g, n.inputs[0]) is None:
        return False
    a = n.attrs
    if (a.get("mode", "nearest") not in ("nearest", "linear") or a.get("axes") or a.get("antialias", 0)
            or a.get("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
            or a.get("keep_aspect_ratio_policy", "stretch") != "stretch" or _nchw_type(g, n.outputs[0]) is None):
        return False
    slot = _resize_slot(n)
    v = constant_value(g, n.inputs[slot]) if slot is not None else None
    if v is None or v.shape != (4,):
        return False
    x = g.type_of(n.inputs[0]).shape
    return bool(v[1] == 1) if slot == 2 else int(v[1]) == x[1]  # the channels untouched (sizes: N may be symbolic)


def _resize_slot(n: Node) -> int | None:
    """Which input of a Resize says its output size: scales (2) or sizes (3); None if neither."""
    for slot in (3, 2):
        if len(n.inputs) > slot and n.inputs[slot]:
            return slot
    return None


def _pool_ok(g: Graph, n: Node, nhwc: set[str]) -> bool:
    """A float32 2-D pool (Max/Average with one output, no Indices, or a Global one) reading one of
    the tensors ``nhwc`` (channels-last anyway). Why only those: a pool first in a region would move
    its input, larger than its output, through the transpose in (the pools after an NCHW stem).
    A global pool last in a region moves only its (N, C, 1, 1) output back to NCHW, where the
    transpose out had moved the whole map before it (MobileNetV2's 1280x7x7: ~0.1 ms)."""
    return (_is_pool(n) and len(n.outputs) == 1 and n.inputs[0] in nhwc and _nchw_type(g, n.inputs[0]) is not None
            and _nchw_type(g, n.outputs[0]) is not None)


def _permute(g: Graph, n: Node) -> str | None:
    """"exit" for a Transpose of a static NCHW image to NHWC, "entry" for one of an NHWC tensor to
    a static NCHW image; None for anything else. Why: ConvNeXt-style blocks write their channels-last
    part themselves (``x.permute(0, 2, 3, 1)`` -> LayerNorm -> Linear layers -> ``permute(0, 3, 1, 2)``
    -> residual Add), and a region's NHWC tensor *is* what an exit makes: in a region an exit is an
    Identity of the twin and an entry the twin of its input, no data moved. Standing outside, each
    had cut its block's depthwise convolution off into a region of its own that did not pay, and
    added its own transpose to the ones the region would have needed."""
    if n.domain != "" or n.op_type != "Transpose" or len(n.outputs) != 1 or n.name.startswith(BOUNDARY):
        return None  # a region's own boundary (an earlier run's) stays: the pass converts once
    perm = tuple(n.attrs.get("perm", ()))
    if perm == TO_NHWC and _nchw_type(g, n.inputs[0]) is not None:
        return "exit"
    if perm == TO_NCHW and _nchw_type(g, n.outputs[0]) is not None:
        return "entry"
    return None


def _is_pool(n: Node) -> bool:
    return n.domain == "" and (n.op_type in _NHWC_POOL or n.op_type in _GLOBAL_POOL)


def _candidates(g: Graph) -> list[Node]:
    """The nodes that can run channels-last, in graph order. A pool joins when what it reads is
    channels-last anyway: a candidate's output, or an input some other candidate reads (shufflenet's
    average pool beside a unit's first conv, both reading the stem pool's output)."""
    others = {id(n) for n in g.nodes if not _is_pool(n)
              and (_conv_ok(g, n) if _is_conv(n) else _qconv_ok(g, n) if _is_qconv(n)
                   else _channel_axis(g, n) or _elementwise_ok(g, n) or _resize_ok(g, n) or _permute(g, n) is not None)}
    nhwc = {t for n in g.nodes if id(n) in others for t in _data_inputs(g, n)}
    found: list[Node] = []
    for n in g.nodes:
        if id(n) in others or _pool_ok(g, n, nhwc):
            found.append(n)
            nhwc.update(n.outputs)
    return found


def _data_inputs(g: Graph, n: Node) -> list[str]:
    """The inputs that are images (and so change layout): X and the residual Z of a conv (not the X
    of a stem, :func:`_reads_nchw`)."""
    if _is_conv(n):
        first = 1 if _reads_nchw(g, n) else 0
        return [i for k, i in enumerate(n.inputs) if i and k in (0, 3) and k >= first]
    if _is_qconv(n):  # X and the float residual Z
        return [i for k, i in enumerate(n.inputs) if i and k in (0, 6)]
    if n.op_type == QADD:
        return [n.inputs[0], n.inputs[3]]
    if n.op_type == "Transpose":  # a permute (:func:`_permute`): an entry reads a tensor NHWC already
        return [n.inputs[0]] if _permute(g, n) == "exit" else []
    single = (n.op_type in _UNARY or n.op_type in _QUANTIZERS or n.op_type in _NHWC_POOL or n.op_type in _GLOBAL_POOL or n.op_type == SHUFFLE
              or n.op_type in ("Resize", "Split", "Slice"))
    return [n.inputs[0]] if single else list(n.inputs)


# -- regions ---------------------------------------------------------------------------------------
class _Regions:
    """Union-find over the candidate nodes."""

    def __init__(self, nodes: list[Node]):
        self.parent = {id(n): id(n) for n in nodes}

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def find_regions(g: Graph) -> list[list[Node]]:
    """Maximal groups of convertible nodes linked by tensors they pass or outside tensors they share."""
    cands = _candidates(g)
    uf = _Regions(cands)
    producer = {t: n for n in cands if _permute(g, n) != "exit" for t in n.outputs}  # an exit's is not NCHW
    first_reader: dict[str, Node] = {}
    for n in cands:
        for t in _data_inputs(g, n):
            if t in producer:
                uf.union(id(n), id(producer[t]))
            elif t in first_reader:
                uf.union(id(n), id(first_reader[t]))
            else:
                first_reader[t] = n
    groups: dict[int, list[Node]] = {}
    for n in cands:
        groups.setdefault(uf.find(id(n)), []).append(n)
    return list(groups.values())


def _numel(g: Graph, name: str) -> int:
    return math.prod(g.concrete_shape(name, batch=1) or (0,))


def _boundaries(g: Graph, region: list[Node], consumers: dict[str, list[Node]]) -> tuple[list[str], list[str]]:
    """(outside tensors the region reads as images, region tensors read outside it or output)."""
    ids = {id(n) for n in region}
    produced = list(dict.fromkeys(t for n in region if _permute(g, n) != "exit" for t in n.outputs))
    ins = list(dict.fromkeys(t for n in region for t in _data_inputs(g, n) if t not in produced))
    outs = [t for t in produced if t in g.output_names
            or any(id(r) not in ids or t not in _data_inputs(g, r) for r in consumers.get(t, []))]
    return ins, outs


def pays(g: Graph, region: list[Node], consumers: dict[str, list[Node]]) -> bool:
    """The module's rule: depthwise output elements >= MIN_DEPTHWISE_PER_BOUNDARY x transposed
    ones, or other convolutions' multiply-adds >= MIN_GEMM_MACS_PER_BOUNDARY x transposed ones."""
    ins, outs = _boundaries(g, region, consumers)
    moved = sum(_numel(g, t) for t in ins + outs)  # > 0: a region reads something
    convs = [n for n in region if _is_conv(n) or _is_qconv(n)]
    depthwise = sum(_numel(g, n.outputs[0]) for n in convs if int(n.attrs.get("group", 1)) > 1)
    macs = sum(_numel(g, n.outputs[0]) * math.prod(_weight(g, n).shape[1:])
               for n in convs if int(n.attrs.get("group", 1)) == 1)
    return depthwise >= MIN_DEPTHWISE_PER_BOUNDARY * moved or macs >= MIN_GEMM_MACS_PER_BOUNDARY * moved


# -- rewriting -------------------------------------------------------------------------------------
def _nhwc_value(g: Graph, name: str, new: str) -> Value:
    t = g.type_of(name)
    return Value(new, TensorType(t.elem_type, tuple(t.shape[i] for i in TO_NHWC)))


class _Names:
    """``name + SUFFIX`` for the NHWC twin of a tensor, numbered if the graph already has that name
    (a second run next to a region converted before)."""

    def __init__(self, g: Graph):
        self.taken = set(g.input_names) | set(g.initializers) | {o for n in g.nodes for o in n.outputs}
        self.twins: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self.twins:
            new, k = name + SUFFIX, 1
            while new in self.taken:
                new, k = f"{name}{SUFFIX}{k}", k + 1
            self.taken.add(new)
            self.twins[name] = new
        return self.twins[name]


def _converted(g: Graph, n: Node, hwio: dict[str, str], twin: _Names) -> Node:
    permute = _permute(g, n)
    if permute == "exit":  # the twin is the NHWC tensor it makes
        return Node("Identity", [twin(n.inputs[0])], list(n.outputs), {}, "", n.name)
    if permute == "entry":  # what it reads is the twin of what it makes
        return Node("Identity", list(n.inputs), [twin(n.outputs[0])], {}, "", n.name)
    rename = {i: twin(i) for i in _data_inputs(g, n)}
    inputs = [rename.get(i, i) for i in n.inputs]
    outputs = [twin(t) for t in n.outputs]
    if n.op_type in _NHWC_POOL:
        attrs = {k: v for k, v in n.attrs.items() if k != "storage_order"}  # no Indices: no storage order
        return Node(_NHWC_POOL[n.op_type], inputs, outputs, attrs, DOMAIN, n.name or n.outputs[0])
    if n.op_type in _GLOBAL_POOL:  # one window the size of the map
        window = list(g.type_of(n.inputs[0]).shape[2:])
        return Node(_NHWC_POOL[_GLOBAL_POOL[n.op_type]], inputs, outputs, {"kernel_shape": window}, DOMAIN,
                    n.name or n.outputs[0])
    if n.op_type == "Resize" and n.domain == "":  # its scales or sizes in NHWC's order
        slot = _resize_slot(n)
        permuted = twin(n.inputs[slot])
        g.initializers.setdefault(permuted, np.ascontiguousarray(constant_value(g, n.inputs[slot])[list(TO_NHWC)]))
        inputs[slot] = permuted
    if n.op_type == "Slice" and n.domain == "":  # along the channels: axis 3 now
        inputs[3] = twin(n.inputs[3])
        g.initializers.setdefault(inputs[3], np.array([3], np.int64))
    if _is_qconv(n):  # the same inputs and attributes on NHWC tensors (its weight stays OIHW)
        return Node(QCONV_NHWC, inputs, outputs, dict(n.attrs), DOMAIN, n.name or n.outputs[0])
    if not _is_conv(n):
        attrs = dict(n.attrs)
        if n.op_type in ("Concat", "Split", SHUFFLE):  # along the channels: axis 3 now (Concat-1's default was 1)
            attrs["axis"] = 3
        return Node(n.op_type, inputs, outputs, attrs, n.domain, n.name, dict(n.attr_types), n.doc)
    w = n.inputs[1]
    if w not in hwio:
        hwio[w] = f"{w}__hwio"
        g.initializers[hwio[w]] = np.ascontiguousarray(g.initializers[w].transpose(HWIO))
    inputs[1] = hwio[w]
    attrs = {k: v for k, v in n.attrs.items() if k in CONV_ATTRS or k in EPILOGUE_ATTRS}
    if _reads_nchw(g, n):
        attrs["input_layout"] = "NCHW"
    return Node(OP, inputs, outputs, attrs, DOMAIN, n.name or n.outputs[0])


def _transpose(src: str, dst: str, perm: tuple[int, ...]) -> Node:
    return Node("Transpose", [src], [dst], {"perm": list(perm)}, "", f"{BOUNDARY}{dst}")


def _rewrite(model: Model, regions: list[list[Node]], consumers: dict[str, list[Node]]) -> None:
    g = model.graph
    convert: dict[int, Node] = {}
    before: dict[int, list[Node]] = {}  # node id -> transposes into NHWC to emit before it
    after: dict[int, list[Node]] = {}  # node id -> transposes back to NCHW to emit after it
    hwio: dict[str, str] = {}
    twin = _Names(g)
    for region in regions:
        ins, outs = _boundaries(g, region, consumers)
        for n in region:
            convert[id(n)] = _converted(g, n, hwio, twin)
        for t in ins:
            first = next(n for n in g.nodes if id(n) in convert and t in _data_inputs(g, n))
            before.setdefault(id(first), []).append(_transpose(t, twin(t), TO_NHWC))
            g.value_info[twin(t)] = _nhwc_value(g, t, twin(t))
        for n in region:
            for t in (n.outputs if _permute(g, n) != "exit" else ()):  # an exit's output keeps its name and type
                g.value_info[twin(t)] = _nhwc_value(g, t, twin(t))
                if t in outs:
                    after.setdefault(id(n), []).append(_transpose(twin(t), t, TO_NCHW))
                else:
                    g.value_info.pop(t, None)
    nodes: list[Node] = []
    for n in g.nodes:
        nodes += before.get(id(n), []) + [convert.get(id(n), n)] + after.get(id(n), [])
    g.nodes = nodes
    model.opset_imports.setdefault(DOMAIN, 1)
    drop_unused_initializers(g)


def to_nhwc(model: Model) -> bool:
    """Convert every region that pays (see the module docstring); returns whether the graph changed."""
    g = model.graph
    consumers = g.consumers()
    regions = [r for r in find_regions(g) if pays(g, r, consumers)]
    if regions:
        _rewrite(model, regions, consumers)
    return bool(regions)


# -- interop: FusedConvNHWC as standard ONNX ---------------------------------------------------------
def _decompose(e, n: Node) -> None:
    """(Gather of the ``input_order``,) transpose in (unless ``input_layout`` is NCHW), the FusedConv
    it came from (decomposed in turn), transpose out."""
    from inference.decompose import decompose_node

    src, attrs = n.inputs[0], dict(n.attrs)
    order = attrs.pop("input_order", None)
    nchw_in = attrs.pop("input_layout", "NHWC") == "NCHW"  # a stem reading its NCHW input
    attrs.pop("algorithm", None)  # how our kernel computes it: the same sums
    if order is not None:  # a folded channel shuffle: the channels in the conv's order first
        src = e.op("Gather", [src, e.const(np.asarray(order, np.int64))], axis=1 if nchw_in else 3)
    x = src if nchw_in else e.op("Transpose", [src], perm=list(TO_NCHW))
    w = e.const(np.ascontiguousarray(e.g.initializers[n.inputs[1]].transpose(OIHW)))
    z = e.op("Transpose", [n.inputs[3]], perm=list(TO_NCHW)) if len(n.inputs) > 3 and n.inputs[3] else ""
    y = e.fresh("nchw")
    nchw = Node("FusedConv", [x, w, n.input_at(2), z], [y], attrs, DOMAIN, n.name)
    decompose_node(e, nchw)
    e.op("Transpose", [y], n.outputs[0], perm=list(TO_NHWC))


def _decompose_qconv(e, n: Node) -> None:
    """Transpose X (and Z) in, the QConv it came from (decomposed in turn), transpose out."""
    from inference.decompose import decompose_node

    inputs = list(n.inputs)
    for k in (0, 6):
        if len(inputs) > k and inputs[k]:
            inputs[k] = e.op("Transpose", [inputs[k]], perm=list(TO_NCHW))
    y = e.fresh("nchw")
    decompose_node(e, Node("QConv", inputs, [y], dict(n.attrs), DOMAIN, n.name))
    e.op("Transpose", [y], n.outputs[0], perm=list(TO_NHWC))


def _decompose_pool(e, n: Node) -> None:
    """Transpose in, the ONNX pool it came from, transpose out."""
    x = e.op("Transpose", [n.inputs[0]], perm=list(TO_NCHW))
    y = e.op(POOLS[n.op_type], [x], **n.attrs)
    e.op("Transpose", [y], n.outputs[0], perm=list(TO_NHWC))


def _register_decomposition() -> None:
    from inference.decompose import register_decomposition

    register_decomposition(OP, _decompose)
    register_decomposition(QCONV_NHWC, _decompose_qconv)
    for op in POOLS:
        register_decomposition(op, _decompose_pool)


_register_decomposition()
