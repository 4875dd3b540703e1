"""Channels-last int8 convolutions (inference.kernels.int8_nhwc) against their reference (QConv's
QDQ meaning, transposed about it), and int8 models put channels-last by the layout pass."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import inference.kernels  # noqa: F401  (registers the fast kernels)
from inference import Config, Predictor, zoo
from inference.kernels import int8 as K
from inference.kernels import int8_nhwc as N
from inference.kernels.nhwc import TO_NCHW, TO_NHWC
from inference.onnx_export import model_to_proto
from tests.conftest import run_as_standard_onnx

RNG = np.random.default_rng(0)


def _q(shape, dtype):
    lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
    return RNG.integers(lo, hi, shape).astype(dtype)


def _close(got: np.ndarray, ref: np.ndarray, quantized: bool) -> None:
    """Requantized outputs may move one step at a rounding tie (float32 products against the
    reference's float convolution); float outputs agree to float32 rounding."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if quantized:
        diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
        assert diff.max() <= 1 and (diff > 0).sum() <= max(1, 0.01 * diff.size), (diff.max(), (diff > 0).mean())
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max() + 1))


CASES = [  # (c, m, h, w, k, stride, pad, dilation, group, activation)
    (16, 96, 12, 13, 1, 1, 0, 1, 1, "Clip"),  # an expansion: a whole block and a half one
    (24, 24, 9, 9, 1, 1, 0, 1, 1, ""),  # a half-width block alone
    (64, 144, 5, 6, 1, 1, 0, 1, 1, "Relu"),  # two whole blocks and 16 channels
    (40, 40, 7, 7, 1, 1, 0, 1, 1, "HardSwish"),  # one block, 24 lanes idle; an activation in the tile
    (18, 20, 6, 6, 1, 1, 0, 1, 1, "Sigmoid"),  # channels not a multiple of 4: gathered
    (64, 130, 5, 5, 1, 2, 0, 1, 1, ""),  # strided 1x1: gathered
    (3, 32, 17, 17, 3, 2, 1, 1, 1, "Relu"),  # an RGB stem: im2col
    (8, 16, 9, 9, 3, 1, 2, 2, 1, "Clip"),  # dilated kxk
    (32, 32, 10, 11, 3, 1, 1, 1, 32, "Clip"),  # depthwise, spans of pixels
    (96, 96, 11, 11, 3, 2, 1, 1, 96, "Clip"),  # depthwise, strided
    (40, 40, 7, 7, 5, 1, 2, 1, 40, "Relu"),  # 5x5: taps in three groups
    (24, 24, 8, 8, 3, 1, 2, 2, 24, "LeakyRelu"),  # dilated; an activation lane by lane
    (16, 16, 13, 14, 3, 3, 1, 1, 16, "Relu"),  # stride 3: nine phase planes
    (16, 16, 12, 11, 3, 2, 1, 2, 16, ""),  # strided and dilated
    (576, 576, 7, 7, 3, 2, 1, 1, 576, "HardSwish"),
    (40, 40, 2, 3, 3, 1, 1, 1, 40, "Relu"),  # a map smaller than the window: every row from padded bands
    (64, 64, 6, 5, 3, 2, 0, 1, 64, ""),  # unpadded, whole 64-channel blocks: the last rows read in place
    (32, 72, 4, 5, 1, 1, 0, 1, 1, "Gelu"),  # activations the tile leaves to a pass of their own
    (20, 16, 5, 5, 3, 1, 1, 1, 1, "LeakyRelu"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("xdt", [np.uint8, np.int8])
@pytest.mark.parametrize("quantized", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_kernel_matches_reference_and_the_nchw_kernel(case, xdt, quantized, residual):
    c, m, h, w, k, s, p, d, g, act = case
    x = _q((2, h, w, c), xdt)
    wt = _q((m, c // g, k, k), np.int8)
    params = [np.array(0.02, np.float32), np.array(5 if xdt == np.uint8 else -3, xdt), wt,
              (RNG.random(m) * 0.01 + 0.001).astype(np.float32), RNG.integers(-2000, 2000, m).astype(np.int32)]
    attrs = dict(group=g, kernel_shape=[k, k], pads=[p] * 4, strides=[s, s], dilations=[d, d], activation=act,
                 alpha=0.1 if act == "LeakyRelu" else 0.0, beta=6.0)
    ref0 = N.qconv_nhwc_reference(x, *params, **attrs)
    z = RNG.standard_normal(ref0.shape).astype(np.float32) if residual else None
    q = [np.array(0.05, np.float32), np.array(3, np.uint8)] if quantized else [None, None]
    ref = N.qconv_nhwc_reference(x, *params, z, *q, **attrs)
    got = N.qconv_nhwc_fast(x, *params, z, *q, **attrs)
    _close(got, ref, quantized)
    if g > 1 or act in ("", "Relu", "Clip"):  # the tile's other activations are vectorised: not lane by lane
        nchw = K.qconv2d(np.ascontiguousarray(x.transpose(TO_NCHW)), *params, None if z is None else
                         np.ascontiguousarray(z.transpose(TO_NCHW)), *q, **attrs)
        np.testing.assert_array_equal(got, nchw.transpose(TO_NHWC))  # the same epilogue, step by step


def test_channel_blocks_and_panels():
    assert [N.channel_blocks(m) for m in (96, 24, 144, 40, 64, 160)] == [(1, 32), (0, 24), (2, 16), (1, 0), (1, 0),
                                                                         (2, 32)]
    w = _q((96, 10), np.int8)
    packed, sums, k4 = N.pack_weight_panels(w)
    assert k4 == 3 and packed.size == (64 + 32) * k4 and np.array_equal(sums, w.astype(np.int32).sum(1))
    taps = packed.view(np.int8)
    first = taps[:64 * k4 * 4].reshape(k4, 64, 4)  # [step][channel][tap]: step 0 of channel 5 = w[5, 0:4]
    assert np.array_equal(first[0, 5], w[5, :4]) and np.array_equal(first[2, 5], np.r_[w[5, 8:], 0, 0])
    half = taps[64 * k4 * 4:].reshape(k4, 32, 4)
    assert np.array_equal(half[1, 31], w[95, 4:8])


def test_depthwise_taps_packing_order():
    """Lane 4L + j of vector v of a 64-channel block holds the 4 taps of channel 16L + 4v + j: the
    order the tile's byte unpacks leave its sums in."""
    from inference.kernels.int8_depthwise_ir import pack_depthwise_taps

    w = _q((70, 1, 3, 3), np.int8)
    packed = pack_depthwise_taps(w).view(np.int8).reshape(2, 3, 4, 16, 4)  # (block, step, vector, lane, tap)
    taps = np.zeros((128, 12), np.int8)
    taps[:70, :9] = w.reshape(70, 9)
    for b, k, v, lane in [(0, 0, 0, 0), (0, 1, 2, 5), (0, 2, 3, 15), (1, 0, 1, 6), (1, 2, 0, 3)]:
        ch = 64 * b + 16 * (lane // 4) + 4 * v + lane % 4
        assert np.array_equal(packed[b, k, v, lane], taps[ch, 4 * k:4 * k + 4]), (b, k, v, lane)


@pytest.mark.parametrize("strides", [(1, 2), (2, 1)])
def test_depthwise_with_unequal_strides_steps_through_the_padded_image(strides):
    x = _q((1, 9, 10, 130), np.uint8)  # two whole 64-channel blocks and 2 channels
    params = [np.array(0.02, np.float32), np.array(7, np.uint8), _q((130, 1, 3, 3), np.int8),
              (RNG.random(130) * 0.01 + 0.001).astype(np.float32), RNG.integers(-2000, 2000, 130).astype(np.int32),
              None, np.array(0.05, np.float32), np.array(3, np.uint8)]
    attrs = dict(group=130, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=list(strides), activation="Relu")
    got = N.qconv_nhwc_fast(x, *params, **attrs)
    nchw = K.qconv2d(np.ascontiguousarray(x.transpose(TO_NCHW)), *params, **attrs)
    np.testing.assert_array_equal(got, nchw.transpose(TO_NHWC))
    _close(got, N.qconv_nhwc_reference(x, *params, **attrs), True)


def test_unsupported_group_names_the_shapes():
    from inference.errors import KernelError

    with pytest.raises(KernelError, match="depthwise or group 1"):
        N.qconv2d_nhwc(_q((1, 4, 4, 8), np.uint8), np.float32(0.1), None, _q((8, 4, 1, 1), np.int8),
                       np.float32(0.1), group=2)


# -- models ------------------------------------------------------------------------------------------
def _ort_quantized(tmp_path, proto, shape) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.batches = iter([{"input": rng.random(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    src, pre, out = (str(tmp_path / f"{n}.onnx") for n in ("src", "pre", "qdq"))
    onnx.save(proto, src)
    quant_pre_process(src, pre)
    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


@pytest.fixture(scope="module")
def quantized_mobilenet(tmp_path_factory):
    shape = (2, 3, 32, 32)
    path = _ort_quantized(tmp_path_factory.mktemp("q"), model_to_proto(zoo.mobilenet_v2(size=32, classes=10)), shape)
    # its own generator: the same input whichever tests ran before (an int8 network amplifies a step
    # that another arithmetic rounds the other way at a tie; on this input none is)
    return path, np.random.default_rng(3).random(shape).astype(np.float32)


def test_int8_mobilenet_runs_channels_last_as_onnxruntime(quantized_mobilenet):
    path, x = quantized_mobilenet
    p = Predictor(Config(model_path=path))
    hist = p.model.graph.op_histogram()
    # every conv but the stem channels-last; the residual Adds and their quantizers with them: two
    # transposes (the stem's output in, the pooled features out)
    assert hist.get("edgelearn::QConvNHWC") == 51 and hist.get("edgelearn::QConv") == 1, hist
    assert hist.get("Transpose") == 2, hist
    got = p.run({"input": x})["logits"]
    peer = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, peer, atol=0.05 * float(np.abs(peer).max()))
    nchw = Predictor(Config(model_path=path, passes={"layout_nhwc": False}))
    assert "edgelearn::QConvNHWC" not in nchw.model.graph.op_histogram()
    np.testing.assert_array_equal(got, nchw.run({"input": x})["logits"])  # both layouts' epilogues: the same bytes


def test_int8_channels_last_model_decomposes_to_standard_onnx(quantized_mobilenet):
    path, x = quantized_mobilenet
    p = Predictor(Config(model_path=path))
    got = p.run({"input": x})["logits"]
    standard = run_as_standard_onnx(p.model, {"input": x})[0]
    np.testing.assert_allclose(standard, got, atol=0.05 * float(np.abs(got).max()))


def test_int8_nhwc_model_replays(quantized_mobilenet):
    """Every step a numba call (the classifier's row packing too): the run replays."""
    path, x = quantized_mobilenet
    # compiled first, one thread: a capture that compiles, or waits at a barrier for a thread another
    # test's process descheduled, can run past MAX_REPLAY_SECONDS and is then refused
    Predictor(Config(model_path=path, num_threads=1)).run({"input": x})
    p = Predictor(Config(model_path=path, num_threads=1))
    first = p.run({"input": x})["logits"]
    for _ in range(4):
        again = p.run({"input": x})["logits"]
    assert "step by step" not in p.session.replays.report(), p.session.replays.report()
    np.testing.assert_array_equal(first, again)


def test_transpose_moves_bytes():
    from inference.kernels.transpose import transpose_blocks

    for dt in (np.uint8, np.int8):
        x = _q((2, 5, 7, 9), dt)
        for perm in (TO_NHWC, TO_NCHW, (0, 2, 1, 3)):
            y = transpose_blocks(x, perm=list(perm))
            assert y.dtype == dt and np.array_equal(y, x.transpose(perm))


@pytest.mark.parametrize("vnni", [False, True])
def test_depthwise_tile_sums_taps_in_channel_order(vnni):
    """The tile's raw sums (float output, unit scale, no bias) for 3 pixels of a 70-channel image
    whose 3x3 taps sit at arbitrary offsets: each channel's own 9 products, with vpdpbusd and with
    the portable form, pixels past ``rows`` not stored."""
    import numba

    from inference.kernels.activations import NONE
    from inference.kernels.int8_depthwise_ir import make_depthwise_qtile, pack_depthwise_taps

    if vnni and not K.has_vnni():
        pytest.skip("no AVX512-VNNI on this CPU")
    tile = make_depthwise_qtile(4, vnni)

    @numba.njit
    def run(x, x_off, xstep, wts, offs, steps, rows, corr, scale, fbias, n_off, cols, y, y_off, sm):
        inf = np.float32(np.inf)
        tile(x, x_off, xstep, wts, 0, offs, steps, rows, corr, scale, fbias, n_off, cols, fbias, 0, y, y_off, sm, 0,
             np.float32(1), -inf, inf, 0, NONE)

    c, pix = 70, 3
    x = _q(4096, np.uint8)
    w = _q((c, 1, 3, 3), np.int8)
    offs = np.r_[RNG.choice(600, 9, replace=False) * 3, 0, 0, 0].astype(np.int64)  # 3 groups of 4, padded
    xstep = 5 * c
    wts = pack_depthwise_taps(w)
    ones, zeros = np.ones(128, np.float32), np.zeros(128, np.float32)
    y = np.full((4, c), -1.0, np.float32)
    for n0 in (0, 64):  # the two channel blocks
        run(x, 7 + n0, xstep, wts[n0 // 64 * 3 * 64:], offs, 3, pix, np.zeros(128, np.int32), ones, zeros, n0, c - n0,
            y.reshape(-1), n0, c)
    taps = w.reshape(c, 9).astype(np.int64)
    for r in range(pix):
        at = 7 + r * xstep
        want = sum(x[at + offs[t]:at + offs[t] + c].astype(np.int64) * taps[:, t] for t in range(9))
        np.testing.assert_array_equal(y[r], want.astype(np.float32))
    assert (y[pix] == -1).all()
