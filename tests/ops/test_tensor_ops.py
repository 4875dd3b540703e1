"""Edge cases and error messages of the tensor-manipulation kernels the ONNX node tests leave out."""
from __future__ import annotations

import numpy as np
import pytest

from inference.errors import KernelError
from inference.ops import lookup
from inference.ops.registry import KernelContext


def kernel(op: str, opset: int = 21):
    entry = lookup(op, "", opset)
    assert entry is not None, f"no kernel for {op} at opset {opset}"
    return entry.fn


def ctx(num_outputs: int) -> KernelContext:
    return KernelContext(node=None, opset=21, num_outputs=num_outputs)


def test_reshape_rejects_two_inferred_dims():
    with pytest.raises(KernelError, match="more than one -1"):
        kernel("Reshape")(np.zeros((2, 3)), np.array([-1, -1]))


def test_reshape_allowzero_keeps_a_literal_zero():
    out = kernel("Reshape")(np.zeros((0, 3), np.float32), np.array([3, 0]), allowzero=1)
    assert out.shape == (3, 0)
    assert kernel("Reshape")(np.zeros((2, 3)), np.array([0, 3])).shape == (2, 3)


def test_squeeze_of_a_non_unit_axis_names_it():
    with pytest.raises(KernelError, match=r"axes \[1\]"):
        kernel("Squeeze")(np.zeros((1, 2)), np.array([1]))


def test_slice_negative_step_clamps_to_the_front():
    x = np.arange(5)
    out = kernel("Slice")(x, np.array([100]), np.array([-(2 ** 62)]), np.array([0]), np.array([-1]))
    np.testing.assert_array_equal(out, x[::-1])
    empty = kernel("Slice")(x, np.array([-10]), np.array([-20]), np.array([0]), np.array([-1]))
    assert empty.shape == (0,)


def test_slice_zero_step_is_an_error():
    with pytest.raises(KernelError, match="steps"):
        kernel("Slice")(np.arange(3), np.array([0]), np.array([3]), np.array([0]), np.array([0]))


def test_gather_scalar_index_returns_an_array_and_checks_range():
    out = kernel("Gather")(np.arange(4, dtype=np.float32), np.array(-1))
    assert isinstance(out, np.ndarray) and out.shape == () and out == 3
    with pytest.raises(KernelError, match="out of range"):
        kernel("Gather")(np.arange(4), np.array([4]))


def test_scatter_nd_reductions_accumulate_duplicates():
    data = np.zeros(3, np.float32)
    idx = np.array([[1], [1], [2]])
    upd = np.array([2, 3, 4], np.float32)
    np.testing.assert_array_equal(kernel("ScatterND")(data, idx, upd, reduction="add"), [0, 5, 4])
    with pytest.raises(KernelError, match="reduction"):
        kernel("ScatterND")(data, idx, upd, reduction="avg")


def test_split_num_outputs_gives_a_smaller_last_part():
    parts = kernel("Split", 18)(np.arange(7), num_outputs=3, ctx=ctx(3))
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(KernelError, match="divisible"):
        kernel("Split", 13)(np.arange(7), ctx=ctx(3))


def test_pad_negative_pads_crop_and_bad_mode_is_named():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = kernel("Pad")(x, np.array([0, -1, 0, 1]), np.array(9, np.float32))
    np.testing.assert_array_equal(out, [[1, 2, 9], [4, 5, 9]])
    with pytest.raises(KernelError, match="'mirror'"):
        kernel("Pad")(x, np.array([0, 1, 0, 1]), mode="mirror")


def test_pad_strings_default_to_empty():
    out = kernel("Pad")(np.array(["a"], dtype=object), np.array([1, 0]))
    assert out.tolist() == ["", "a"]


def test_topk_largest_ties_go_to_the_lower_index():
    values, indices = kernel("TopK")(np.array([1, 3, 3, 2, 3]), np.array([2]))
    assert values.tolist() == [3, 3] and indices.tolist() == [1, 2]
    with pytest.raises(KernelError, match="k=6"):
        kernel("TopK")(np.arange(5), np.array([6]))


