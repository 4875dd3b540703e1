"""How the depthwise IR stencils (``stencil_ir``, 3x3 and 5x5) cover a row: a row of at most
``WHOLE_ROW`` columns as one masked group; a wider one in groups of four interior columns, then the
interior's last columns and the border ones one at a time, masked; loads shared across a group's
taps at strides 1 and 2, per tap otherwise. Every output width from one column to several groups,
each against the reference conv."""
from __future__ import annotations

import numpy as np
import pytest

from inference.kernels.nhwc import HWIO, fused_conv_nhwc, fused_conv_nhwc_reference

GEOMETRIES = {  # strides, dilations, pads (top, left, bottom, right)
    "stride1": ((1, 1), (1, 1), None),
    "stride2": ((2, 2), (1, 1), None),
    "stride3": ((3, 3), (1, 1), None),  # per-tap loads
    "dilated": ((1, 1), (2, 2), "double"),  # per-tap loads
    "uneven-pads": ((1, 2), (1, 1), "uneven"),
    "no-pads": ((1, 1), (1, 1), "none"),
}


def _pads(k: int, kind: str | None) -> list[int]:
    half = k // 2
    return {None: [half] * 4, "double": [2 * half] * 4, "uneven": [half, 0, half, k - 1],
            "none": [0] * 4}[kind]


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_every_row_width_matches_the_reference(k, geometry):
    strides, dilations, kind = GEOMETRIES[geometry]
    pads = _pads(k, kind)
    c = 20  # one whole channel block and a masked one
    rng = np.random.default_rng(k * 100 + len(geometry))
    wt = np.ascontiguousarray((rng.standard_normal((c, 1, k, k)) * 0.3).astype(np.float32).transpose(HWIO))
    b = rng.standard_normal(c).astype(np.float32)
    attrs = dict(group=c, kernel_shape=[k, k], strides=list(strides), dilations=list(dilations), pads=pads,
                 activation="Relu", alpha=0.0, beta=0.0)
    checked = set()
    for w in [*range(1, 31), 36, 47, 70, 75, 100]:  # output rows short (<= 7), mid (<= 32) and wide
        span = (k - 1) * dilations[1] + 1
        if w + pads[1] + pads[3] < span:
            continue
        x = rng.standard_normal((1, 5, w, c)).astype(np.float32)
        want = fused_conv_nhwc_reference(x, wt, b, **attrs)
        got = fused_conv_nhwc(x, wt, b, **attrs)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"input width {w}")
        checked.add(want.shape[2])
    assert min(checked) <= 2 and max(checked) > 32  # every row span's code


@pytest.mark.parametrize("k, dilation", [(5, 1), (3, 2)], ids=["5x5-group", "3x3-dilated-columns"])
def test_nan_in_a_border_column_reaches_only_its_windows(k, dilation):
    """A NaN in a 6-wide row's first column reaches the outputs whose windows hold it and no
    other. A tap left of the row reads the row's first column with every lane masked off: with
    dilation 2 that column is not in the window of output column 1 (taps -1, 1, 3), which must
    stay finite."""
    c = 16
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 6, 6, c)).astype(np.float32)
    x[0, 2, 0, 5] = np.nan
    wt = np.ascontiguousarray(np.abs(rng.standard_normal((c, 1, k, k))).astype(np.float32).transpose(HWIO))
    b = np.zeros(c, np.float32)
    pad = (k // 2) * dilation
    attrs = dict(group=c, kernel_shape=[k, k], pads=[pad] * 4, dilations=[dilation] * 2, activation="",
                 alpha=0.0, beta=0.0)
    want = fused_conv_nhwc_reference(x, wt, b, **attrs)
    got = fused_conv_nhwc(x, wt, b, **attrs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want[..., 5]).any() and (not np.isnan(want[0, :, 1, 5]).any()) == (dilation == 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
