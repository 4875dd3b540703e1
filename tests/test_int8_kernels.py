"""int8 kernels (inference.kernels.int8) against their reference (the QDQ graph's meaning), the
portable tile against the VNNI one, and the QDQ fusion pass."""
from __future__ import annotations

import copy
import re

import numba
import numpy as np
import pytest

import inference.kernels  # noqa: F401  (registers the fast kernels)
from inference.builder import GraphBuilder
from inference.kernels import int8 as K
from inference.kernels import int8_nhwc as N
from inference.passes.qdq_fusion import fuse_qdq
from inference.session import Session

RNG = np.random.default_rng(0)


def _q(shape, dtype):
    lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
    return RNG.integers(lo, hi, shape).astype(dtype)


def _lsb_close(got: np.ndarray, ref: np.ndarray, scale: float | None) -> None:
    """Quantized outputs may differ by one step (float vs exact int32 accumulation at a tie);
    float outputs agree to float32 rounding."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if scale is not None:
        diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
        assert diff.max() <= 1 and (diff > 0).sum() <= max(1, 0.01 * diff.size)  # a tie among 100 outputs: 1%
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max() + 1))


CONV_CASES = [  # (n, c, h, w, m, k, stride, pad, dilation, group)
    (1, 3, 9, 9, 8, 3, 1, 1, 1, 1),
    (2, 16, 13, 11, 20, 3, 2, 1, 1, 1),
    (1, 3, 30, 30, 16, 7, 2, 3, 1, 1),
    (1, 8, 16, 16, 16, 1, 2, 0, 1, 1),
    (1, 8, 17, 17, 16, 3, 2, 1, 2, 1),
    (1, 8, 12, 12, 16, 3, 1, 2, 2, 1),
    (1, 5, 11, 11, 9, 2, 3, 0, 1, 1),
    (1, 16, 10, 10, 32, 3, 1, 1, 1, 2),
    (3, 6, 5, 7, 4, 1, 1, 0, 1, 1),
    # depthwise (the stencil of kernels.int8_depthwise): strides 1-3, 5x5 on rows past one 32-lane block, dilated
    (2, 16, 13, 11, 16, 3, 1, 1, 1, 16),
    (1, 24, 14, 15, 24, 3, 2, 1, 1, 24),
    (1, 8, 40, 70, 8, 5, 2, 2, 1, 8),
    (1, 8, 12, 12, 8, 3, 1, 2, 2, 8),
    (1, 4, 9, 9, 4, 3, 3, 0, 1, 4),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("xdt", [np.uint8, np.int8])
@pytest.mark.parametrize("out", ["uint8", "int8", "float"])
def test_qconv_matches_reference(case, xdt, out):
    n, c, h, w, m, k, s, p, d, g = case
    x, wq = _q((n, c, h, w), xdt), _q((m, c // g, k, k), np.int8)
    xs, xzp = np.asarray(np.float32(0.03)), np.asarray(5, xdt)
    ws = RNG.uniform(0.002, 0.01, m).astype(np.float32)
    b = RNG.integers(-2000, 2000, m).astype(np.int32)
    ys, yzp = (np.asarray(np.float32(0.4)), np.asarray(3, np.dtype(out))) if out != "float" else (None, None)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, dilations=[d, d], group=g, activation="Relu")
    ref = K.qconv_reference(x, xs, xzp, wq, ws, b, None, ys, yzp, **attrs)
    got = K.qconv2d(x, xs, xzp, wq, ws, b, None, ys, yzp, **attrs)
    _lsb_close(got, ref, None if ys is None else 0.4)


@pytest.mark.parametrize("activation,alpha,beta",
                         [("", 0, 0), ("Clip", -1.0, 2.0), ("LeakyRelu", 0.1, 0), ("Sigmoid", 0, 0)])
@pytest.mark.parametrize("group", [1, 8], ids=["dense", "depthwise"])
def test_qconv_residual_float_bias_and_activations(activation, alpha, beta, group):
    m = 12 if group == 1 else 8
    x, wq = _q((2, 8, 9, 9), np.uint8), _q((m, 8 // group, 3, 3), np.int8)
    args = (x, np.asarray(np.float32(0.02)), np.asarray(128, np.uint8), wq, np.asarray(np.float32(0.004)),
            RNG.standard_normal(m).astype(np.float32), RNG.standard_normal((2, m, 9, 9)).astype(np.float32))
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group, activation=activation, alpha=alpha, beta=beta)
    _lsb_close(K.qconv2d(*args, **attrs), K.qconv_reference(*args, **attrs), None)
    q = (np.asarray(np.float32(0.05)), np.asarray(-3, np.int8))
    _lsb_close(K.qconv2d(*args, *q, **attrs), K.qconv_reference(*args, *q, **attrs), 0.05)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("shape", [(1, 64), (3, 5, 40), (70, 33), (9, 100)])
@pytest.mark.parametrize("nout", [30, 100])  # a half-width block; a whole one and another
@pytest.mark.parametrize("xzp", [np.uint8(100), np.int8(-20), None], ids=["uint8", "int8", "no-zero-point"])
def test_qmatmul_matches_reference(trans_b, shape, nout, xzp):
    """uint8 and int8 activations (the kernel reads the zero point from its array and shifts int8
    ones by 128), and none (zero point 0)."""
    k = shape[-1]
    x = _q(shape, np.int8 if isinstance(xzp, np.int8) else np.uint8)
    w = _q((nout, k) if trans_b else (k, nout), np.int8)
    args = (x, np.asarray(np.float32(0.1)), None if xzp is None else np.asarray(xzp), w,
            np.full(nout, 0.01, np.float32), np.arange(nout, dtype=np.int32))
    _lsb_close(N.qmatmul(*args, transB=trans_b), K.qmatmul_reference(*args, transB=trans_b), None)
    q = (None, np.asarray(np.float32(0.7)), np.asarray(7, np.uint8))
    for act in ("Relu", "Gelu"):  # Gelu: a pass after the tile's float sums
        _lsb_close(N.qmatmul(*args, *q, transB=trans_b, activation=act),
                   K.qmatmul_reference(*args, *q, transB=trans_b, activation=act), 0.7)
    _lsb_close(N.qmatmul(*args, transB=trans_b, activation="Gelu"),
               K.qmatmul_reference(*args, transB=trans_b, activation="Gelu"), None)


def _tile_runner(vnni: bool, unsigned_broadcast: bool = False):
    tile = K.make_tile(K.MR, K.NV, "s8u8" if unsigned_broadcast else "u8s8", vnni=vnni)

    @numba.njit  # not cached, so its assembly can be inspected
    def run(wp, cp, koff, k4, out):
        tile(wp, 0, cp, 0, koff, k4, out)

    return run


def test_portable_tile_equals_vnni_meaning():
    """The generic-IR tile (what a CPU without AVX512-VNNI compiles) computes the same products."""
    run = _tile_runner(False)
    k = 40
    w = _q((K.MR, k), np.int8)
    cols = _q((K.NP, k), np.uint8)
    wp, _, k4 = K.pack_weights(w)
    cp = np.ascontiguousarray(cols.reshape(K.NP, k4, 4).transpose(1, 0, 2))  # [k4][32 pixels][4 taps]
    out = np.empty(K.MR * K.NP, np.int32)
    run(wp, cp.reshape(-1).view(np.int32), np.arange(k4, dtype=np.int64) * K.NP, k4, out)
    np.testing.assert_array_equal(out.reshape(K.MR, K.NP), w.astype(np.int64) @ cols.astype(np.int64).T)


@pytest.mark.parametrize("vnni", [False, True])
def test_matmul_tile_broadcasts_unsigned_rows(vnni):
    if vnni and not K.has_vnni():
        pytest.skip("no AVX512-VNNI on this CPU")
    run = _tile_runner(vnni, unsigned_broadcast=True)
    k4 = 10
    x, w = _q((K.MR, 4 * k4), np.uint8), _q((K.NP, 4 * k4), np.int8)
    xp = np.ascontiguousarray(x.reshape(K.MR, k4, 4).transpose(1, 0, 2)).view(np.int32).reshape(-1)  # [k4][MR]
    wcols = np.ascontiguousarray(w.reshape(K.NP, k4, 4).transpose(1, 0, 2)).view(np.int32).reshape(-1)  # [k4][NP]
    out = np.empty(K.MR * K.NP, np.int32)
    run(xp, wcols, np.arange(k4, dtype=np.int64) * K.NP, k4, out)
    np.testing.assert_array_equal(out.reshape(K.MR, K.NP), x.astype(np.int64) @ w.astype(np.int64).T)


def test_vnni_instruction_emitted_when_available():
    """With AVX512-VNNI the tile's inner loop is vpdpbusd on zmm registers, one per accumulator."""
    if not K.has_vnni():
        pytest.skip("no AVX512-VNNI on this CPU: the portable tile is used")
    run = _tile_runner(True)
    k4 = 4
    run(np.zeros(k4 * K.MR, np.int32), np.zeros(k4 * K.NP, np.int32), np.arange(k4, dtype=np.int64) * K.NP, k4,
        np.empty(K.MR * K.NP, np.int32))
    asm = run.inspect_asm(run.signatures[0])
    assert len(re.findall(r"vpdpbusd\s+[^\n]*%zmm", asm)) >= K.MR * K.NV


