"""The fast Transpose (``inference.kernels.transpose``): every permutation of ranks 1-5 equals numpy's,
the block swaps (NCHW <-> NHWC, .T, attention's heads) on their own kernels, every other
permutation a gather of rows, other dtypes through the reference op."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from inference.errors import KernelError
from inference.kernels.transpose import (BLOCK, _plan, block_swap, copies, gather_plan, gather_rows, swap_last_two,
                                        swap_middle, transpose_blocks)

RNG = np.random.default_rng(13)


@pytest.mark.parametrize("shape", [(5,), (BLOCK * 2 + 3, 7), (2, 3, 37), (2, 19, 4, 5), (1, 40, 3, 33), (2, 1, 4, 3),
                                   (3, 0, 4, 2), (2, 3, 4, 5, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_every_permutation_equals_numpy(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    for perm in itertools.permutations(range(len(shape))):
        got = transpose_blocks(x, perm=list(perm))
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, np.transpose(x, perm))
    np.testing.assert_array_equal(transpose_blocks(x), x.T)


def test_block_swaps_are_recognised():
    assert block_swap((2, 3, 4, 5), [0, 2, 3, 1]) == (2, 3, 20, 1)  # NCHW -> NHWC
    assert block_swap((2, 4, 5, 3), [0, 3, 1, 2]) == (2, 20, 3, 1)  # NHWC -> NCHW
    assert block_swap((6, 7), [1, 0]) == (1, 6, 7, 1)
    assert block_swap((2, 3, 4, 5), [0, 2, 1, 3]) == (2, 3, 4, 5)  # attention's heads: rows of 5 move
    assert block_swap((2, 3, 4, 5, 6), [1, 0, 2, 3, 4]) == (1, 2, 3, 120)
    assert block_swap((2, 3, 4, 5), [0, 3, 2, 1]) is None  # a reversal: not two blocks
    assert block_swap((2, 3, 4), [0, 1, 2]) is None


def test_both_twins_and_views():
    for shape in ((3, BLOCK * 4 + 5, 40), (2, 37, 600)):  # the second: column tiles of 256, and past them
        x = RNG.standard_normal(shape).astype(np.float32)
        for twin in (swap_last_two.serial, swap_last_two.parallel):
            y = np.empty((shape[0], shape[2], shape[1]), np.float32)
            twin(x, y)
            np.testing.assert_array_equal(y, np.transpose(x, (0, 2, 1)))
    x = RNG.standard_normal((2, 7, 5, 33)).astype(np.float32)
    for twin in (swap_middle.serial, swap_middle.parallel):
        y = np.empty((2, 5, 7, 33), np.float32)
        twin(x.reshape(-1), y.reshape(-1), 2, 7, 5, 33)
        np.testing.assert_array_equal(y, np.transpose(x, (0, 2, 1, 3)))
    view = RNG.standard_normal((3, 50, 9, 40)).astype(np.float32)[:, :, 1:8, ::2]
    np.testing.assert_array_equal(transpose_blocks(view, perm=[0, 2, 3, 1]), np.transpose(view, (0, 2, 3, 1)))


def test_other_permutations_gather_rows(threads):
    """timm's q/k/v split, (B, N, 3, H, D) -> (3, B, H, N, D): runs of D copied; a reversal: strided
    loads; both written by the kernel (replayable), into a region of their own in the plan."""
    for shape, perm, run in (((2, 9, 3, 4, 8), [2, 0, 3, 1, 4], 8), ((3, 4, 5), [2, 1, 0], 1),
                             ((2, 3, 4, 5), [1, 3, 0, 2], 1)):
        plan = _plan(shape, perm)
        assert len(plan[1]) == 3 and plan[1][2] == run and copies(shape, np.float32, perm)
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(transpose_blocks(x, perm=perm), np.transpose(x, perm))
    dims, strides, run = gather_plan((2, 9, 3, 4, 8), [2, 0, 3, 1, 4])
    assert dims.tolist() == [3, 2, 4, 9] and strides.tolist() == [32, 864, 8, 96] and run == 8
    x = RNG.standard_normal((2, 9, 3, 4, 8)).astype(np.float32)
    for twin in (gather_rows.serial, gather_rows.parallel):
        y = np.empty(x.size, np.float32)
        twin(x.reshape(-1), y, dims, strides, run)
        np.testing.assert_array_equal(y.reshape(3, 2, 4, 9, 8), np.transpose(x, (2, 0, 3, 1, 4)))


def test_other_dtypes_and_bad_perms_go_to_the_reference():
    x = RNG.integers(0, 9, (2, 3, 4)).astype(np.int64)
    np.testing.assert_array_equal(transpose_blocks(x, perm=[0, 2, 1]), np.transpose(x, (0, 2, 1)))
    with pytest.raises(KernelError, match="perm"):
        transpose_blocks(x.astype(np.float32), perm=[0, 0, 1])


@pytest.mark.parametrize("shape, perm", [((128, 1, 3, 1, 16), (2, 1, 4, 0, 3)), ((4, 1, 8), (1, 0, 2)),
                                         ((1, 5, 1, 6), (3, 2, 0, 1)), ((2, 1, 3), (2, 0, 1))], ids=str)
def test_axes_of_one_are_dropped_before_planning(shape, perm, threads):
    """PyTorch's attention moves axes of length 1 about ((L, 1, 3, 1, D) -> (3, 1, L, 1, D)): a
    block swap once they are dropped, a reshape when nothing else moves; as numpy's transpose."""
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    assert _plan(shape, list(perm)) is not None
    np.testing.assert_array_equal(transpose_blocks(x, perm=list(perm)), np.transpose(x, perm))


@pytest.mark.parametrize("shape", [(1, 32, 112, 3), (2, 37, 18, 19), (1, 16, 16, 1), (1, 5, 40, 2), (3, 1, 17, 16),
                                   (2, 300, 20, 14)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_byte_tensors_swap_in_register_blocks_and_at_their_edges(shape, dtype, threads):
    """8-bit swaps of the last two axes go through 16 x 16 register blocks (whole ones, and rows and
    columns past the last whole block element by element) in tiles of 256 x 256 (rows and columns
    past a tile's edge, 300 x 280 here): every NCHW <-> NHWC and .T equals numpy."""
    from inference.kernels.transpose_ir import swap_last_two_bytes

    x = RNG.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    for perm in ((0, 2, 3, 1), (0, 3, 1, 2), (0, 1, 3, 2)):
        got = transpose_blocks(x, perm=list(perm))
        assert got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, np.transpose(x, perm))
    flat = x.reshape(shape[0], shape[1], -1)
    y = np.empty((shape[0], flat.shape[2], shape[1]), dtype)
    swap_last_two_bytes(flat, y)
    np.testing.assert_array_equal(y, flat.transpose(0, 2, 1))
