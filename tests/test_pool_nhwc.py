"""MaxPoolNHWC / AveragePoolNHWC: the fast kernel against the reference (ONNX's pools in NCHW), the
shape rule against the kernel, and a clear error for a wrong rank."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._jit import use_parallel_kernels
from inference.kernels.fused import DOMAIN
from inference.kernels.pool_nhwc import (average_pool_nhwc, average_pool_nhwc_reference, max_pool_nhwc,
                                         max_pool_nhwc_reference)
from inference.schema import get_schema

CASES = {
    "3x3s2": dict(kernel_shape=[3, 3], strides=[2, 2]),
    "3x3s2-pad1": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "3x3s2-pad1-include": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    "2x2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "3x2-ceil-asym": dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 2, 1], ceil_mode=1),
    "dilated": dict(kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    "same-upper": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    "global-7x7": dict(kernel_shape=[7, 7]),
}
KERNELS = {"max": (max_pool_nhwc, max_pool_nhwc_reference, "MaxPoolNHWC"),
           "average": (average_pool_nhwc, average_pool_nhwc_reference, "AveragePoolNHWC")}


@pytest.mark.parametrize("kind", list(KERNELS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("c", [5, 64])
def test_kernel_matches_reference(kind, case, c):
    fast, reference, op = KERNELS[kind]
    attrs = dict(CASES[case])
    if kind == "max":
        attrs.pop("count_include_pad", None)
    x = np.random.default_rng(c).standard_normal((2, 7, 9, c)).astype(np.float32)
    want = reference(x, **attrs)
    got = fast(x, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    rule = get_schema(op, DOMAIN).shape_rule  # the schema's shape rule agrees with the kernel
    assert rule(Node(op, ["x"], ["y"], attrs, DOMAIN), [TensorType(1, ("n",) + x.shape[1:])]) == [
        TensorType(1, ("n",) + want.shape[1:])]


def test_parallel_twin_matches():
    x = np.random.default_rng(3).standard_normal((3, 15, 15, 32)).astype(np.float32)
    attrs = CASES["3x3s2-pad1"]
    threads = numba.get_num_threads()
    use_parallel_kernels(True)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        got = (max_pool_nhwc(x, **attrs), average_pool_nhwc(x, **attrs))
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(got[0], max_pool_nhwc_reference(x, **attrs))
    np.testing.assert_allclose(got[1], average_pool_nhwc_reference(x, **attrs), rtol=1e-6, atol=1e-6)


def test_nan_and_infinities_as_the_reference():
    x = np.random.default_rng(4).standard_normal((1, 6, 6, 16)).astype(np.float32)
    x[0, 0, 0, :4] = [np.inf, -np.inf, np.nan, 1.0]
    for fast, reference, _ in KERNELS.values():
        np.testing.assert_array_equal(fast(x, **CASES["3x3s2"]), reference(x, **CASES["3x3s2"]))


def test_wrong_rank_names_the_op():
    with pytest.raises(KernelError, match=r"MaxPoolNHWC: X must be \(N, H, W, C\), got shape \(4, 4, 3\)"):
        max_pool_nhwc_reference(np.zeros((4, 4, 3), np.float32), kernel_shape=[2, 2])
