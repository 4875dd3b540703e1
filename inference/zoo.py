"""Benchmark models built in code: MobileNetV2-, ResNet-18-, EfficientNet-Lite0-, MobileNetV3-,
YOLO- and YOLOv8-style CNNs, a small transformer, and MLPerf Tiny's four models (ResNet-8, the
DS-CNN keyword spotter, MobileNetV1-0.25 for visual wake words, the Dense autoencoder).

Why: the performance targets are stated on these shapes, and building them here (random weights,
fixed seed) means no download and the same graph for every peer. The CNNs are opset 17 with
BatchNormalization left in (so Conv+BN folding is exercised); the transformer is opset 20 because
``Gelu`` enters the standard there.
"""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx

from inference.builder import GraphBuilder
from inference.ir import Model

BATCH = "batch"
LIGHT_MODELS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


class _Weights:
    """He-initialised conv/linear weights and plausible BatchNorm statistics from one seeded rng."""

    def __init__(self, b: GraphBuilder, seed: int):
        self.b, self.rng = b, np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], std: float) -> str:
        return self.b.const((self.rng.standard_normal(shape) * std).astype(np.float32))

    def uniform(self, shape: tuple[int, ...], lo: float, hi: float) -> str:
        return self.b.const(self.rng.uniform(lo, hi, shape).astype(np.float32))

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, gain: float = 1.0) -> str:
        """``gain`` scales the weights: below 1 on a prediction head keeps its outputs O(1)."""
        fan_in = cin // group * k * k
        w = self.normal((cout, cin // group, k, k), gain * np.sqrt(2.0 / fan_in))
        p = k // 2
        return self.b.op("Conv", x, w, kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p],
                         group=group)

    def bn(self, x: str, c: int, gamma: float = 1.0) -> str:
        """``gamma`` scales the BN weight: below 1 on a residual branch keeps the trunk bounded."""
        return self.b.op("BatchNormalization", x, self.uniform((c,), 0.5 * gamma, 1.5 * gamma),
                         self.normal((c,), 0.1),
                         self.normal((c,), 0.1), self.uniform((c,), 0.5, 1.5), epsilon=1e-5)

    def linear(self, x: str, din: int, dout: int, gain: float = 1.0) -> str:
        return self.b.op("Gemm", x, self.normal((dout, din), gain / np.sqrt(din)), self.normal((dout,), 0.01),
                         transB=1)


def _relu6(b: GraphBuilder, x: str) -> str:
    lo = b.const(np.array(0.0, np.float32))
    hi = b.const(np.array(6.0, np.float32))
    return b.op("Clip", x, lo, hi)


def _classifier(w: _Weights, x: str, c: int, classes: int, gain: float) -> None:
    """Pool, flatten, linear; ``gain`` keeps logits O(1) so rtol/atol comparisons are meaningful."""
    b = w.b
    y = w.linear(b.op("Flatten", b.op("GlobalAveragePool", x), axis=1), c, classes, gain)
    b.op("Identity", y, outputs=["logits"])
    b.output("logits", np.float32, [BATCH, classes])


MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))  # (expansion t, channels c, repeats n, stride s)


def mobilenet_v2(size: int = 224, classes: int = 1000, seed: int = 0) -> Model:
    """MobileNetV2 (width 1.0): inverted residual blocks, depthwise 3x3, Relu6 as Clip."""
    return _inverted_residual_net("mobilenet_v2", [stage + (3,) for stage in MOBILENET_V2_STAGES], size, classes, seed)


EFFICIENTNET_LITE0_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                             (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))  # (t, c, n, s, kernel)


def efficientnet_lite0(size: int = 224, classes: int = 1000, seed: int = 0) -> Model:
    """EfficientNet-Lite0's shape (Tan & Le 2019, the Lite variant: Relu6, no squeeze-excitation):
    MobileNetV2's inverted residual blocks with 5x5 depthwise convolutions in three stages."""
    return _inverted_residual_net("efficientnet_lite0", EFFICIENTNET_LITE0_STAGES, size, classes, seed)