def test_argmax_select_last_index():
    x = np.array([[2, 5, 5], [7, 7, 1]])
    assert kernel("ArgMax")(x, axis=1, keepdims=0, select_last_index=1).tolist() == [2, 1]
    assert kernel("ArgMax")(x, axis=1, keepdims=0).tolist() == [1, 0]


def test_unique_first_occurrence_order():
    y, first, inverse, counts = kernel("Unique")(np.array([3, 1, 3, 2]), sorted=0, ctx=ctx(4))
    assert y.tolist() == [3, 1, 2] and first.tolist() == [0, 1, 3]
    assert inverse.tolist() == [0, 1, 0, 2] and counts.tolist() == [2, 1, 1]


def test_one_hot_out_of_range_index_is_all_off():
    out = kernel("OneHot")(np.array([1, 5, -1]), np.array(3), np.array([0, 7], np.int32))
    assert out.dtype == np.int32
    assert out.tolist() == [[0, 7, 0], [0, 0, 0], [0, 0, 7]]


def test_cumsum_exclusive_reverse_keeps_dtype():
    out = kernel("CumSum")(np.array([1, 2, 3], np.int32), np.array(0), exclusive=1, reverse=1)
    assert out.dtype == np.int32 and out.tolist() == [5, 3, 0]


def test_range_counts_integers_exactly():
    out = kernel("Range")(np.array(10), np.array(4), np.array(-2))
    assert out.dtype == np.int64 and out.tolist() == [10, 8, 6]
    with pytest.raises(KernelError, match="delta"):
        kernel("Range")(np.array(0.0), np.array(1.0), np.array(0.0))


def test_sequence_positions_are_checked():
    seq = [np.zeros(1), np.ones(1)]
    assert len(kernel("SequenceInsert")(seq, np.zeros(2), np.array(-2))) == 3
    assert kernel("SequenceAt")(seq, np.array(-1)) is seq[1]
    with pytest.raises(KernelError, match="position 2"):
        kernel("SequenceErase")(seq, np.array(2))


def test_split_to_sequence_scalar_split_leaves_a_short_tail():
    parts = kernel("SplitToSequence")(np.arange(5), np.array(2))
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4]]


def test_optional_get_element_of_empty_optional_fails():
    assert not kernel("OptionalHasElement")(None)
    with pytest.raises(KernelError, match="empty"):
        kernel("OptionalGetElement")(None)


def test_string_normalizer_all_stopwords_keeps_rank():
    x = np.array([["a", "A"]], dtype=object)
    out = kernel("StringNormalizer")(x, stopwords=["a"])
    assert out.shape == (1, 1) and out[0, 0] == ""


def test_trilu_and_eyelike_reject_bad_rank():
    with pytest.raises(KernelError, match="rank >= 2"):
        kernel("Trilu")(np.zeros(3))
    with pytest.raises(KernelError, match="2-D"):
        kernel("EyeLike")(np.zeros((2, 2, 2)))


def test_random_ops_are_seeded_and_typed():
    a = kernel("RandomUniform")(shape=[2, 3], seed=3.0)
    b = kernel("RandomUniform")(shape=[2, 3], seed=3.0)
    assert a.dtype == np.float32 and a.shape == (2, 3) and np.array_equal(a, b)
    drawn = kernel("Bernoulli")(np.array([0.0, 1.0], np.float16), seed=1.0)
    assert drawn.dtype == np.float16 and drawn.tolist() == [0.0, 1.0]


def test_range_stash_type_zero_accumulates_in_float16():
    args = (np.array(2048, np.float16), np.array(2052, np.float16), np.array(1, np.float16))
    stuck = kernel("Range", 27)(*args, stash_type=0)
    assert stuck.dtype == np.float16 and stuck.tolist() == [2048] * 4
    assert kernel("Range", 27)(*args).tolist() == [2048, 2048, 2050, 2052]