def _qdq_cnn(opset: int = 17):
    """DQ -> Conv -> Add(residual) -> Relu -> Q and DQ -> Gemm: what compress.quantize writes."""
    b = GraphBuilder("qdq", opset=opset)
    x = b.input("x", np.float32, ["N", 4, 8, 8])
    s, z = b.const(np.float32(0.02)), b.const(np.uint8(10))
    xq = b.op("QuantizeLinear", x, s, z)
    xd = b.op("DequantizeLinear", xq, s, z)
    wd = b.op("DequantizeLinear", b.const(_q((8, 4, 3, 3), np.int8)), b.const(np.full(8, 0.01, np.float32)),
              b.const(np.zeros(8, np.int8)), axis=0)
    bd = b.op("DequantizeLinear", b.const(RNG.integers(-500, 500, 8).astype(np.int32)),
              b.const(np.full(8, 0.0002, np.float32)), axis=0)
    res = b.op("Conv", x, b.const(RNG.standard_normal((8, 4, 1, 1)).astype(np.float32)))
    y = b.op("Relu", b.op("Add", b.op("Conv", xd, wd, bd, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), res))
    ys, yz = b.const(np.float32(0.05)), b.const(np.uint8(0))
    yd = b.op("DequantizeLinear", b.op("QuantizeLinear", y, ys, yz), ys, yz)
    fs, fz = b.const(np.float32(0.05)), b.const(np.uint8(0))
    flat = b.op("DequantizeLinear", b.op("QuantizeLinear", b.op("Flatten", yd, axis=1), fs, fz), fs, fz)
    gw = b.op("DequantizeLinear", b.const(_q((10, 512), np.int8)), b.const(np.float32(0.003)), b.const(np.int8(0)))
    b.op("Gemm", flat, gw, b.const(np.zeros(10, np.float32)), transB=1, outputs=["y"])
    b.output("y", np.float32, ["N", 10])
    return b.build()


