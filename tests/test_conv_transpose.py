"""The fast ConvTranspose (``inference.kernels.conv_transpose``) against the reference op over the
attributes' combinations (strides, dilations, pads, output_padding, output_shape, auto_pad,
groups, bias; 1-D and 2-D), and as PyTorch's exporter writes a decoder's upsampling layers."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from inference import Config, Predictor
from inference.kernels.conv_transpose import conv_transpose_fast, interleave_taps, scatter_taps
from inference.ops.conv_transpose import conv_transpose

GRID = [  # kernel, stride, dilation, pad, output_padding, group, auto_pad, output_shape
    (k, s, d, p, op, g, ap, osh)
    for k, s, d, p, op, g, ap, osh in itertools.product((1, 2, 3), (1, 2, 3), (1, 2), (0, 1, 2), (0, 1), (1, 2),
                                                         ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"), (False, True))
    if (op < s or op < d) and (ap == "NOTSET" or (p == 0 and not osh))
]


@pytest.mark.parametrize("nd", [1, 2])
def test_matches_the_reference_over_the_attributes(nd):
    rng = np.random.default_rng(nd)
    checked = 0
    for k, s, d, p, op, g, ap, osh in GRID:
        x = rng.standard_normal((2, 4) + (5, 6)[:nd]).astype(np.float32)
        w = rng.standard_normal((4, 3) + (k,) * nd).astype(np.float32)
        b = rng.standard_normal(3 * g).astype(np.float32) if (k + s) % 2 else None
        attrs = dict(kernel_shape=[k] * nd, strides=[s] * nd, dilations=[d] * nd, pads=[p] * (2 * nd),
                     output_padding=[op] * nd, group=g, auto_pad=ap)
        if osh:  # larger than the full output: negative pads, zeros at the edges
            attrs["output_shape"] = [i * s + 2 for i in (5, 6)[:nd]]
        want = conv_transpose(x, w, b, **attrs)
        got = conv_transpose_fast(x, w, b, **attrs)
        assert got.shape == want.shape and got.dtype == np.float32, attrs
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(attrs))
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("k", [2, 3])
def test_a_kernel_as_large_as_its_stride_is_written_once_and_bitwise_the_scatter(k, threads):
    """UNet's 2x2/2: the taps tile the output, each pixel bias + one product, as the scatter adds it."""
    rng = np.random.default_rng(k)
    contrib = rng.standard_normal((2, 3, k, k, 5, 7)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    once, added = (np.full((2, 3, 5 * k, 7 * k), np.nan, np.float32) for _ in range(2))
    interleave_taps(contrib, bias, once)
    scatter_taps(contrib, bias, k, k, 1, 1, 0, 0, added)
    np.testing.assert_array_equal(once, added)
    x = rng.standard_normal((2, 4, 5, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, k, k)).astype(np.float32)
    want = conv_transpose(x, w, bias, strides=[k, k])
    np.testing.assert_allclose(conv_transpose_fast(x, w, bias, strides=[k, k]), want, rtol=1e-5, atol=1e-5)


def test_other_ranks_and_types_go_to_the_reference():
    rng = np.random.default_rng(0)
    x3 = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    w3 = rng.standard_normal((2, 2, 2, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(conv_transpose_fast(x3, w3, strides=[2, 2, 2]), conv_transpose(x3, w3, strides=[2, 2, 2]))
    x64, w64 = x3[..., 0].astype(np.float64), w3[..., 0].astype(np.float64)
    got = conv_transpose_fast(x64, w64, strides=[2, 2])
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, conv_transpose(x64, w64, strides=[2, 2]))


def test_torch_decoder_runs_on_the_fast_kernel():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.up2d = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.up2d_overlap = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, output_padding=0)
            self.up1d = nn.ConvTranspose1d(16, 6, 3, stride=2, padding=1, output_padding=1, groups=2)

        def forward(self, image, signal):
            return torch.relu(self.up2d_overlap(torch.relu(self.up2d(image)))), self.up1d(signal)

    net = Decoder().eval()
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 16, 12, 10)).astype(np.float32)
    signal = rng.standard_normal((2, 16, 25)).astype(np.float32)
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.from_numpy(image), torch.from_numpy(signal)), buf, opset_version=17, dynamo=False,
                      input_names=["image", "signal"], dynamic_axes={"image": {0: "n"}, "signal": {0: "n"}})
    p = Predictor(Config(model_path=buf.getvalue()))
    kinds = [s.kernel.kind for s in p.session.steps if s.node.op_type == "ConvTranspose"]
    assert kinds == ["fast"] * 3
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(image), torch.from_numpy(signal))]
    got = list(p.run({"image": image, "signal": signal}).values())
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
