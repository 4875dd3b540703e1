"""The NHWC layout pass and its kernels: FusedConvNHWC against its reference, converted models
against the unconverted graph and onnxruntime, transposes only at region boundaries, the rule."""
from __future__ import annotations

import numba
import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.kernels._jit import use_parallel_kernels
from inference.ir import Node, TensorType
from inference.kernels.fused import DOMAIN, fused_conv_reference
from inference.kernels.nhwc import HWIO, OP, TO_NCHW, fused_conv_nhwc, fused_conv_nhwc_reference
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.passes import layout, optimize
from inference.schema import get_schema
from inference.session import Session
from inference.shape_inference import infer_shapes
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5
ACTS = {"": (0.0, 0.0), "Relu": (0.0, 0.0), "Clip": (0.0, 6.0), "LeakyRelu": (0.1, 0.0),
        "HardSigmoid": (0.2, 0.5), "HardSwish": (0.0, 0.0), "Sigmoid": (0.0, 0.0), "Gelu": (0.0, 0.0)}


# -- kernels --------------------------------------------------------------------------------------
def _case(rng, c, m, k, group, strides, pads, dilations, act, residual, n=2, h=11, w=13):
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = np.ascontiguousarray(rng.standard_normal((m, c // group, k, k)).astype(np.float32).transpose(HWIO))
    b = rng.standard_normal(m).astype(np.float32)
    alpha, beta = ACTS[act]
    attrs = dict(group=group, strides=strides, pads=pads, dilations=dilations, activation=act, alpha=alpha,
                 beta=beta)
    z = None
    if residual:
        shape = fused_conv_nhwc_reference(x, wt, b, **attrs).shape
        z = rng.standard_normal(shape).astype(np.float32)
    return x, wt, b, z, attrs


def _random_cases(count: int = 30):
    rng = np.random.default_rng(1)
    for i in range(count):
        k = int(rng.choice([1, 3, 3, 5]))
        kind = ("g1", "dw", "grouped")[i % 3]
        c = int(rng.choice([8, 16, 32] if kind == "grouped" else [3, 8, 17, 32]))
        group = {"g1": 1, "dw": c, "grouped": int(rng.choice([2, 4]))}[kind]
        m = c if kind == "dw" else int(rng.choice([4, 16, 24])) * (group if kind == "grouped" else 1)
        s = [int(v) for v in rng.integers(1, 3, 2)]
        d = [1, 1] if k == 1 or i % 5 else [2, 1]
        p = [int(v) for v in rng.integers(0, k // 2 + 1, 4)] if k > 1 else [0, 0, 0, 0]
        act = list(ACTS)[i % len(ACTS)]
        yield pytest.param(c, m, k, group, s, p, d, act, bool(i % 4), id=f"case{i}-k{k}-{kind}{group}-c{c}-m{m}-"
                           f"s{s[0]}{s[1]}-{act or 'none'}")


@pytest.mark.parametrize("c,m,k,group,strides,pads,dilations,act,residual", list(_random_cases()))
def test_kernel_matches_reference(c, m, k, group, strides, pads, dilations, act, residual):
    x, wt, b, z, attrs = _case(np.random.default_rng(c * k + m), c, m, k, group, strides, pads, dilations, act,
                               residual)
    want = fused_conv_nhwc_reference(x, wt, b, z, **attrs)
    np.testing.assert_allclose(fused_conv_nhwc(x, wt, b, z, **attrs), want, rtol=RTOL, atol=ATOL)
    node = Node(OP, ["x", "w"], ["y"], attrs, DOMAIN)  # the schema's shape rule agrees with the kernel
    rule = get_schema(OP, DOMAIN).shape_rule
    assert rule(node, [TensorType(1, ("n",) + x.shape[1:]), TensorType(1, wt.shape)]) == [
        TensorType(1, ("n",) + want.shape[1:])]


@pytest.mark.parametrize("c,m,k,s,pads", [(3, 32, 3, 2, [1, 1, 1, 1]), (3, 64, 3, 2, [0, 0, 0, 0]),
                                         (3, 24, 7, 2, [3, 2, 3, 2]), (1, 5, 3, 1, [1, 1, 1, 1]),
                                         (3, 16, 3, 1, [2, 0, 1, 3])])  # every border its own width
def test_nchw_input_read_in_place(c, m, k, s, pads):
    """``input_layout`` "NCHW" (an RGB stem): X stays (N, C, H, W), Y comes out channels-last."""
    rng = np.random.default_rng(c * m + k)
    x = rng.standard_normal((2, c, 17, 15)).astype(np.float32)
    wt = np.ascontiguousarray(rng.standard_normal((m, c, k, k)).astype(np.float32).transpose(HWIO))
    b = rng.standard_normal(m).astype(np.float32)
    attrs = dict(strides=[s, s], pads=pads, activation="Clip", alpha=0.0, beta=6.0)
    want = fused_conv_nhwc_reference(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), wt, b, **attrs)
    np.testing.assert_allclose(fused_conv_nhwc(x, wt, b, **attrs, input_layout="NCHW"), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(fused_conv_nhwc_reference(x, wt, b, **attrs, input_layout="NCHW"), want)
    node = Node(OP, ["x", "w"], ["y"], {**attrs, "input_layout": "NCHW"}, DOMAIN)
    rule = get_schema(OP, DOMAIN).shape_rule
    assert rule(node, [TensorType(1, ("n",) + x.shape[1:]), TensorType(1, wt.shape)]) == [
        TensorType(1, ("n",) + want.shape[1:])]


def test_nchw_input_layout_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(KernelError, match="input_layout 'NCHW' takes group 1 only, got group=2"):
        fused_conv_nhwc(x, np.zeros((3, 3, 2, 4), np.float32), group=2, input_layout="NCHW")
    with pytest.raises(KernelError, match="input_layout must be 'NHWC' or 'NCHW', got 'CHW'"):
        fused_conv_nhwc(x, np.zeros((3, 3, 4, 4), np.float32), input_layout="CHW")


def test_reference_is_fused_conv_in_nchw():
    """The oracle itself: FusedConv's reference on the transposed tensors (asymmetric pads, dilation)."""
    x, wt, b, z, attrs = _case(np.random.default_rng(0), 6, 6, 3, 6, [2, 1], [0, 1, 2, 1], [1, 2], "Clip", True)
    got = fused_conv_nhwc_reference(x, wt, b, z, **attrs)
    nchw = fused_conv_reference(x.transpose(TO_NCHW), wt.transpose(3, 2, 0, 1), b, z.transpose(TO_NCHW), **attrs)
    np.testing.assert_array_equal(got, nchw.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("group", [1, 4, 16])
def test_parallel_twin_matches(group):
    x, wt, b, z, attrs = _case(np.random.default_rng(3), 16, 16, 3, group, [1, 1], [1, 1, 1, 1], [1, 1],
                               "Relu", True, n=3)
    want = fused_conv_nhwc_reference(x, wt, b, z, **attrs)
    threads = numba.get_num_threads()
    use_parallel_kernels(True)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        got = fused_conv_nhwc(x, wt, b, z, **attrs)
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(threads)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_same_upper_depthwise_and_grouped():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 9, 7, 8)).astype(np.float32)
    for group, m in ((8, 8), (2, 6)):  # the depthwise stencil; group 2 on the tile
        wt = np.ascontiguousarray(rng.standard_normal((m, 8 // group, 3, 3)).astype(np.float32).transpose(HWIO))
        attrs = dict(group=group, strides=[2, 2], auto_pad="SAME_UPPER", activation="Relu")
        got = fused_conv_nhwc(x, wt, None, None, **attrs)
        assert got.shape == (1, 5, 4, m)
        np.testing.assert_allclose(got, fused_conv_nhwc_reference(x, wt, None, None, **attrs), rtol=RTOL, atol=ATOL)


def test_bad_inputs_raise_kernel_error():
    x = np.zeros((1, 5, 5, 4), np.float32)
    w = np.zeros((3, 3, 1, 8), np.float32)
    with pytest.raises(KernelError, match=r"\(1, 5, 5, 4\).*group=1"):
        fused_conv_nhwc(x, w, group=1)
    with pytest.raises(KernelError, match="residual Z"):
        fused_conv_nhwc(x, np.zeros((1, 1, 4, 8), np.float32), None, np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(KernelError, match="X must be"):
        fused_conv_nhwc_reference(x[0], w)


def test_session_names_the_node_on_bad_feed():
    model = _chain(2)
    optimize(model)
    node = next(n for n in model.graph.nodes if n.op_type == OP)
    node.inputs[1] = "bad_w"
    model.graph.initializers["bad_w"] = np.zeros((3, 3, 1, 5), np.float32)
    with pytest.raises(KernelError, match=node.label()):
        Session(model).run({"x": np.zeros((1, 8, 12, 12), np.float32)})


# -- the pass on the zoo models ------------------------------------------------------------------
@pytest.fixture(scope="module", params=["mobilenet_v2", "resnet18"])
def zoo_case(request):
    size = 64 if request.param == "mobilenet_v2" else 32  # small, yet every stage keeps a spatial size
    proto = model_to_proto(getattr(zoo, request.param)(size=size))
    feeds = {"input": np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = load_model(proto)
    optimize(plain, switches={"layout_nhwc": False})
    return request.param, proto, feeds, sess.run(None, feeds)[0], Session(plain).run(feeds)[0]


def _converted(proto, monkeypatch, force: bool):
    if force:
        monkeypatch.setattr(layout, "MIN_DEPTHWISE_PER_BOUNDARY", 0.0)
        monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)
    model = load_model(proto)
    applied = optimize(model)
    return model, applied


@pytest.mark.parametrize("force", [False, True], ids=["rule", "forced"])
def test_pass_keeps_outputs(zoo_case, monkeypatch, force):
    name, proto, feeds, want_ort, want_plain = zoo_case
    model, applied = _converted(proto, monkeypatch, force)
    hist = model.graph.op_histogram()
    converts = True  # MobileNetV2 for its depthwise layers, ResNet-18 for its multiply-adds
    assert ("layout_nhwc" in applied) == converts, applied
    assert hist.get(f"edgelearn::{OP}", 0) > 0 if converts else f"edgelearn::{OP}" not in hist
    for kinds in (("fast", "reference"), ("reference",)):
        got = Session(model, kinds=kinds).run(feeds)[0]
        np.testing.assert_allclose(got, want_plain, rtol=RTOL, atol=ATOL, err_msg=f"{name} {kinds} vs unconverted")
        np.testing.assert_allclose(got, want_ort, rtol=RTOL, atol=ATOL, err_msg=f"{name} {kinds} vs onnxruntime")


@pytest.mark.parametrize("force", [False, True], ids=["rule", "forced"])
def test_transposes_only_at_region_boundaries(zoo_case, monkeypatch, force):
    """One region per model, from the RGB stem (which reads the NCHW input in place and writes
    channels-last) to the global pool (a channels-last window over the whole map): one transpose,
    of the pooled (N, 1, 1, C), back to NCHW."""
    name, proto = zoo_case[:2]
    model, _ = _converted(proto, monkeypatch, force)
    g = model.graph
    transposes = [n for n in g.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 1
    producers, consumers = g.producers(), g.consumers()
    back = transposes[0]
    assert back.attrs["perm"] == [0, 3, 1, 2]
    stem = g.nodes[0]
    assert stem.op_type == OP and stem.attrs["input_layout"] == "NCHW" and stem.inputs[0] == g.input_names[0]
    assert [n.op_type for n in consumers[back.outputs[0]]] == ["Flatten"]
    pool = producers[back.inputs[0]]
    window = list(g.type_of(pool.inputs[0]).shape[1:3])
    assert pool.op_type == "AveragePoolNHWC" and pool.attrs == {"kernel_shape": window}
    channels_last = (OP, "MaxPoolNHWC", "InvertedResidualNHWC")  # the last: MobileNetV2's blocks, fused after
    assert all(producers[i].op_type in channels_last for n in g.nodes[1:] if n.op_type == OP
               for i in (n.inputs[0], *n.inputs[3:4]) if i)


def test_pass_runs_once(zoo_case, monkeypatch):
    model, _ = _converted(zoo_case[1], monkeypatch, True)
    assert layout.to_nhwc(model) is False


def test_decomposed_model_runs_in_onnxruntime(zoo_case, monkeypatch):
    """Converted models export both ways: our domain (reloads and runs) and standard ONNX."""
    _, proto, feeds, want_ort, _ = zoo_case
    model, _ = _converted(proto, monkeypatch, True)
    reloaded = load_model(model_to_proto(model))
    np.testing.assert_allclose(Session(reloaded).run(feeds)[0], want_ort, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_as_standard_onnx(model, feeds)[0], want_ort, rtol=RTOL, atol=ATOL)


def test_switch_turns_the_pass_off():
    proto = model_to_proto(zoo.mobilenet_v2(size=32))
    on = Predictor(Config(model_path=proto))
    off = Predictor(Config(model_path=proto, passes={"layout_nhwc": False}))
    assert "layout_nhwc" in on.applied_passes and "layout_nhwc" not in off.applied_passes
    assert any(n.op_type == OP for n in on.model.graph.nodes)
    assert not any(n.op_type in (OP, "Transpose") for n in off.model.graph.nodes)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(on.run({"input": x})["logits"], off.run({"input": x})["logits"], rtol=RTOL, atol=ATOL)


# -- the rule and the region shapes, on small chains ------------------------------------------------
def _chain(layers: int, kind: str = "dw", c: int = 8, tanh: bool = False, tap_output: bool = False):
    """x (N, c, 12, 12) -> 1x1 conv [-> Tanh] -> ``layers`` 3x3 convs (depthwise or group 1) -> y;
    optionally the 1x1 output is also a graph output (a region tensor read outside the region)."""
    rng = np.random.default_rng(7)
    b = GraphBuilder("chain", opset=17)
    h = b.op("Conv", b.input("x", np.float32, ["n", c, 12, 12]),
             b.const((rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32)),
             b.const((rng.standard_normal(c) * 0.1).astype(np.float32)))
    if tap_output:
        b.op("Identity", h, outputs=["mid"])
        b.output("mid", np.float32, ["n", c, 12, 12])
    if tanh:
        h = b.op("Tanh", h)
    group, cin = (c, 1) if kind == "dw" else (1, c)
    for _ in range(layers):
        w = b.const((rng.standard_normal((c, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32))
        h = b.op("Relu", b.op("Conv", h, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group))
    b.op("Identity", h, outputs=["y"])
    b.output("y", np.float32, ["n", c, 12, 12])
    return b.build()


@pytest.mark.parametrize("layers,kind,c", [(1, "dw", 16), (2, "dw", 16), (6, "kxk", 16), (6, "kxk", 128)])
def test_rule_counts_depthwise_and_macs_against_transposes(layers, kind, c):
    """Boundary: x in, y out (2 images of c x 12 x 12); each depthwise output is 1 image; the group-1
    convs (the 1x1 and, for kxk, the 3x3 layers) have c*(1 + 9*layers) multiply-adds per pixel."""
    macs_per_moved = c * (1 + (9 * layers if kind == "kxk" else 0)) / 2
    expected = ((layers if kind == "dw" else 0) >= 2 * layout.MIN_DEPTHWISE_PER_BOUNDARY
                or macs_per_moved >= layout.MIN_GEMM_MACS_PER_BOUNDARY)
    assert expected is (kind == "dw" and layers == 2 or c == 128)  # both sides of both thresholds
    model = infer_shapes(_chain(layers, kind, c=c))
    assert layout.to_nhwc(model) is expected
    assert any(n.op_type == OP for n in model.graph.nodes) is expected


def test_elementwise_and_outside_reader():
    model = _chain(3, tanh=True, tap_output=True)
    x = np.random.default_rng(2).standard_normal((2, 8, 12, 12)).astype(np.float32)
    want = Session(model, kinds=("reference",)).run({"x": x})
    optimize(model)
    g = model.graph
    tanh = next(n for n in g.nodes if n.op_type == "Tanh")
    assert tanh.inputs[0].endswith(layout.SUFFIX) and tanh.outputs[0].endswith(layout.SUFFIX)
    assert sum(n.op_type == "Transpose" for n in g.nodes) == 3  # in; out for "mid"; out for "y"
    assert g.output_names == ["mid", "y"]
    for got, w in zip(Session(model).run({"x": x}), want):
        np.testing.assert_allclose(got, w, rtol=RTOL, atol=ATOL)


def _upsampling_net(mode: str, by: str, scales=(1.0, 1.0, 2.0, 2.0)):
    """A YOLO-style neck: a conv chain, a Resize of its output, a Concat with an earlier map of that
    size, a 1x1 conv. The Resize by ``scales`` or by ``sizes`` (same result)."""
    rng = np.random.default_rng(9)
    b = GraphBuilder("neck", opset=17)

    def conv(x, cin, cout, k, stride=1):
        w = b.const((rng.standard_normal((cout, cin, k, k)) / np.sqrt(k * k * cin)).astype(np.float32))
        return b.op("Relu", b.op("Conv", x, w, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2))

    early = conv(b.input("x", np.float32, ["n", 32, 16, 16]), 32, 64, 3)
    deep = conv(conv(early, 64, 64, 3, stride=2), 64, 64, 3)
    target = [int(v) for v in np.array([1, 64, 8, 8]) * np.array(scales)]
    if by == "scales":
        up = b.op("Resize", deep, "", b.const(np.array(scales, np.float32)), mode=mode)
    else:
        sizes = b.const(np.array(target, np.int64))
        up = b.op("Resize", deep, "", "", sizes, mode=mode)
    out_c = 64 * int(scales[1]) + (64 if scales[2] == 2 else 0)
    y = conv(b.op("Concat", up, early, axis=1) if scales[2] == 2 else up, out_c, 32, 1)
    b.op("Identity", y, outputs=["y"])
    b.output("y", np.float32, ["n", 32, target[2], target[3]])
    return b.build()


@pytest.mark.parametrize("mode, by", [("nearest", "scales"), ("linear", "scales"), ("nearest", "sizes")])
def test_resize_of_the_image_runs_channels_last(mode, by, monkeypatch):
    """One region across the upsampling (its scales or sizes permuted to NHWC's order), equal to
    onnxruntime; the standard file still runs."""
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 1.0)  # the small net's region pays
    model = _upsampling_net(mode, by)
    proto = model_to_proto(model)
    batch = 1 if by == "sizes" else 2  # sizes fix the batch too
    x = {"x": np.random.default_rng(3).standard_normal((batch, 32, 16, 16)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    p = Predictor(Config(model_path=proto))
    g = p.model.graph
    resize = next(n for n in g.nodes if n.op_type == "Resize")
    assert resize.inputs[0].endswith(layout.SUFFIX)
    assert sum(n.op_type == "Transpose" for n in g.nodes) == 2  # into the one region and out of it
    np.testing.assert_allclose(p.run(x)["y"], want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_as_standard_onnx(p.model, x)[0], want, rtol=RTOL, atol=ATOL)


def test_resize_of_the_channels_stays_nchw(monkeypatch):
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 1.0)
    model = _upsampling_net("nearest", "scales", scales=(1.0, 2.0, 1.0, 1.0))
    x = {"x": np.random.default_rng(4).standard_normal((2, 32, 16, 16)).astype(np.float32)}
    want = Session(model, kinds=("reference",)).run(x)[0]
    optimize(model)
    resize = next(n for n in model.graph.nodes if n.op_type == "Resize")
    assert not resize.inputs[0].endswith(layout.SUFFIX)
    np.testing.assert_allclose(Session(model).run(x)[0], want, rtol=RTOL, atol=ATOL)


def test_squeeze_excitation_gates_run_channels_last():
    """MobileNetV3's per-channel gate, Mul((N, C, H, W), (N, C, 1, 1)), joins the region: the gate
    (N, 1, 1, C) channels-last broadcasts the same way; the whole network is one region. (Seen
    with the gates apart: ``fuse_squeeze_excite`` makes each one node afterwards.)"""
    proto = model_to_proto(zoo.mobilenet_v3_style(size=64))
    x = {"input": np.random.default_rng(6).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    p = Predictor(Config(model_path=proto, passes={"fuse_squeeze_excite": False}))
    g = p.model.graph
    gates = [n for n in g.nodes if n.op_type == "Mul"]
    assert len(gates) == 8 and all(i.endswith(layout.SUFFIX) for n in gates for i in n.inputs)
    assert sum(n.op_type == "Transpose" for n in g.nodes) == 1  # out of the region after the global pool
    scale = np.abs(want).max()
    np.testing.assert_allclose(p.run(x)["logits"], want, rtol=RTOL, atol=ATOL * scale)
    np.testing.assert_allclose(run_as_standard_onnx(p.model, x)[0], want, rtol=RTOL, atol=ATOL * scale)


def test_a_gate_of_other_channels_stays_out():
    """(N, 1, 1, 1) or (N, C', 1, 1) with C' != C is not a per-channel gate of the map."""
    assert layout._channel_scale(("n", 8, 5, 5), ("n", 8, 1, 1))
    assert not layout._channel_scale(("n", 8, 5, 5), ("n", 1, 1, 1))
    assert not layout._channel_scale(("n", 8, 5, 5), ("n", 4, 1, 1))
    assert not layout._channel_scale(("n", 8, 5, 5), ("n", 8, 5, 1))


def test_yolov8_style_splits_run_channels_last():
    """A C2f block's Split of its 1x1's output along the channels joins the region (axis 3 once
    converted), so the YOLOv8-style network is one region: transposes only out to its two scales.
    (With every pass on, split_conv_outputs takes these Splits away first.)"""
    proto = model_to_proto(zoo.yolov8_style(size=64))
    x = {"input": np.random.default_rng(7).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    p = Predictor(Config(model_path=proto, passes={"split_conv_outputs": False}))
    g = p.model.graph
    splits = [n for n in g.nodes if n.op_type == "Split"]
    assert len(splits) == 6 and all(n.attrs["axis"] == 3 and n.inputs[0].endswith(layout.SUFFIX) for n in splits)
    assert sum(n.op_type == "Transpose" for n in g.nodes) == 2
    got = p.run(x)
    for name, w in zip(("scale8", "scale16"), want):
        np.testing.assert_allclose(got[name], w, rtol=RTOL, atol=ATOL * np.abs(w).max())
    for got_std, w in zip(run_as_standard_onnx(p.model, x), want):
        np.testing.assert_allclose(got_std, w, rtol=RTOL, atol=ATOL * np.abs(w).max())


def _split_net(axis: int, opset: int = 17):
    """1x1 conv -> Split (two equal parts along ``axis``; opset 18: by num_outputs) -> a 1x1 conv each -> Add."""
    b = GraphBuilder("split", opset=opset)
    rng = np.random.default_rng(8)

    def conv(x, cin, cout):
        return b.op("Conv", x, b.const((rng.standard_normal((cout, cin, 1, 1)) * 0.2).astype(np.float32)))

    h = conv(b.input("x", np.float32, [2, 32, 8, 8]), 32, 32)
    if opset >= 18:
        a, c = b.op("Split", h, axis=axis, num_outputs=2, outputs=2)
    else:
        a, c = b.op("Split", h, b.const(np.array([4, 4] if axis == 2 else [16, 16], np.int64)), axis=axis, outputs=2)
    cin = 32 if axis == 2 else 16
    b.op("Add", conv(a, cin, 16), conv(c, cin, 16), outputs=["y"])
    b.output("y", np.float32, [2, 16, 4 if axis == 2 else 8, 8])
    return b.build()


@pytest.mark.parametrize("axis,opset,joins", [(1, 17, True), (-3, 18, True), (2, 17, False)],
                         ids=["channels", "channels-num_outputs", "height"])
def test_split_joins_along_the_channels_only(axis, opset, joins, monkeypatch):
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 1.0)  # the small net's region pays
    model = _split_net(axis, opset)
    x = {"x": np.random.default_rng(9).standard_normal((2, 32, 8, 8)).astype(np.float32)}
    want = Session(model, kinds=("reference",)).run(x)[0]
    optimize(model, switches={"split_conv_outputs": False})  # which would take the Split away
    split = next(n for n in model.graph.nodes if n.op_type == "Split")
    assert split.inputs[0].endswith(layout.SUFFIX) == joins
    assert split.attrs["axis"] == (3 if joins else axis)
    np.testing.assert_allclose(Session(model).run(x)[0], want, rtol=RTOL, atol=ATOL)


def _permuting_block() -> GraphBuilder:
    """A depthwise conv whose output a user permutes to NHWC (a graph output there, and a Relu on
    it), and permutes back for a residual Add: ConvNeXt's pattern, one graph output on each side."""
    rng = np.random.default_rng(9)
    b = GraphBuilder("permutes", opset=17)
    x = b.input("x", np.float32, ["N", 32, 10, 10])
    d = b.op("Conv", x, b.const((rng.standard_normal((32, 1, 3, 3)) * 0.3).astype(np.float32)), group=32, pads=[1] * 4)
    nhwc = b.op("Transpose", d, perm=[0, 2, 3, 1])
    b.op("Relu", nhwc, outputs=["side"])
    back = b.op("Transpose", b.op("Relu", nhwc), perm=[0, 3, 1, 2])
    b.op("Add", x, back, outputs=["y"])
    b.output("side", np.float32)
    b.output("y", np.float32)
    return b


def test_user_permutes_become_identities_in_a_region(monkeypatch):
    """An exit permute (NCHW -> NHWC) of a region tensor is an Identity of its twin; an entry one
    (NHWC -> NCHW) into the region makes the twin of its output: no data moved for either, and the
    outputs on both sides equal onnxruntime's. A Relu on the exit's NHWC tensor stays outside (its
    rank-4 shape would pass for NCHW)."""
    monkeypatch.setattr(layout, "MIN_DEPTHWISE_PER_BOUNDARY", 1e-3)  # this small a region pays
    proto = model_to_proto(_permuting_block().build())
    model = load_model(proto)
    optimize(model)
    g = model.graph
    perms = [tuple(n.attrs["perm"]) for n in g.nodes if n.op_type == "Transpose"]
    assert perms.count((0, 2, 3, 1)) == 1 and perms.count((0, 3, 1, 2)) == 1, perms  # the region's in and out only
    assert any(n.op_type == OP for n in g.nodes)
    x = np.random.default_rng(1).standard_normal((2, 32, 10, 10)).astype(np.float32)
    got = Predictor(Config(model_path=proto, num_threads=1)).run({"x": x})
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got["side"], want[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["y"], want[1], rtol=RTOL, atol=ATOL)