def test_fuse_qdq_rewrites_patterns_and_keeps_results():
    model = _qdq_cnn()
    x = RNG.random((2, 4, 8, 8)).astype(np.float32) * 2
    ref = Session(model).run({"x": x})[0]
    fused = copy.deepcopy(model)
    assert fuse_qdq(fused)
    hist = fused.graph.op_histogram()
    assert hist.get("edgelearn::QConv") == 1 and hist.get("edgelearn::QMatMul") == 1
    assert "Relu" not in hist and "Add" not in hist and "Gemm" not in hist
    qconv = next(n for n in fused.graph.nodes if n.op_type == "QConv")
    assert qconv.attrs["activation"] == "Relu" and len(qconv.inputs) == 9  # residual and requantization fused
    got = Session(fused).run({"x": x})[0]
    np.testing.assert_allclose(got, ref, atol=0.1)  # a one-step difference of y moves the logits by ~0.02
    assert not fuse_qdq(fused)  # idempotent: nothing left to fuse


@pytest.mark.parametrize("bias_scale", [0.0002, 0.0003], ids=["x_scale*w_scale", "another"])
def test_fuse_qdq_takes_a_bias_with_zero_point_or_another_scale(bias_scale):
    """onnxruntime's quantizer gives the int32 bias's DequantizeLinear a zero point of zeros (it had
    left every conv of its MobileNetV2 unfused); a bias at another scale than x_scale * w_scale
    is what it dequantizes to, as a float bias (the int32 one had been read at the tile's scale)."""
    model = _qdq_cnn()
    g = model.graph
    bias_dq = next(n for n in g.nodes if n.op_type == "DequantizeLinear" and n.inputs[0] in g.initializers
                   and g.initializers[n.inputs[0]].dtype == np.int32)
    g.initializers["bias_zp"] = np.zeros(8, np.int32)
    g.initializers[bias_dq.inputs[1]] = np.full(8, bias_scale, np.float32)
    bias_dq.inputs = bias_dq.inputs[:2] + ["bias_zp"]
    x = RNG.random((2, 4, 8, 8)).astype(np.float32) * 2
    ref = Session(model).run({"x": x})[0]
    fused = copy.deepcopy(model)
    assert fuse_qdq(fused)
    qconv = next(n for n in fused.graph.nodes if n.op_type == "QConv")
    assert fused.graph.initializers[qconv.inputs[5]].dtype == (np.int32 if bias_scale == 0.0002 else np.float32)
    np.testing.assert_allclose(Session(fused).run({"x": x})[0], ref, atol=0.1)


