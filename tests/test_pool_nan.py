"""Max pools propagate NaN as the reference (numpy's ``maximum``) does, wherever in a window it sits.

Python's ``max(a, b)`` keeps ``a`` when ``b`` is NaN, so a fold written with it dropped a NaN in any
tap but a window's first; these inputs scatter NaNs and infinities over one element in twelve, so
they sit in many tap positions, for each plan of the NCHW kernels, the channels-last one and the
global max (each case failed before the fix).
"""
from __future__ import annotations

import numpy as np
import pytest

from inference.kernels.pool_nhwc import max_pool_nhwc, max_pool_nhwc_reference
from inference.ops.registry import KernelContext, lookup

CASES = {  # NCHW plans: 2x2/2, 3x3/2 (padded and not), separable rows (ceil), unpadded and padded general
    "2x2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "3x3s2": dict(kernel_shape=[3, 3], strides=[2, 2]),
    "3x3s2-pad1": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "2x2s2-ceil": dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "3x2s1": dict(kernel_shape=[3, 2], strides=[1, 1]),
    "dilated-pad": dict(kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    "global-7x7": dict(kernel_shape=[7, 7]),
}


def _with_nans(shape: tuple, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = np.random.default_rng(seed + 1).choice(flat.size, size=flat.size // 12, replace=False)
    flat[picks[0::3]] = np.nan
    flat[picks[1::3]] = np.inf
    flat[picks[2::3]] = -np.inf
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_nchw_max_pool_keeps_nans(case):
    x = _with_nans((2, 5, 7, 9), 1)
    fast = lookup("MaxPool", "", 13, "fast").fn
    reference = lookup("MaxPool", "", 13, "reference").fn
    ctx = KernelContext(None, 13, 1)
    want = reference(x, **CASES[case], ctx=ctx)
    assert np.isnan(want).any()
    np.testing.assert_array_equal(fast(x, **CASES[case], ctx=ctx), want)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("c", [5, 64])
def test_channels_last_max_pool_keeps_nans(case, c):
    x = _with_nans((2, 7, 9, c), c)
    want = max_pool_nhwc_reference(x, **CASES[case])
    assert np.isnan(want).any()
    np.testing.assert_array_equal(max_pool_nhwc(x, **CASES[case]), want)


def test_global_max_pool_keeps_nans():
    x = _with_nans((2, 6, 5, 5), 3)
    x[0, 0] = 1.0
    x[0, 0, 4, 4] = np.nan  # the plane's last element
    want = lookup("GlobalMaxPool", "", 13, "reference").fn(x)
    assert np.isnan(want[0, 0]).all()
    np.testing.assert_array_equal(lookup("GlobalMaxPool", "", 13, "fast").fn(x), want)
