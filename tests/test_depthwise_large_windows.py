"""The 5x5 and 7x7 depthwise IR stencils (``stencil_ir.depthwise5x5_cols``, ``depthwise7x7_cols``)
against the reference: channel counts off the 16-lane blocks, strides, dilations, uneven pads, maps
narrower than the window, a residual, clamp and non-clamp activations, NaN and inf; through the
channels-last op and a lone NCHW layer (which runs it channels-last)."""
from __future__ import annotations

import numpy as np
import pytest

from inference.kernels import channels_last
from inference.kernels.nhwc import HWIO, fused_conv_nhwc, fused_conv_nhwc_reference
from inference.ops.registry import lookup

CASES = {  # c, h, w, strides, dilations, pads (for 5x5; 7x7 pads each nonzero one by one more), activation
    "mobile-stride1": (144, 14, 14, (1, 1), (1, 1), (2, 2, 2, 2), "Clip"),
    "stride2-odd": (40, 15, 13, (2, 2), (1, 1), (2, 2, 2, 2), "Relu"),
    "off-block-channels": (17, 9, 11, (1, 1), (1, 1), (2, 1, 2, 1), ""),
    "dilated": (32, 12, 12, (1, 1), (2, 1), (4, 2, 4, 2), "Silu"),
    "narrow-map": (24, 3, 2, (1, 1), (1, 1), (2, 2, 2, 2), "HardSwish"),
    "no-pad": (48, 8, 10, (1, 2), (1, 1), (0, 0, 0, 0), "Sigmoid"),
    "seven-wide": (64, 7, 7, (1, 1), (1, 1), (2, 2, 2, 2), "Clip"),  # end groups, no interior
    "six-wide": (20, 6, 6, (1, 1), (1, 1), (2, 2, 2, 2), "Relu"),  # end groups overlapping
    "wide-pads": (16, 9, 12, (1, 1), (1, 1), (2, 6, 2, 6), ""),  # borders wider than a group
}
ALPHA_BETA = {"Clip": (0.0, 6.0)}
WINDOWS = [5, 7]


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("k", WINDOWS)
def test_stencil_matches_the_reference(k, case, residual, threads):
    c, h, w, strides, dilations, pads, act = CASES[case]
    pads = [p + (k - 5) // 2 if p else 0 for p in pads]
    rng = np.random.default_rng(c * h + w)
    x = rng.standard_normal((2, h, w, c)).astype(np.float32)
    wt = np.ascontiguousarray((rng.standard_normal((c, 1, k, k)) * 0.2).astype(np.float32).transpose(HWIO))
    b = rng.standard_normal(c).astype(np.float32)
    alpha, beta = ALPHA_BETA.get(act, (0.0, 0.0))
    attrs = dict(group=c, kernel_shape=[k, k], strides=list(strides), dilations=list(dilations), pads=pads,
                 activation=act, alpha=alpha, beta=beta)
    want = fused_conv_nhwc_reference(x, wt, b, **attrs)
    z = rng.standard_normal(want.shape).astype(np.float32) if residual else None
    if residual:
        want = fused_conv_nhwc_reference(x, wt, b, z, **attrs)
    np.testing.assert_allclose(fused_conv_nhwc(x, wt, b, z, **attrs), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", WINDOWS)
def test_nan_and_inf_reach_only_their_windows(k):
    c, h, w = 32, 10, 10
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    x[0, 4, 4, 3], x[0, 0, 9, 20], x[0, 7, 1, 31] = np.nan, np.inf, -np.inf
    wt = np.abs(rng.standard_normal((k, k, 1, c))).astype(np.float32) + 0.1  # positive: inf stays inf
    b = np.zeros(c, np.float32)
    attrs = dict(group=c, kernel_shape=[k, k], pads=[k // 2] * 4, activation="", alpha=0.0, beta=0.0)
    with np.errstate(invalid="ignore"):
        want = fused_conv_nhwc_reference(x, wt, b, **attrs)
    got = fused_conv_nhwc(x, wt, b, **attrs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isnan(got).sum() == k * k and np.isinf(got).sum() > 0


@pytest.mark.parametrize("k", WINDOWS)
def test_the_nchw_layer_takes_the_stencil(monkeypatch, k):
    """A lone NCHW 5x5 or 7x7 depthwise layer runs channels-last around the stencil (the conv
    kernel's choice), equal to the reference conv."""
    calls = []
    real = channels_last.depthwise_stencil_nhwc
    monkeypatch.setattr(channels_last, "depthwise_stencil_nhwc",
                        lambda *a: calls.append(a[1].shape) or real(*a))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 64, 9, 9)).astype(np.float32)
    wt = rng.standard_normal((64, 1, k, k)).astype(np.float32)
    attrs = dict(group=64, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[2, 2])
    fast = lookup("Conv", "", 17, "fast").fn(x, wt, **attrs)
    np.testing.assert_allclose(fast, lookup("Conv", "", 17).fn(x, wt, **attrs), rtol=1e-4, atol=1e-5)
    assert calls and calls[0][:2] == (k, k)