def test_fuse_qdq_leaves_float_and_unsupported_graphs_alone():
    b = GraphBuilder("f", opset=17)
    x = b.input("x", np.float32, [1, 4])
    b.op("MatMul", x, b.const(np.ones((4, 2), np.float32)), outputs=["y"])
    b.output("y", np.float32, [1, 2])
    m = b.build()
    assert not fuse_qdq(m)
    asym = _qdq_cnn()  # a weight with a non-zero zero point is not symmetric: not fused
    inits = asym.graph.initializers
    for n in asym.graph.nodes:
        zp = inits.get(n.inputs[2]) if n.op_type == "DequantizeLinear" and len(n.inputs) > 2 else None
        if zp is not None and zp.dtype == np.int8 and zp.size == 8:
            inits[n.inputs[2]] = np.ones(8, np.int8)
    assert fuse_qdq(asym)
    assert asym.graph.op_histogram().get("edgelearn::QConv") is None


def test_fused_model_schema_shapes():
    from inference.shape_inference import infer_shapes

    fused = _qdq_cnn()
    fuse_qdq(fused)
    fused.graph.value_info.clear()
    infer_shapes(fused, strict=True)
    qconv = next(n for n in fused.graph.nodes if n.op_type == "QConv")
    t = fused.graph.type_of(qconv.outputs[0])
    assert t.shape == ("N", 8, 8, 8) and t.elem_type == 2  # uint8, from y_zero_point