def _inverted_residual_net(name: str, stages, size: int, classes: int, seed: int) -> Model:
    """A 3x3/2 stem, inverted residual blocks per ``stages`` ((expansion, channels, repeats, stride,
    depthwise kernel) each), a 1x1 to 1280 channels and the classifier; Relu6 throughout."""
    b = GraphBuilder(name, opset=17)
    w = _Weights(b, seed)
    x = _relu6(b, w.bn(w.conv(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 32, 3, 2), 32))
    cin = 32
    for t, c, n, s, k in stages:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            h = x if t == 1 else _relu6(b, w.bn(w.conv(x, cin, hidden, 1), hidden))
            h = _relu6(b, w.bn(w.conv(h, hidden, hidden, k, stride, group=hidden), hidden))
            h = w.bn(w.conv(h, hidden, c, 1), c)
            x = b.op("Add", x, h) if stride == 1 and cin == c else h
            cin = c
    x = _relu6(b, w.bn(w.conv(x, cin, 1280, 1), 1280))
    _classifier(w, x, 1280, classes, 0.1)
    return b.build()


#: MobileNetV3-Large's blocks (Howard et al. 2019, table 1): (kernel, expanded, out, gate, HardSwish, stride)
MOBILENET_V3_BLOCKS = ((3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
                       (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
                       (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
                       (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
                       (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1))


def mobilenet_v3_style(size: int = 224, classes: int = 1000, seed: int = 0) -> Model:
    """MobileNetV3-Large's shape: HardSwish in the later stages, 5x5 depthwise layers, and
    squeeze-and-excitation gates (global pool, 1x1 to a quarter, Relu, 1x1 back, HardSigmoid,
    a per-channel Mul of the block's map)."""
    b = GraphBuilder("mobilenet_v3_style", opset=17)
    w = _Weights(b, seed)
    x = b.op("HardSwish", w.bn(w.conv(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 16, 3, 2), 16))
    cin = 16
    for k, e, c, gate, hard_swish, s in MOBILENET_V3_BLOCKS:
        act = (lambda v: b.op("HardSwish", v)) if hard_swish else (lambda v: b.op("Relu", v))
        h = act(w.bn(w.conv(x, cin, e, 1), e)) if e != cin else x
        h = act(w.bn(w.conv(h, e, e, k, s, group=e), e))
        if gate:
            g = b.op("Relu", w.conv(b.op("GlobalAveragePool", h), e, e // 4, 1))
            h = b.op("Mul", h, b.op("HardSigmoid", w.conv(g, e // 4, e, 1), alpha=1 / 6, beta=0.5))
        h = w.bn(w.conv(h, e, c, 1), c, gamma=0.5)
        x = b.op("Add", x, h) if s == 1 and cin == c else h
        cin = c
    x = b.op("HardSwish", w.bn(w.conv(x, cin, 960, 1), 960))
    _classifier(w, x, 960, classes, 0.1)
    return b.build()


def _silu(b: GraphBuilder, x: str) -> str:
    """SiLU as exporters write it: ``x * sigmoid(x)``."""
    return b.op("Mul", x, b.op("Sigmoid", x))


def yolo_style(size: int = 320, seed: int = 0) -> Model:
    """A YOLOv5n-like detector body: SiLU after every convolution, stride-2 3x3 downsampling, CSP
    stages (two 1x1 branches, one through a 3x3, concatenated), and a neck that upsamples the
    deepest map (nearest Resize), concatenates it with the one before and predicts 3 x 85 channels."""
    b = GraphBuilder("yolo_style", opset=17)
    w = _Weights(b, seed)

    def cbs(x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        return _silu(b, w.bn(w.conv(x, cin, cout, k, stride), cout))

    x = cbs(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 16, 3, 2)
    cin, maps = 16, []
    for c in (32, 64, 128, 256):
        x = cbs(x, cin, c, 3, 2)
        a = cbs(cbs(x, c, c // 2, 1), c // 2, c // 2, 3)
        x = cbs(b.op("Concat", a, cbs(x, c, c // 2, 1), axis=1), c, c, 1)
        cin = c
        maps.append(x)
    up = b.op("Resize", x, "", b.const(np.array([1, 1, 2, 2], np.float32)), mode="nearest")
    y = cbs(b.op("Concat", up, maps[-2], axis=1), 256 + 128, 128, 1)
    b.op("Identity", w.conv(y, 128, 255, 1), outputs=["output"])
    b.output("output", np.float32, [BATCH, 255, size // 16, size // 16])
    return b.build()


def yolov8_style(size: int = 320, seed: int = 0) -> Model:
    """A YOLOv8n-like detector: C2f blocks (a 1x1 whose output is Split in two along the channels,
    3x3 bottlenecks with residual Adds on one half, everything concatenated into a 1x1), SPPF
    (three chained 5x5 stride-1 MaxPools concatenated), an upsampling FPN neck and a decoupled head
    per scale (box branch, class branch through a Sigmoid, concatenated: 64 + 80 channels)."""
    b = GraphBuilder("yolov8_style", opset=17)
    w = _Weights(b, seed)

    def cbs(x: str, cin: int, cout: int, k: int, stride: int = 1, gamma: float = 1.0) -> str:
        return _silu(b, w.bn(w.conv(x, cin, cout, k, stride), cout, gamma))

    def c2f(x: str, cin: int, cout: int, n: int, shortcut: bool = True) -> str:
        c = cout // 2
        halves = b.op("Split", cbs(x, cin, 2 * c, 1), b.const(np.array([c, c], np.int64)), axis=1, outputs=2)
        parts, h = list(halves), halves[1]
        for _ in range(n):
            t = cbs(cbs(h, c, c, 3), c, c, 3, gamma=0.5 if shortcut else 1.0)
            h = b.op("Add", h, t) if shortcut else t
            parts.append(h)
        return cbs(b.op("Concat", *parts, axis=1), (2 + n) * c, cout, 1)

    def sppf(x: str, cin: int, cout: int) -> str:
        x = cbs(x, cin, cin // 2, 1)
        pools = [x]
        for _ in range(3):
            pools.append(b.op("MaxPool", pools[-1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        return cbs(b.op("Concat", *pools, axis=1), 2 * cin, cout, 1)

    def up(x: str) -> str:
        return b.op("Resize", x, "", b.const(np.array([1, 1, 2, 2], np.float32)), mode="nearest")

    x = cbs(cbs(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 16, 3, 2), 16, 32, 3, 2)
    p3 = c2f(cbs(c2f(x, 32, 32, 1), 32, 64, 3, 2), 64, 64, 2)
    p4 = c2f(cbs(p3, 64, 128, 3, 2), 128, 128, 2)
    p5 = sppf(c2f(cbs(p4, 128, 256, 3, 2), 256, 256, 1), 256, 256)
    n4 = c2f(b.op("Concat", up(p5), p4, axis=1), 384, 128, 1, shortcut=False)
    n3 = c2f(b.op("Concat", up(n4), p3, axis=1), 192, 64, 1, shortcut=False)
    for i, (h, c, stride) in enumerate([(n3, 64, 8), (n4, 128, 16)]):
        box = w.conv(cbs(cbs(h, c, 64, 3), 64, 64, 3), 64, 64, 1, gain=0.1)
        cls = b.op("Sigmoid", w.conv(cbs(cbs(h, c, 80, 3), 80, 80, 3), 80, 80, 1, gain=0.1))
        b.op("Concat", box, cls, axis=1, outputs=[f"scale{stride}"])
        b.output(f"scale{stride}", np.float32, [BATCH, 144, size // stride, size // stride])
    return b.build()


def resnet18(size: int = 224, classes: int = 1000, seed: int = 0) -> Model:
    """ResNet-18 (v1): 7x7 stem, max pool, four stages of two basic blocks."""
    b = GraphBuilder("resnet18", opset=17)
    w = _Weights(b, seed)
    x = b.op("Relu", w.bn(w.conv(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 64, 7, 2), 64))
    x = b.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for i in range(2):
            stride = 2 if stage > 0 and i == 0 else 1
            h = b.op("Relu", w.bn(w.conv(x, cin, c, 3, stride), c))
            h = w.bn(w.conv(h, c, c, 3), c, gamma=0.3)
            short = w.bn(w.conv(x, cin, c, 1, stride), c) if stride != 1 or cin != c else x
            x = b.op("Relu", b.op("Add", h, short))
            cin = c
    _classifier(w, x, 512, classes, 0.3)
    return b.build()


def resnet8_cifar(size: int = 32, classes: int = 10, seed: int = 0) -> Model:
    """MLPerf Tiny's image-classification model (github.com/mlcommons/tiny, EEMBC's CIFAR-10
    ResNet v1): a 3x3 stem to 16 channels and three stages of one basic block (16, 32, 64
    channels; the last two stride 2 with a 1x1 stride-2 shortcut, no BatchNorm on it), pooled over
    the whole 8x8 map, a linear layer to 10 classes. Why in the zoo: the small-map, few-channel
    end of what runs on edge devices, where fixed per-node costs weigh most."""
    b = GraphBuilder("resnet8_cifar", opset=17)
    w = _Weights(b, seed)
    x = b.op("Relu", w.bn(w.conv(b.input("input", np.float32, [BATCH, 3, size, size]), 3, 16, 3), 16))
    cin = 16
    for c in (16, 32, 64):
        stride = 1 if c == cin else 2
        h = w.bn(w.conv(b.op("Relu", w.bn(w.conv(x, cin, c, 3, stride), c)), c, c, 3), c, gamma=0.3)
        x = b.op("Relu", b.op("Add", h, x if stride == 1 else w.conv(x, cin, c, 1, stride)))
        cin = c
    _classifier(w, x, 64, classes, 0.3)
    return b.build()


def ds_cnn_kws(classes: int = 12, seed: int = 0) -> Model:
    """MLPerf Tiny's keyword-spotting DS-CNN (github.com/mlcommons/tiny, ``keyword_spotting``):
    49 x 10 MFCC frames, a 10x4/2 convolution to 64 channels ("same" padding, uneven), four
    depthwise-separable blocks (3x3 depthwise, 1x1 to 64, BatchNorm and Relu after each), an
    average pool over the whole 25x5 map and a linear layer to 12 words. Input (N, 1, 49, 10)."""
    b = GraphBuilder("ds_cnn_kws", opset=17)
    w = _Weights(b, seed)
    x = b.input("input", np.float32, [BATCH, 1, 49, 10])
    stem = w.normal((64, 1, 10, 4), np.sqrt(2.0 / 40))
    x = b.op("Relu", w.bn(b.op("Conv", x, stem, kernel_shape=[10, 4], strides=[2, 2], pads=[4, 1, 5, 1]), 64))
    for _ in range(4):
        x = b.op("Relu", w.bn(w.conv(x, 64, 64, 3, group=64), 64))
        x = b.op("Relu", w.bn(w.conv(x, 64, 64, 1), 64))
    y = w.linear(b.op("Flatten", b.op("AveragePool", x, kernel_shape=[25, 5]), axis=1), 64, classes, 0.3)
    b.op("Identity", y, outputs=["logits"])
    b.output("logits", np.float32, [BATCH, classes])
    return b.build()


def mobilenet_v1_vww(size: int = 96, width: float = 0.25, classes: int = 2, seed: int = 0) -> Model:
    """MLPerf Tiny's visual-wake-words model: MobileNetV1 at width 0.25 on 96x96 RGB (a 3x3/2
    stem to 8 channels, 13 depthwise-separable blocks to 256 channels, Relu6 as Clip), pooled,
    a linear layer to person / no person."""
    b = GraphBuilder("mobilenet_v1_vww", opset=17)
    w = _Weights(b, seed)
    cin = int(32 * width)
    x = _relu6(b, w.bn(w.conv(b.input("input", np.float32, [BATCH, 3, size, size]), 3, cin, 3, 2), cin))
    for c, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2),
                      (1024, 1)):
        c = int(c * width)
        x = _relu6(b, w.bn(w.conv(x, cin, cin, 3, stride, group=cin), cin))
        x = _relu6(b, w.bn(w.conv(x, cin, c, 1), c))
        cin = c
    _classifier(w, x, cin, classes, 0.3)
    return b.build()


def fc_autoencoder(features: int = 640, hidden: int = 128, code: int = 8, seed: int = 0) -> Model:
    """MLPerf Tiny's anomaly-detection autoencoder (ToyADMOS machine sounds): 640 log-mel
    features through four 128-unit layers to an 8-unit code and four 128-unit layers back, each
    linear layer followed by BatchNormalization and Relu, a last linear layer to 640. Input (N, 640).
    Why in the zoo: nothing but small matrix products, where a runtime's fixed cost per node is
    most of a batch-1 run."""
    b = GraphBuilder("fc_autoencoder", opset=17)
    w = _Weights(b, seed)
    x = b.input("input", np.float32, [BATCH, features])
    width = features
    for units in (hidden,) * 4 + (code,) + (hidden,) * 4:
        x = b.op("Relu", w.bn(w.linear(x, width, units), units))
        width = units
    b.op("Identity", w.linear(x, width, features), outputs=["reconstruction"])
    b.output("reconstruction", np.float32, [BATCH, features])
    return b.build()


def transformer_encoder(seq: int = 128, dim: int = 256, heads: int = 4, layers: int = 4, ffn: int = 1024,
                        seed: int = 0) -> Model:
    """Post-norm transformer encoder: MatMul attention, Softmax, LayerNormalization, Gelu FFN."""
    b = GraphBuilder("transformer_encoder", opset=20)
    rng = np.random.default_rng(seed)

    def mat(din: int, dout: int) -> str:
        return b.const((rng.standard_normal((din, dout)) / np.sqrt(din)).astype(np.float32))

    def vec(n: int, mean: float = 0.0, std: float = 0.02) -> str:
        return b.const((mean + rng.standard_normal(n) * std).astype(np.float32))

    def linear(x: str, din: int, dout: int) -> str:
        return b.op("Add", b.op("MatMul", x, mat(din, dout)), vec(dout))

    dh = dim // heads
    split = b.const(np.array([0, seq, heads, dh], np.int64))
    merge = b.const(np.array([0, seq, dim], np.int64))
    scale = b.const(np.array(1.0 / np.sqrt(dh), np.float32))
    x = b.input("input", np.float32, [BATCH, seq, dim])
    for _ in range(layers):
        q, k, v = (b.op("Transpose", b.op("Reshape", linear(x, dim, dim), split), perm=[0, 2, 1, 3])
                   for _ in range(3))
        kt = b.op("Transpose", k, perm=[0, 1, 3, 2])
        att = b.op("Softmax", b.op("Mul", b.op("MatMul", q, kt), scale), axis=-1)
        ctx = b.op("Reshape", b.op("Transpose", b.op("MatMul", att, v), perm=[0, 2, 1, 3]), merge)
        x = b.op("LayerNormalization", b.op("Add", x, linear(ctx, dim, dim)), vec(dim, 1.0), vec(dim),
                 axis=-1, epsilon=1e-5)
        h = linear(b.op("Gelu", linear(x, dim, ffn)), ffn, dim)
        x = b.op("LayerNormalization", b.op("Add", x, h), vec(dim, 1.0), vec(dim), axis=-1, epsilon=1e-5)
    b.op("Identity", x, outputs=["output"])
    b.output("output", np.float32, [BATCH, seq, dim])
    return b.build()


ZOO = {"mobilenet_v2": mobilenet_v2, "resnet18": resnet18, "transformer": transformer_encoder,
       "efficientnet_lite0": efficientnet_lite0, "yolo_style": yolo_style, "mobilenet_v3_style": mobilenet_v3_style,
       "yolov8_style": yolov8_style, "resnet8_cifar": resnet8_cifar, "ds_cnn_kws": ds_cnn_kws,
       "mobilenet_v1_vww": mobilenet_v1_vww, "fc_autoencoder": fc_autoencoder}


def input_shape(name: str, batch: int) -> tuple[int, ...]:
    """Shape of the single feed of a zoo model at ``batch``."""
    if name == "transformer":
        return (batch, 128, 256)
    if name == "resnet8_cifar":
        return (batch, 3, 32, 32)
    if name == "ds_cnn_kws":
        return (batch, 1, 49, 10)
    if name == "mobilenet_v1_vww":
        return (batch, 3, 96, 96)
    if name == "fc_autoencoder":
        return (batch, 640)
    return (batch, 3, 320, 320) if name in ("yolo_style", "yolov8_style") else (batch, 3, 224, 224)


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """onnx's light ``squeezenet``/``shufflenet`` with random real weights as initializers.

    The light models ship every weight as ``ConstantOfShape(0.02)``: a constant network whose
    timing and numerics say little. Each such weight becomes an initializer drawn by its role:
    He-normal conv/Gemm weights, small biases, BatchNorm scale and variance in [0.5, 1.5].
    """
    from onnx import numpy_helper

    from inference.errors import ModelLoadError

    path = LIGHT_MODELS / f"light_{name}.onnx"
    if not path.exists():
        raise ModelLoadError(f"onnx ships no light model {path.name} (have: squeezenet, shufflenet, ...)")
    proto = onnx.load(str(path))
    g, rng = proto.graph, np.random.default_rng(seed)
    roles = {i: (n.op_type, k) for n in g.node for k, i in enumerate(n.input)}
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            keep.append(node)
            continue
        out = node.output[0]
        shape = tuple(int(d) for d in shapes[node.input[0]])
        g.initializer.append(numpy_helper.from_array(_random_weight(rng, shape, *roles.get(out, ("", 0))), out))
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    init_names = {t.name for t in inits}
    feeds = [v for v in g.input if v.name not in init_names and v.name in used]
    del g.input[:]
    g.input.extend(feeds)
    proto.ir_version = max(proto.ir_version, 4)  # IR 4: initializers need not be listed as inputs
    return proto


def _random_weight(rng: np.random.Generator, shape: tuple[int, ...], op: str, position: int) -> np.ndarray:
    if op in ("Conv", "Gemm") and position == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else shape[-1]
        w = rng.standard_normal(shape) * np.sqrt((2.0 if op == "Conv" else 0.01) / max(fan_in, 1))
    elif op == "BatchNormalization" and position in (1, 4):
        w = rng.uniform(0.5, 1.5, shape)
    else:
        w = rng.standard_normal(shape) * 0.05
    return w.astype(np.float32)


#: the floating types :func:`with_float_type` converts between
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def with_float_type(model: Model, dtype) -> Model:
    """``model`` (changed in place) with its float32/float16/bfloat16 weights, inputs and outputs
    in ``dtype``: what a converter to half precision writes (``np.float16``), and its float32 twin
    back (``np.float32``, the same weights, upcast exactly). Intermediate types are dropped, to be
    inferred again."""
    from onnx import helper

    from inference.ir import TensorType

    dtype = np.dtype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    g = model.graph
    g.initializers = {k: a.astype(dtype) if a.dtype in _FLOATS else a for k, a in g.initializers.items()}
    for v in g.inputs + g.outputs:
        if isinstance(v.type, TensorType) and v.type.dtype in _FLOATS:
            v.type = TensorType(elem, v.type.shape)
    g.value_info.clear()
    return model
