"""Every fast kernel against its reference op on random inputs over the attribute space."""
from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest

import inference.kernels  # noqa: F401  (registers the fast kernels and the fused ops)
from inference.kernels import _jit
from inference.kernels._jit import threaded_kernel
from inference.errors import KernelError
from inference.ops.registry import KernelContext, lookup

RTOL, ATOL = 1e-4, 1e-5
ACTIVATIONS = [("", 0.0, 0.0), ("Relu", 0.0, 0.0), ("Clip", 0.0, 6.0), ("Clip", -0.5, 0.5),
               ("LeakyRelu", 0.1, 0.0), ("Sigmoid", 0.0, 0.0), ("HardSigmoid", 0.2, 0.5),
               ("HardSwish", 0.0, 0.0), ("Gelu", 0.0, 0.0), ("GeluTanh", 0.0, 0.0), ("Silu", 0.0, 0.0)]


def _pair(op: str, opset: int, domain: str = ""):
    fast, ref = lookup(op, domain, opset, "fast"), lookup(op, domain, opset, "reference")
    assert fast is not None and ref is not None, f"{domain}::{op} needs both a fast and a reference kernel"
    return fast.fn, ref.fn


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def _rand(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


CONV_CASES = [  # (C, M, H, W, kernel, strides, pads, dilations, group, auto_pad)
    (3, 8, 11, 13, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "NOTSET"),
    (4, 6, 10, 9, (3, 3), (2, 2), (0, 1, 2, 0), (1, 1), 1, "NOTSET"),
    (4, 4, 12, 12, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 2, "NOTSET"),
    (6, 6, 14, 15, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6, "NOTSET"),  # depthwise 3x3
    (6, 6, 14, 15, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6, "NOTSET"),
    (5, 5, 13, 11, (3, 3), (2, 1), (0, 2, 1, 0), (2, 1), 5, "NOTSET"),
    (5, 5, 13, 11, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 5, "NOTSET"),  # depthwise generic
    (4, 4, 9, 9, (3, 1), (3, 3), (1, 0, 1, 0), (1, 1), 4, "NOTSET"),
    (8, 16, 7, 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "NOTSET"),  # pointwise GEMM
    (8, 12, 7, 7, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 4, "NOTSET"),
    (3, 5, 17, 16, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, "NOTSET"),
    (3, 5, 10, 11, (3, 3), (2, 2), None, (1, 1), 1, "SAME_UPPER"),
    (3, 5, 10, 11, (4, 4), (3, 3), None, (1, 1), 1, "SAME_LOWER"),
    (4, 4, 10, 11, (3, 3), (2, 2), None, (1, 1), 4, "VALID"),
    (7, 7, 15, 14, (3, 3), (2, 2), (0, 1, 1, 0), (1, 1), 7, "NOTSET"),  # strided depthwise, asymmetric pads
    (4, 4, 16, 16, (3, 3), (2, 2), None, (1, 1), 4, "SAME_UPPER"),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("batch,bias", [(1, True), (3, False)])
def test_conv(case, batch, bias):
    c, m, h, w, k, s, p, d, g, auto = case
    rng = np.random.default_rng(0)
    x, wt = _rand(rng, batch, c, h, w), _rand(rng, m, c // g, *k)
    b = _rand(rng, m) if bias else None
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), group=g, auto_pad=auto)
    if p is not None:
        attrs["pads"] = list(p)
    fast, ref = _pair("Conv", 17)
    _close(fast(x, wt, b, **attrs), ref(x, wt, b, **attrs))


@pytest.mark.parametrize("case", CONV_CASES[:10])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv(case, act, residual):
    c, m, h, w, k, s, p, d, g, auto = case
    rng = np.random.default_rng(1)
    x, wt, b = _rand(rng, 2, c, h, w), _rand(rng, m, c // g, *k), _rand(rng, m)
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), group=g, auto_pad=auto, pads=list(p),
                 activation=act[0], alpha=act[1], beta=act[2])
    fast, ref = _pair("FusedConv", 1, "edgelearn")
    z = None
    if residual:
        z = _rand(rng, *ref(x, wt, b, **attrs).shape)
    _close(fast(x, wt, b, z, **attrs), ref(x, wt, b, z, **attrs))


@pytest.mark.parametrize("xshape", [(5, 16), (2, 7, 16), (2, 3, 4, 16)])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("bias,residual", [(True, False), (False, False), (True, True)])
def test_fused_matmul(xshape, act, bias, residual):
    rng = np.random.default_rng(2)
    x, wt = _rand(rng, *xshape), _rand(rng, 16, 24, scale=0.25)
    b = _rand(rng, 24) if bias else None
    z = _rand(rng, *xshape[:-1], 24) if residual else None
    attrs = dict(activation=act[0], alpha=act[1], beta=act[2])
    fast, ref = _pair("FusedMatMul", 1, "edgelearn")
    _close(fast(x, wt, b, z, **attrs), ref(x, wt, b, z, **attrs))