@pytest.mark.parametrize("shape,scale", [((3, 50), 1.0), ((2, 7, 9), 100.0), ((4,), 0.0), ((5, 5), -3.0)])
def test_fast_dynamic_quantize_linear_equals_reference(shape, scale):
    from inference.ops.quantize import dynamic_quantize_linear

    x = (RNG.standard_normal(shape) * scale).astype(np.float32)
    if scale < 0:
        x = np.abs(x)  # all positive: the range still includes 0
    from inference.kernels.int8_qdq import dynamic_quantize_linear_fast

    for got, ref in zip(dynamic_quantize_linear_fast(x), dynamic_quantize_linear(x)):
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype,zp", [(np.uint8, None), (np.uint8, 0), (np.uint8, 7), (np.int8, 0), (np.int8, -7)])
def test_fast_quantize_dequantize_equal_reference(dtype, zp):
    """The one-pass per-tensor Q/DQ kernels give the reference's exact values (ties, saturation)."""
    from inference.kernels.int8_qdq import dequantize_linear_fast, quantize_linear_fast
    from inference.ops.quantize import dequantize_linear, quantize_linear

    x = (RNG.standard_normal((2, 3, 17, 5)) * 4).astype(np.float32)
    x.flat[:6] = [0.25, 0.75, -0.25, 1e9, -1e9, 2.5]  # halves round to even; saturation both ways
    scale = np.asarray(np.float32(0.5))
    zpa = None if zp is None else np.asarray(zp, dtype)  # none: uint8
    q = quantize_linear_fast(x, scale, zpa)
    ref = quantize_linear(x, scale, zpa)
    assert q.dtype == ref.dtype and q.shape == ref.shape
    np.testing.assert_array_equal(q, ref)
    d, dref = dequantize_linear_fast(q, scale, zpa), dequantize_linear(q, scale, zpa)
    assert d.dtype == dref.dtype == np.float32
    np.testing.assert_array_equal(d, dref)


def test_fast_quantize_falls_back_for_per_axis_scales():
    from inference.kernels.int8_qdq import dequantize_linear_fast, quantize_linear_fast
    from inference.ops.quantize import dequantize_linear, quantize_linear

    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    s, z = np.array([0.1, 0.2, 0.3], np.float32), np.array([1, 2, 3], np.uint8)
    q = quantize_linear_fast(x, s, z, axis=1)
    np.testing.assert_array_equal(q, quantize_linear(x, s, z, axis=1))
    np.testing.assert_array_equal(dequantize_linear_fast(q, s, z, axis=1), dequantize_linear(q, s, z, axis=1))


def test_cached_epilogue_constants_follow_new_parameters():
    """Packed weights and epilogue constants are cached per weight array; other scale or zero-point
    arrays (dynamic quantization) on the same weight must not reuse the stale constants."""
    x, wq = _q((1, 8, 9, 9), np.uint8), _q((16, 8, 3, 3), np.int8)
    ws, b = RNG.uniform(0.002, 0.01, 16).astype(np.float32), RNG.integers(-500, 500, 16).astype(np.int32)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Relu")
    for xs, xzp, ys in ((0.03, 5, 0.4), (0.05, 9, 0.2), (0.03, 5, 0.1)):
        args = (x, np.asarray(np.float32(xs)), np.asarray(xzp, np.uint8), wq, ws, b, None,
                np.asarray(np.float32(ys)), np.asarray(3, np.uint8))
        _lsb_close(K.qconv2d(*args, **attrs), K.qconv_reference(*args, **attrs), ys)


@pytest.mark.parametrize("h,w", [(7, 7), (14, 14), (9, 40)])
def test_qconv_residual_rows_across_pixel_blocks(h, w):
    """Residual reads and output stores are masked per output-row segment of each 32-pixel block:
    rows shorter, equal and longer than a block, with the direct conv's padding columns between."""
    x, wq = _q((2, 8, h, w), np.uint8), _q((24, 8, 3, 3), np.int8)
    z = RNG.standard_normal((2, 24, h, w)).astype(np.float32)
    args = (x, np.asarray(np.float32(0.02)), np.asarray(100, np.uint8), wq, np.asarray(np.float32(0.004)), None, z)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _lsb_close(K.qconv2d(*args, **attrs), K.qconv_reference(*args, **attrs), None)
    q = (np.asarray(np.float32(0.05)), np.asarray(-3, np.int8))
    _lsb_close(K.qconv2d(*args, *q, **attrs), K.qconv_reference(*args, *q, **attrs), 0.05)


