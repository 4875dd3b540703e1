"""The channels-last GEMM (``inference.kernels.rows_gemm``) against float64 numpy: both tile shapes,
ragged pixel and channel counts, residual and clamp, kept weight panels, the parallel twin; and the
packed FusedConvNHWC kernel that uses it."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from inference.kernels._jit import use_parallel_kernels
from inference.kernels.nhwc import HWIO, fused_conv_nhwc_packed, fused_conv_nhwc_reference
from inference.kernels.activations import HARD_SWISH, SIGMOID, SILU, activate_row
from inference.kernels.rows_gemm import (GATHERED, GEMV_STREAMS, MATRIX, NARROW, SINGLE, SLIM, STREAMED_K, WIDE,
                                         PreparedGemm, Rows, gemm_rows, padded_weight, stream_order, tile_shape)

INF = np.float32(np.inf)


def _operands(rng, p, k, m, residual):
    a = rng.standard_normal((p, k)).astype(np.float32)
    w = rng.standard_normal((k, m)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    z = rng.standard_normal((p, m)).astype(np.float32) if residual else None
    return a, w, b, z


def _want(a, w, b, z, lo, hi):
    y = a.astype(np.float64) @ w + b + (0 if z is None else z)
    return np.clip(y, lo, hi)


@pytest.mark.parametrize("shape", [WIDE, NARROW, SLIM, SINGLE], ids=["wide", "narrow", "slim", "single"])
@pytest.mark.parametrize("p,k,m", [(1, 1, 1), (5, 3, 7), (6, 16, 64), (13, 27, 32), (49, 160, 200),
                                   (100, 96, 24), (197, 64, 130), (37, 20, 16),
                                   (3, 300, 70), (11, 512, 40)])  # a partial block of long rows
@pytest.mark.parametrize("residual", [False, True])
def test_matches_numpy(shape, p, k, m, residual):
    rng = np.random.default_rng(p * 1000 + k * 10 + m)
    a, w, b, z = _operands(rng, p, k, m, residual)
    lo, hi = (np.float32(-0.5), np.float32(2.0)) if residual else (-INF, INF)
    got = gemm_rows(a, w, b, z, lo, hi, shape=shape)
    assert got.shape == (p, m) and got.dtype == np.float32
    np.testing.assert_allclose(got, _want(a, w, b, z, lo, hi), rtol=1e-4, atol=1e-4)


def test_writes_into_out_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    a, w, b, _ = _operands(rng, 20, 9, 40, False)
    out = np.full((30, 40), 7.0, np.float32)
    gemm_rows(a, w, b, None, -INF, INF, out=out[5:25])
    np.testing.assert_allclose(out[5:25], _want(a, w, b, None, -INF, INF), rtol=1e-4, atol=1e-4)
    assert (out[:5] == 7).all() and (out[25:] == 7).all()


def test_out_must_be_a_contiguous_float32_array_of_the_result_shape():
    rng = np.random.default_rng(0)
    a, w, b, _ = _operands(rng, 4, 3, 8, False)
    for bad in (np.empty((4, 9), np.float32), np.empty((4, 8), np.float64), np.empty((8, 4), np.float32).T):
        with pytest.raises(ValueError, match="out must be"):
            gemm_rows(a, w, b, None, -INF, INF, out=bad)


def test_a_prepared_gemm_serves_every_call_of_its_shapes():
    """One PreparedGemm, new operands each call (a bound layer's runs): each result is its own."""
    rng = np.random.default_rng(3)
    gemm = PreparedGemm(50, 24, 70)
    for _ in range(3):
        a, w, b, z = _operands(rng, 50, 24, 70, True)
        np.testing.assert_allclose(gemm(a, w, b, z, -INF, INF, keep_for=None), _want(a, w, b, z, -INF, INF),
                                   rtol=1e-4, atol=1e-4)


def test_a_prepared_gemm_names_a_weight_of_other_shapes():
    rng = np.random.default_rng(0)
    a, w, b, _ = _operands(rng, 10, 8, 16, False)
    with pytest.raises(ValueError, match=r"weight of shape \(8, 16\), prepared for \(9, 16\)"):
        PreparedGemm(10, 9, 16)(a, w, b, None, -INF, INF)
    with pytest.raises(ValueError, match="needs both rows and koff"):
        PreparedGemm(10, 8, 16, rows=Rows(10, 10, 10, 8, 0, 0))
    with pytest.raises(ValueError, match=r"no tile of shape \(8, 3\)"):
        PreparedGemm(10, 8, 16, shape=(8, 3))


def test_tile_shape_keeps_idle_lanes_few():
    assert tile_shape(24) == NARROW and tile_shape(96) == NARROW
    assert tile_shape(16) == SLIM and tile_shape(8) == SLIM and tile_shape(17) == NARROW
    assert tile_shape(64) == WIDE and tile_shape(1280) == WIDE and tile_shape(320) == WIDE
    assert tile_shape(200) == NARROW  # 224 lanes in 32s, 256 in 64s


def test_kept_panels_follow_the_weight_array():
    """Panels are kept per weight array (identity), so a second weight of the same shape gets its own."""
    rng = np.random.default_rng(1)
    a, w1, b, _ = _operands(rng, 30, 12, 70, False)
    w2 = rng.standard_normal(w1.shape).astype(np.float32)
    assert padded_weight(w1, 64, keep_for=w1) is padded_weight(w1, 64, keep_for=w1)
    for w in (w1, w2, w1):
        np.testing.assert_allclose(gemm_rows(a, w, b, None, -INF, INF, keep_for=w), _want(a, w, b, None, -INF, INF),
                                   rtol=1e-4, atol=1e-4)


def test_panels_hold_the_weight_zero_padded():
    w = np.arange(3 * 70, dtype=np.float32).reshape(3, 70)
    panels, koff = padded_weight(w, 64)
    assert panels.shape == (2 * 3 * 64,) and list(koff) == [0, 64, 128]
    p = panels.reshape(2, 3, 64)
    np.testing.assert_array_equal(p[0], w[:, :64])
    np.testing.assert_array_equal(p[1, :, :6], w[:, 64:])
    assert (p[1, :, 6:] == 0).all()


def test_parallel_twin_matches():
    rng = np.random.default_rng(2)
    a, w, b, z = _operands(rng, 301, 40, 150, True)
    want = gemm_rows(a, w, b, z, np.float32(0), np.float32(6))
    threads = numba.get_num_threads()
    use_parallel_kernels(True)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        got = gemm_rows(a, w, b, z, np.float32(0), np.float32(6))
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(got, want)


def test_one_row_products_read_four_runs_of_rows_at_once():
    """From STREAMED_K rows on, the steps take four runs of the panel's rows in turn (every row
    once, a shorter last run where four do not divide them); fewer rows keep their order."""
    for k in (STREAMED_K, 301, 672, 4096):
        order = stream_order(k)
        q = -(-k // GEMV_STREAMS)
        assert sorted(order.tolist()) == list(range(k)) and order.tolist()[:5] == [0, q, 2 * q, 3 * q, 1]
    assert stream_order(STREAMED_K - 1).tolist() == list(range(STREAMED_K - 1))


@pytest.mark.parametrize("k,m", [(672, 168), (301, 70), (1024, 130), (40, 18), (1, 1)])
def test_one_row_takes_the_one_row_tile_serial_and_parallel(k, m):
    """A product of one row (a squeeze-and-excitation gate, a batch-1 classifier) runs on the 1 x 64
    tile, panel by panel, and gives numpy's result (residual, clamp keeping NaN) on one thread and
    on two."""
    rng = np.random.default_rng(k + m)
    a, w, b, z = _operands(rng, 1, k, m, True)
    a[0, 0] = np.nan if k > 1 else a[0, 0]
    gemm = PreparedGemm(1, k, m)
    assert (gemm.mr, gemm.nv) == SINGLE
    lo, hi = np.float32(-0.5), np.float32(2.0)
    with np.errstate(invalid="ignore"):
        want = _want(a, w, b, z, lo, hi)
    got = gemm(a, w, b, z, lo, hi, keep_for=w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.isnan(got).all() == (k > 1)
    threads = numba.get_num_threads()
    use_parallel_kernels(True)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        again = gemm(a, w, b, z, lo, hi, keep_for=w)
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("k,strides,pads", [(1, [1, 1], [0, 0, 0, 0]), (1, [2, 2], [0, 0, 0, 0]),
                                             (3, [2, 1], [1, 0, 1, 2])])
@pytest.mark.parametrize("act", ["Clip", "HardSwish"])
def test_packed_conv_kernel_matches_reference(k, strides, pads, act):
    """The kind a Predictor plans for a constant weight: 1x1 (strided) and kxk layers, clamped
    and not (HardSwish runs after the tile), run twice to use the kept panels."""
    rng = np.random.default_rng(k + len(act))
    x = rng.standard_normal((2, 9, 11, 24)).astype(np.float32)
    wt = np.ascontiguousarray(rng.standard_normal((96, 24, k, k)).astype(np.float32).transpose(HWIO))
    b = rng.standard_normal(96).astype(np.float32)
    attrs = dict(strides=strides, pads=pads, activation=act, alpha=0.0, beta=6.0 if act == "Clip" else 0.0)
    want = fused_conv_nhwc_reference(x, wt, b, None, **attrs)
    for _ in range(2):
        np.testing.assert_allclose(fused_conv_nhwc_packed(x, wt, b, None, **attrs), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c,m,k,strides,dilations,pads", [
    (3, 64, 7, [2, 2], [1, 1], [3, 3, 3, 3]),  # an RGB stem: 147 steps over 3 channels
    (16, 70, 3, [1, 1], [1, 1], [1, 1, 1, 1]),  # ragged channel block
    (8, 64, 3, [2, 1], [2, 1], [0, 2, 1, 0]),  # asymmetric pads, dilation, mixed strides
    (32, 64, 1, [2, 2], [1, 1], [0, 0, 0, 0]),  # strided 1x1: rows every other pixel, no copy
    (24, 130, 3, [3, 3], [1, 1], [1, 1, 1, 1]),  # stride 3 leaves the last input rows unread
])
@pytest.mark.parametrize("residual", [False, True])
def test_gathered_conv_matches_reference(c, m, k, strides, dilations, pads, residual):
    """kxk and strided layers gather their patches from the padded input in place (an implicit
    GEMM): tiles span output rows and images (batch 3), every geometry agrees with the oracle."""
    rng = np.random.default_rng(c * 100 + m + k)
    x = rng.standard_normal((3, 13, 10, c)).astype(np.float32)
    wt = np.ascontiguousarray(rng.standard_normal((m, c, k, k)).astype(np.float32).transpose(HWIO))
    b = rng.standard_normal(m).astype(np.float32)
    attrs = dict(strides=strides, dilations=dilations, pads=pads, activation="Relu")
    out_shape = fused_conv_nhwc_reference(x, wt, b, None, **attrs).shape
    z = rng.standard_normal(out_shape).astype(np.float32) if residual else None
    want = fused_conv_nhwc_reference(x, wt, b, z, **attrs)
    np.testing.assert_allclose(fused_conv_nhwc_packed(x, wt, b, z, **attrs), want, rtol=1e-4, atol=1e-4)


def test_gathered_rows_cross_rows_and_images():
    """Row starts follow (image, row, column) through a tile: 6-row tiles over 5-wide rows."""
    from inference.kernels.rows_gemm import Rows, gemm_gathered

    rng = np.random.default_rng(4)
    img = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)  # 2 images of 4x5 pixels, 3 channels
    w = rng.standard_normal((3, 20)).astype(np.float32)
    rows = Rows(count=40, per_image=20, width=5, col_pitch=3, row_pitch=15, image_pitch=60)
    got = gemm_gathered(img.reshape(-1), rows, np.arange(3, dtype=np.int64), w, np.zeros(20, np.float32), None,
                        -INF, INF)
    np.testing.assert_allclose(got, img.reshape(40, 3).astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"offsets of shape \(2,\) for 1 group\(s\) of a weight of 3 rows"):
        gemm_gathered(img.reshape(-1), rows, np.arange(2, dtype=np.int64), w, np.zeros(20, np.float32), None,
                      -INF, INF)


@pytest.mark.parametrize("shape", GATHERED, ids=lambda s: f"{s[0]}x{s[1] * 16}")
@pytest.mark.parametrize("groups", [1, 3])
def test_every_gathered_shape_and_groups(shape, groups):
    """Each gathered tile shape, over 3 groups whose step tables pick their own (permuted) channels,
    with a residual: each group's columns are its own product (the bias padded per group)."""
    from inference.kernels.rows_gemm import Rows

    rng = np.random.default_rng(5)
    p, c, mg = 29, 12, 37  # a partial pixel block, group widths past a whole panel
    x = rng.standard_normal((p, c)).astype(np.float32)
    cg = c // groups
    order = rng.permutation(c)
    koff = order.reshape(groups, cg).astype(np.int64)
    w = rng.standard_normal((cg, groups * mg)).astype(np.float32)
    b = rng.standard_normal(groups * mg).astype(np.float32)
    z = rng.standard_normal((p, groups * mg)).astype(np.float32)
    rows = Rows(count=p, per_image=p, width=p, col_pitch=c, row_pitch=0, image_pitch=0)
    gemm = PreparedGemm(p, cg, groups * mg, shape=shape, rows=rows, koff=koff, groups=groups)
    got = gemm(x.reshape(-1), w, b, z, np.float32(0.0), INF)
    want = np.concatenate([x[:, koff[g]].astype(np.float64) @ w[:, g * mg:(g + 1) * mg] for g in range(groups)], 1)
    np.testing.assert_allclose(got, np.maximum(want + b + z, 0), rtol=1e-5, atol=1e-5)


def test_gathered_shape_follows_the_padded_work():
    from inference.kernels.rows_gemm import gathered_shape

    assert gathered_shape(196, 68) == (4, 5)  # 80 lanes for shufflenet's 68 channels a group, not 128
    assert gathered_shape(49, 136) == (8, 3)  # 144, not 192
    assert gathered_shape(3136, 64) == (6, 4) and gathered_shape(196, 512) == (6, 4)  # whole 64-lane panels
    assert gathered_shape(784, 28) == (8, 2)  # 32 lanes for 28 channels, not 48 or 64
    assert gathered_shape(12544, 32) == (8, 2) and gathered_shape(12544, 24) == (8, 2)  # RGB stems
    assert gathered_shape(784, 96) == (8, 3) and gathered_shape(196, 160) == (4, 5)  # ties: the earlier shape
    assert gathered_shape(6400, 16) == (8, 1) and gathered_shape(1600, 24) == (8, 2)  # 16 lanes for 16 outputs


def test_groups_need_a_gathered_gemm_they_divide():
    with pytest.raises(ValueError, match="2 groups of 9 outputs"):
        PreparedGemm(10, 4, 9, rows=Rows(10, 10, 10, 8, 0, 0), koff=np.arange(8, dtype=np.int64), groups=2)
    with pytest.raises(ValueError, match="2 groups of 8 outputs"):
        PreparedGemm(10, 4, 8, groups=2)
    with pytest.raises(ValueError, match=r"no gathered tile of shape \(12, 2\)"):
        PreparedGemm(10, 8, 8, shape=(12, 2), rows=Rows(10, 10, 10, 8, 0, 0), koff=np.arange(8, dtype=np.int64))


@pytest.mark.parametrize("threads", [1, 2])
def test_zero_rows_of_a_constant_weight_are_skipped(threads):
    """A constant weight whose panels have all-zero rows (a 1x1 branch merged into a 3x3) runs
    fewer steps in those panels, with the same sums; the parallel runs split the unequal panels
    by their steps; a weight that changes (not ``keep_for``) runs dense and stays right."""
    rng = np.random.default_rng(9)
    p, k, m = 53, 36, 150  # 3 panels of 64: the first only rows 8..11 (a centre tap), the last a ragged one
    x = rng.standard_normal((p, k)).astype(np.float32)
    w = rng.standard_normal((k, m)).astype(np.float32)
    w[:8, :64] = 0
    w[12:, :64] = 0
    w[5, 64:] = 0  # a zero row across the other panels
    b = rng.standard_normal(m).astype(np.float32)
    rows = Rows(count=p, per_image=p, width=p, col_pitch=k, row_pitch=0, image_pitch=0)
    gemm = PreparedGemm(p, k, m, shape=(6, 4), rows=rows, koff=np.arange(k, dtype=np.int64))
    want = np.maximum(x.astype(np.float64) @ w + b, 0)
    before = numba.get_num_threads()
    use_parallel_kernels(threads > 1)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        dense = gemm(x.reshape(-1), w, b, None, np.float32(0), INF)
        skipping = gemm(x.reshape(-1), w, b, None, np.float32(0), INF, keep_for=w)
        again = gemm(x.reshape(-1), w, b, None, np.float32(0), INF, keep_for=w)
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(before)
    for got in (dense, skipping, again):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    steps = gemm._weight[3]
    assert steps.count.tolist() == [4, k - 1, k - 1]
    assert steps.koff[0, :4].tolist() == [8, 9, 10, 11] and 5 not in steps.koff[1, :k - 1]
    bounds = gemm._chunk_bounds(steps, 4, False)
    work = np.tile(steps.count + 8, -(-p // 6))  # tiles in pixel-block-major order
    shares = [work[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
    assert bounds[0] == 0 and bounds[-1] == gemm.tiles and max(shares) < 1.3 * sum(shares) / 4


def test_a_weight_without_zero_rows_keeps_the_dense_steps():
    rng = np.random.default_rng(10)
    p, k, m = 20, 9, 70
    x, w = rng.standard_normal((p, k)).astype(np.float32), rng.standard_normal((k, m)).astype(np.float32)
    rows = Rows(count=p, per_image=p, width=p, col_pitch=k, row_pitch=0, image_pitch=0)
    gemm = PreparedGemm(p, k, m, rows=rows, koff=np.arange(k, dtype=np.int64))
    got = gemm(x.reshape(-1), w, np.zeros(m, np.float32), None, -INF, INF, keep_for=w)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    assert gemm._weight[3] is gemm._dense


@pytest.mark.parametrize("gathered", [False, True])
def test_a_prepared_gemm_keeps_what_follows_from_its_constant_weight_per_array(gathered):
    """One PreparedGemm (a bound layer) keeps the last constant weight's panels and bias by
    identity: another weight or bias array, constant or not, gets its own."""
    rng = np.random.default_rng(11)
    p, k, m = 23, 10, 40
    x = rng.standard_normal((p, k)).astype(np.float32)
    rows = Rows(count=p, per_image=p, width=p, col_pitch=k, row_pitch=0, image_pitch=0)
    gemm = (PreparedGemm(p, k, m, rows=rows, koff=np.arange(k, dtype=np.int64)) if gathered
            else PreparedGemm(p, k, m))
    operand = x.reshape(-1) if gathered else x
    (w1, w2), (b1, b2) = (rng.standard_normal((2, k, m)).astype(np.float32),
                          rng.standard_normal((2, m)).astype(np.float32))
    for w, b, keep in ((w1, b1, w1), (w1, b1, w1), (w2, b2, w2), (w1, b2, w1), (w2, b1, None), (w1, b1, w1)):
        np.testing.assert_allclose(gemm(operand, w, b, None, -INF, INF, keep_for=keep), _want(x, w, b, None, -INF, INF),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gathered,shape", [(False, s) for s in MATRIX + (SINGLE,)] + [(True, s) for s in GATHERED],
                         ids=lambda v: v if isinstance(v, bool) else f"{v[0]}x{v[1] * 16}")
@pytest.mark.parametrize("code", [SIGMOID, SILU, HARD_SWISH], ids=["sigmoid", "silu", "hardswish"])
@pytest.mark.parametrize("residual", [False, True])
def test_tiles_compute_their_activations_as_the_pass_does(gathered, shape, code, residual):
    """The tile's own Sigmoid, SiLU and HardSwish (``act``, in registers, after bias and residual)
    give what the unactivated tile followed by the vectorised pass gives, non-finite sums included:
    sigmoid(-inf) = 0, SiLU(-inf) = HardSwish(-inf) = NaN, a NaN stays NaN, large sums saturate
    without overflow."""
    rng = np.random.default_rng(code * 10 + shape[0])
    p, k, m = 45, 11, 37  # partial pixel blocks and panels
    a, w, b, z = _operands(rng, p, k, m, residual)
    a *= 8  # sums past +-87, where exp leaves float32's normal range
    a[3, 2], a[7, 0], a[9, 4] = np.nan, np.inf, -np.inf
    if gathered:
        rows = Rows(count=p, per_image=p, width=p, col_pitch=k, row_pitch=0, image_pitch=0)
        gemm = PreparedGemm(p, k, m, shape=shape, rows=rows, koff=np.arange(k, dtype=np.int64))
        operand = a.reshape(-1)
    else:
        gemm, operand = PreparedGemm(p, k, m, shape=shape), a
    with np.errstate(invalid="ignore", over="ignore"):
        sums = gemm(operand, w, b, z, -INF, INF)
        want = sums.copy()
        activate_row(want.reshape(-1), code, 0.0, 0.0)
        got = gemm(operand, w, b, z, -INF, INF, act=code)
    assert np.isnan(sums).any() and np.isinf(sums).any() and (np.abs(sums[np.isfinite(sums)]) > 87).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    # HardSwish: a fresh compile of the pass (in CI, not in another build) fused x/6 + 1/2 into one
    # multiply-add, the tile rounds twice; near x = -3 the result is tiny and the two differ by
    # ~4e-8 (|x| times an ulp of x/6 + 1/2)
    atol = 3e-7 if code == HARD_SWISH else 1e-30
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=atol)