POOL_CASES = [  # (kernel, strides, pads, dilations, ceil_mode, auto_pad)
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, "NOTSET"),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0, "NOTSET"),
    ((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1, "NOTSET"),
    ((3, 2), (1, 2), (1, 0, 2, 1), (2, 1), 1, "NOTSET"),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0, "NOTSET"),
    ((3, 3), (2, 2), None, (1, 1), 0, "SAME_UPPER"),
    ((2, 3), (2, 2), None, (1, 1), 0, "SAME_LOWER"),
    ((3, 3), (2, 2), None, (1, 1), 0, "VALID"),
]


def _ctx(outputs: int = 1) -> KernelContext:
    return KernelContext(node=None, opset=17, num_outputs=outputs)


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool(case):
    k, s, p, d, ceil, auto = case
    x = _rand(np.random.default_rng(3), 2, 3, 11, 10)
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), ceil_mode=ceil, auto_pad=auto)
    if p is not None:
        attrs["pads"] = list(p)
    fast, ref = _pair("MaxPool", 12)
    _close(fast(x, **attrs, ctx=_ctx()), ref(x, **attrs, ctx=_ctx()))


@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[3] == (1, 1)])
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(case, include_pad):
    k, s, p, d, ceil, auto = case
    x = _rand(np.random.default_rng(4), 2, 3, 11, 10)
    attrs = dict(kernel_shape=list(k), strides=list(s), ceil_mode=ceil, auto_pad=auto, count_include_pad=include_pad)
    if p is not None:
        attrs["pads"] = list(p)
    fast, ref = _pair("AveragePool", 19)
    _close(fast(x, **attrs), ref(x, **attrs))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op):
    x = _rand(np.random.default_rng(5), 3, 5, 7, 6)
    fast, ref = _pair(op, 17)
    _close(fast(x), ref(x))


@pytest.mark.parametrize("shape", [(7,), (4, 33), (2, 3, 128)])
def test_softmax(shape):
    x = _rand(np.random.default_rng(6), *shape, scale=4.0)
    fast, ref = _pair("Softmax", 13)
    _close(fast(x, axis=-1), ref(x, axis=-1))


@pytest.mark.parametrize("n", [1, 15, 16, 17, 128, 1000])
def test_softmax_rows_of_any_length_with_nan_and_inf(n, threads):
    """The vector row (``kernels.softmax_ir``): whole vectors and a masked tail, against float64;
    a row with a NaN, a +inf, all -inf or one -inf comes out as the reference's (NaN rows, and
    0 where only that element was -inf)."""
    x = _rand(np.random.default_rng(n), 6, n, scale=8.0)
    x[1, n // 2] = np.nan
    x[2, n - 1] = np.inf
    x[3] = -np.inf
    x[4, 0] = -np.inf
    fast, ref = _pair("Softmax", 13)
    got = fast(x, axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref(x, axis=-1)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape,axis", [((2, 5, 3, 7), 1), ((2, 3, 600), 1), ((4, 3, 2), 0), ((2, 19, 3, 1), -3)])
def test_softmax_over_a_middle_axis(shape, axis, threads):
    """A segmentation head's softmax over the classes (axis 1 of NCHW), against float64: columns
    of any width, a NaN only in its own column, an all -inf column NaN as in the reference, a
    masked entry an exact 0."""
    x = _rand(np.random.default_rng(len(shape)), *shape, scale=8.0)
    flat = np.moveaxis(x, axis, -1)  # a view: (columns..., r)
    flat[0, 0] = -np.inf
    flat[-1, -1] = np.nan
    if flat.shape[-2] > 1:
        flat[..., 1, 0] = -np.inf
    fast, ref = _pair("Softmax", 13)
    got = fast(x, axis=axis)
    with np.errstate(invalid="ignore"):
        e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
        want = e / e.sum(axis=axis, keepdims=True)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref(x, axis=axis)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-7)
    assert not ((got != 0) & (np.abs(got) < np.finfo(np.float32).tiny)).any()
    assert np.all(got[want == 0] == 0)


@pytest.mark.parametrize("mask", [np.finfo(np.float32).min, -np.inf, -1e4])
def test_masked_softmax_rows_are_exact_zeros(mask, threads):
    """Attention padding (Hugging Face's finfo.min, -inf, -1e4): the masked lanes come out 0, as
    numpy's exp gives, and no output is subnormal (a subnormal product costs a microcode assist:
    such rows had run 1.6x slower); the rest as float64's."""
    x = _rand(np.random.default_rng(9), 8, 128, scale=4.0)
    x[:, 100:] += np.float32(mask)
    got = _pair("Softmax", 13)[0](x, axis=-1)
    assert np.all(got[:, 100:] == 0)
    tiny = (got != 0) & (np.abs(got) < np.finfo(np.float32).tiny)
    assert not tiny.any()
    e = np.exp(x[:, :100].astype(np.float64) - x[:, :100].max(axis=-1, keepdims=True))
    np.testing.assert_allclose(got[:, :100], e / e.sum(axis=-1, keepdims=True), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape,axis", [((1, 1000, 1, 1), 1), ((2, 3, 4, 5), 2), ((3, 7), -1), ((2, 3, 4), 0),
                                        ((5, 6), -2)])