def test_strided_plan_has_no_zero_taps():
    """A stride-2 3x3 runs as per-phase stride-1 convolutions with only their own taps: the same
    4-tap steps per output as a stride-1 3x3 (the plain space-to-depth kernel had 16/9 of them)."""
    from inference.kernels.tile_plan import conv_plan

    strided = conv_plan((1, 64, 56, 56), (128, 64, 3, 3), 1, "NOTSET", None, (3, 3), (1, 1, 1, 1), (2, 2))
    plain = conv_plan((1, 64, 56, 56), (128, 64, 3, 3), 1, "NOTSET", None, (3, 3), (1, 1, 1, 1), (1, 1))
    assert strided.layout == "s2d2" and strided.koff.size == plain.koff.size == 9 * 64 // 4
    assert strided.groups == 4 * 16 and (strided.oh, strided.ow) == (28, 28)
    packed = K._packed(_q((128, 64, 3, 3), np.int8), 1, strided.weight_layout)[0]
    assert packed[2] == strided.koff.size  # weights packed in the plan's tap order


def _lanes_runner():
    from inference.kernels.tile_lanes import add_lanes, clamp_block, requant_block, scale_block, store_lanes

    @numba.njit
    def run(buf, c, s, fb, z, q0, cnt, amin, amax, inv, lo, hi, izp, out8, outf):
        vals = np.empty(32, np.float32)
        scale_block(buf, 32, c, s, fb, vals)
        add_lanes(vals, q0, cnt, z, 40)
        clamp_block(vals, amin, amax)
        qb = np.empty(32, np.uint8)
        requant_block(vals, inv, lo, hi, izp, qb)
        store_lanes(qb, q0, cnt, out8, 10)
        store_lanes(vals, q0, cnt, outf, 7)
        return vals

    return run


@pytest.mark.parametrize("q0,cnt", [(0, 32), (5, 9), (31, 1), (0, 0)])
def test_epilogue_lanes_touch_only_their_segment(q0, cnt):
    """The vector epilogue steps: scale, masked residual, clamp, requantize, and
    masked stores that write lanes [q0, q0+cnt) only (neighbouring outputs belong to other rows)."""
    buf = RNG.integers(-3000, 3000, 64).astype(np.int32)
    z = RNG.standard_normal(80).astype(np.float32)
    out8, outf = np.full(64, 77, np.int8), np.full(64, -5.0, np.float32)
    c, s, fb, inv = np.int32(11), np.float32(0.01), np.float32(0.25), np.float32(1 / 0.05)
    vals = _lanes_runner()(buf, c, s, fb, z, q0, cnt, np.float32(0), np.float32(np.inf), inv,
                           np.float32(-128 - 3), np.float32(127 - 3), np.int32(3), out8, outf)
    lanes = np.arange(32)
    seg = (lanes >= q0) & (lanes < q0 + cnt)
    ref = (buf[32:] + c).astype(np.float32) * s + fb
    ref[seg] += z[40 + lanes[seg] - q0]
    ref = np.maximum(ref, 0)
    np.testing.assert_allclose(vals, ref, rtol=1e-6, atol=1e-6)
    q = (np.clip(np.rint(ref * inv), -131, 124) + 3).astype(np.int8)
    exp8, expf = np.full(64, 77, np.int8), np.full(64, -5.0, np.float32)
    exp8[10:10 + cnt], expf[7:7 + cnt] = q[q0:q0 + cnt], vals[q0:q0 + cnt]
    np.testing.assert_array_equal(out8, exp8)
    np.testing.assert_array_equal(outf, expf)