def test_softmax_before_opset_13_flattens_at_axis(shape, axis):
    x = _rand(np.random.default_rng(7), *shape, scale=4.0)
    fast, ref = _pair("Softmax", 12)
    _close(fast(x, axis=axis), ref(x, axis=axis))


def test_softmax_before_opset_13_names_a_bad_axis():
    fast, _ = _pair("Softmax", 12)
    with pytest.raises(KernelError, match="axis 4 out of range"):
        fast(np.zeros((2, 3), np.float32), axis=4)


@pytest.mark.parametrize("shape", [(4, 32), (2, 5, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_normalization(shape, bias):
    rng = np.random.default_rng(7)
    x, scale = _rand(rng, *shape, scale=3.0) + 1.0, _rand(rng, shape[-1])
    b = _rand(rng, shape[-1]) if bias else None
    fast, ref = _pair("LayerNormalization", 17)
    _close(fast(x, scale, b, axis=-1, epsilon=1e-5, ctx=_ctx()), ref(x, scale, b, axis=-1, epsilon=1e-5, ctx=_ctx())[0])


ELEMENTWISE = [("Relu", 14, {}), ("Sigmoid", 13, {}), ("HardSwish", 14, {}), ("LeakyRelu", 16, {"alpha": 0.2}),
               ("HardSigmoid", 6, {"alpha": 0.3, "beta": 0.4}), ("Gelu", 20, {}),
               ("Gelu", 20, {"approximate": "tanh"})]


@pytest.mark.parametrize("op,opset,attrs", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(5,), (3, 70000)])
def test_activation(op, opset, attrs, shape):
    x = _rand(np.random.default_rng(8), *shape, scale=4.0)
    fast, ref = _pair(op, opset)
    _close(fast(x, **attrs), ref(x, **attrs))


@pytest.mark.parametrize("bounds", list(itertools.product([None, -1.0], [None, 2.5])))
def test_clip(bounds):
    x = _rand(np.random.default_rng(9), 4, 50, scale=3.0)
    lo, hi = (None if v is None else np.array(v, np.float32) for v in bounds)
    fast, ref = _pair("Clip", 13)
    _close(fast(x, lo, hi), ref(x, lo, hi))


def test_fast_kernels_fall_back_on_other_dtypes():
    x = np.random.default_rng(10).standard_normal((1, 2, 5, 5))
    w = np.ones((2, 2, 3, 3))
    fast, ref = _pair("Conv", 17)
    np.testing.assert_allclose(fast(x, w, None, pads=[1, 1, 1, 1]), ref(x, w, None, pads=[1, 1, 1, 1]))
    assert fast(x.astype(np.float64), w, None).dtype == np.float64


@threaded_kernel()
def _thread_ids(x, out):
    for i in numba.prange(out.size):
        out[i] = numba.get_thread_id()


def test_small_arrays_run_the_serial_twin_on_two_threads():
    """Below ``PARALLEL_FROM`` elements in its largest array a call runs serially even when the
    policy wants the parallel twins (waking the pool costs more); from there on, on both threads."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    before, parallel = numba.get_num_threads(), _jit._POLICY["parallel"]
    numba.set_num_threads(2)
    _jit.use_parallel_kernels(True)
    try:
        out = np.full(64, -1, np.int64)
        _thread_ids(np.zeros(_jit.PARALLEL_FROM - 1, np.float32), out)
        assert set(out) == {0}
        _thread_ids(np.zeros(_jit.PARALLEL_FROM, np.float32), out)
        assert set(out) == {0, 1}
    finally:
        _jit.use_parallel_kernels(parallel)
        numba.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_serial_and_parallel_twins(threads):
    """Kernels run their serial twin at one thread and the prange one above: both must agree."""
    from tests.conftest import kernel_threads

    with kernel_threads(threads):
        for case in (CONV_CASES[0], CONV_CASES[4], CONV_CASES[6]):
            test_fused_conv(case, ("Clip", 0.0, 6.0), True)
        test_max_pool(POOL_CASES[0])
        test_softmax((2, 3, 128))


def test_numba_thread_count_follows_set_num_threads():
    """``_jit.numba_threads`` (read without numba's per-call launch check) answers what
    ``numba.get_num_threads`` does, in this thread and in another one, after each change."""
    import threading

    import numba

    from inference.kernels._jit import kernel_threads, numba_threads, use_parallel_kernels

    before = numba.get_num_threads()
    seen = {}
    try:
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            assert numba_threads() == numba.get_num_threads() == n
            use_parallel_kernels(True)
            assert kernel_threads() == n
            use_parallel_kernels(False)
            assert kernel_threads() == 1
        worker = threading.Thread(target=lambda: seen.update(n=numba_threads(), want=numba.get_num_threads()))
        worker.start()
        worker.join()
        assert seen["n"] == seen["want"]  # numba's count is per thread: the other keeps its own
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(before)


def test_vectorised_exp_matches_float64_exp():
    """The vectorised exp (``vmath.exp_shifted``, Gelu's and Sigmoid's): float32 Cephes form, checked
    against float64 exp over its arguments' range (x <= 0), down to where it clamps at exp(-87)."""
    from inference.kernels.vmath import exp_shifted

    x = np.concatenate([np.linspace(-87.0, 0.0, 200_001), -np.abs(np.random.default_rng(7).standard_normal(10_001))])
    x = x.astype(np.float32)
    out, bits = np.empty_like(x), np.empty(x.size, np.int32)
    total = exp_shifted(x, np.float32(0.0), out, bits)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - want) / want) < 5e-7
    assert abs(total - want.sum()) / want.sum() < 1e-6
    deep = np.array([-100.0, -500.0], np.float32)  # clamped: tiny, finite, never NaN or negative
    got = np.empty_like(deep)
    exp_shifted(deep, np.float32(0.0), got, np.empty(2, np.int32))
    assert np.all((got > 0) & (got < 1e-37))


def test_fast_erf_matches_math_erf(threads):
    """The standalone Erf (``vmath.erf_row``): within 5e-7 absolute and 1e-6 relative of float64
    erf from 1e-20 to 6 in magnitude (the series below 1/2 keeps tiny values' relative accuracy),
    +-inf to +-1, NaN kept, -0 kept."""
    fast, ref = _pair("Erf", 13)
    mags = np.concatenate([np.linspace(0.0, 6.0, 60_001), np.logspace(-20, 0, 400)])
    x = np.concatenate([mags, -mags, [np.inf, -np.inf, np.nan, -0.0]]).astype(np.float32)
    got = fast(x)
    want = np.array([math.erf(v) if np.isfinite(v) else (np.sign(v) if not np.isnan(v) else np.nan)
                     for v in x.astype(np.float64)])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    err = np.abs(got[ok] - want[ok])
    assert err.max() < 5e-7
    nonzero = np.abs(want[ok]) > 0
    assert np.max(err[nonzero] / np.abs(want[ok][nonzero])) < 1e-6
    assert np.signbit(got[-1]) and got[-1] == 0
    np.testing.assert_allclose(fast(x[:1000].reshape(10, 100)), ref(x[:1000].reshape(10, 100)), rtol=1e-6, atol=5e-7)


def test_vectorised_gelu_tanh_matches_the_tanh_form(threads):
    """GELU's tanh approximation as x * sigmoid(2u) (``vmath.sigmoid_row``; the Gelu op with
    approximate="tanh" and the GeluTanh epilogue): within 2e-6 relative (and 1e-7 absolute near 0)
    of 0.5 x (1 + tanh u) in float64, inf -> inf, -inf and NaN -> NaN, -0 and tiny values kept."""
    fast, _ = _pair("Gelu", 20)
    x = np.concatenate([np.linspace(-12.0, 12.0, 120_001), [0.0, -0.0, 1e-30, -1e-30, 50.0, -50.0, 1e20, -1e20],
                        [np.inf, -np.inf, np.nan]]).astype(np.float32)
    got = fast(x, approximate="tanh")
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        want = 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-6, atol=1e-7)
    assert got[-3] == np.inf and np.signbit(got[120_002])


def test_vectorised_gelu_matches_the_erf_form():
    from inference.kernels.vmath import erf_row

    x = np.concatenate([np.linspace(-10.0, 10.0, 100_001), [0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0]]).astype(np.float32)
    got = x.copy()
    erf_row(got, True)
    want = 0.5 * x.astype(np.float64) * (1.0 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2.0)))
    err = np.abs(got - want)
    assert err.max() < 5e-7  # erf's absolute error (< 1.5e-7) times x/2, plus float32 rounding
    big = np.abs(want) > 1e-2  # below, 1 + erf cancels: even float32 math.erf is 1e-4 off relative
    assert np.max(err[big] / np.abs(want[big])) < 5e-5  # half the runtime's rtol (1e-4)
