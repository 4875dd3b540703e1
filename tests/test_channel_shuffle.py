"""ChannelShuffle: the op, the pass that finds ShuffleNet's Reshape -> Transpose -> Reshape, and the
fold of a channels-last shuffle into the convolutions that read it (``input_order``)."""
from __future__ import annotations

import numpy as np
import pytest

from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.kernels.channel_shuffle import OP, channel_shuffle, channel_shuffle_reference
from inference.kernels.nhwc import HWIO, fused_conv_nhwc, fused_conv_nhwc_reference
from inference.passes import optimize
from inference.passes.channel_shuffle import fuse_channel_shuffle
from inference.passes.shuffle_fold import shuffle_order
from inference.session import Session
from inference.shape_inference import infer_shapes
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5


# -- the op -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((2, 12, 5, 3), 1), ((2, 5, 3, 12), 3), ((2, 5, 3, 12), -1), ((12,), 0)])
def test_kernel_matches_reference(shape, axis):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = channel_shuffle_reference(x, axis=axis, group=3)
    np.testing.assert_array_equal(channel_shuffle(x, axis=axis, group=3), want)
    moved = np.moveaxis(x, axis, 0)  # output channel j*3 + g is input channel g*4 + j
    np.testing.assert_array_equal(np.moveaxis(want, axis, 0)[1 * 3 + 2], moved[2 * 4 + 1])


def test_order_is_the_shuffle():
    x = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(x[shuffle_order(12, 4)], channel_shuffle(x, axis=0, group=4))


def test_bad_group_and_axis():
    x = np.zeros((1, 10, 2, 2), np.float32)
    with pytest.raises(KernelError, match=r"10 channels of X \(1, 10, 2, 2\) \(axis 1\) do not split into 4 groups"):
        channel_shuffle(x, axis=1, group=4)
    with pytest.raises(KernelError, match="axis 4 out of range"):
        channel_shuffle(x, axis=4, group=2)


# -- the chain pass ------------------------------------------------------------------------------
def _shuffle_net(perm=(0, 2, 1, 3, 4), back=(1, 12, 6, 6), group=3, last_group=3):
    """1x1 conv -> Reshape (1, group, 12/group, 6, 6) -> Transpose ``perm`` -> Reshape ``back`` ->
    depthwise 3x3 -> 1x1 in ``last_group`` groups + Relu."""
    rng = np.random.default_rng(1)
    b = GraphBuilder("shuffle", opset=17)
    w0 = b.const(rng.standard_normal((12, 6, 1, 1)).astype(np.float32))
    h = b.op("Conv", b.input("x", np.float32, [1, 6, 6, 6]), w0)
    h = b.op("Reshape", h, b.const(np.array([1, group, 12 // group, 6, 6], np.int64)))
    h = b.op("Transpose", h, perm=list(perm))
    h = b.op("Reshape", h, b.const(np.array(back, np.int64)))
    h = b.op("Conv", h, b.const(rng.standard_normal((12, 1, 3, 3)).astype(np.float32)),
             b.const(rng.standard_normal(12).astype(np.float32)), group=12, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = b.op("Conv", h, b.const(rng.standard_normal((12, 12 // last_group, 1, 1)).astype(np.float32)),
             group=last_group)
    b.op("Relu", h, outputs=["y"])
    b.output("y", np.float32, [1, 12, 6, 6])
    return b.build()


def _feeds():
    return {"x": np.random.default_rng(2).standard_normal((1, 6, 6, 6)).astype(np.float32)}


def test_chain_becomes_one_op():
    model = infer_shapes(_shuffle_net())
    want = Session(model, kinds=("reference",)).run(_feeds())[0]
    assert fuse_channel_shuffle(model)
    ops = [n.op_type for n in model.graph.nodes]
    assert ops.count(OP) == 1 and "Reshape" not in ops and "Transpose" not in ops
    shuffle = next(n for n in model.graph.nodes if n.op_type == OP)
    assert shuffle.attrs == {"axis": 1, "group": 3}
    np.testing.assert_allclose(Session(model).run(_feeds())[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("perm,back", [((0, 1, 2, 4, 3), (1, 12, 6, 6)), ((0, 2, 1, 3, 4), (1, 12, 36, 1))],
                         ids=["other-axes-swapped", "not-restored"])
def test_other_chains_stay(perm, back):
    model = infer_shapes(_shuffle_net(perm, back) if back[3] != 1 else _not_restored())
    assert not fuse_channel_shuffle(model)


def _not_restored():
    """The chain's last Reshape flattens (1, 12, 36, 1): not a shuffle."""
    b = GraphBuilder("flat", opset=17)
    h = b.op("Reshape", b.input("x", np.float32, [1, 12, 6, 6]), b.const(np.array([1, 3, 4, 6, 6], np.int64)))
    h = b.op("Transpose", h, perm=[0, 2, 1, 3, 4])
    b.op("Reshape", h, b.const(np.array([1, 12, 36, 1], np.int64)), outputs=["y"])
    b.output("y", np.float32, [1, 12, 36, 1])
    return b.build()


# -- the fold ------------------------------------------------------------------------------------
@pytest.mark.parametrize("last_group", [3, 1], ids=["grouped-reader", "group1-reader"])
def test_fold_removes_the_shuffle_and_keeps_outputs(monkeypatch, last_group):
    """The grouped reader takes the order as ``input_order``, a group-1 reader as permuted weights."""
    from inference.passes import layout

    monkeypatch.setattr(layout, "MIN_DEPTHWISE_PER_BOUNDARY", 0.0)  # a toy graph: convert it anyway
    monkeypatch.setattr(layout, "MIN_GEMM_MACS_PER_BOUNDARY", 0.0)
    want = Session(_shuffle_net(last_group=last_group), kinds=("reference",)).run(_feeds())[0]
    kept = _shuffle_net(last_group=last_group)
    optimize(kept, switches={"fold_channel_shuffle": False})
    assert sum(n.op_type == OP for n in kept.graph.nodes) == 1
    folded = _shuffle_net(last_group=last_group)
    applied = optimize(folded, switches={"fuse_inverted_residual": False})  # keeps the reader a conv of its own
    assert "fold_channel_shuffle" in applied
    g = folded.graph
    assert not any(n.op_type == OP for n in g.nodes)
    reader = [n for n in g.nodes if n.op_type == "FusedConvNHWC" and n.attrs.get("group", 1) == last_group][-1]
    if last_group == 1:
        assert "input_order" not in reader.attrs and reader.inputs[1].endswith("__shuffled")
    else:
        assert sorted(reader.attrs["input_order"]) == list(range(12))
    fused = _shuffle_net(last_group=last_group)
    optimize(fused)  # group 1: the depthwise and its reader also become one block
    assert any(n.op_type == "InvertedResidualNHWC" for n in fused.graph.nodes) == (last_group == 1)
    for model in (kept, folded, fused):
        for kinds in (("fast", "reference"), ("reference",)):
            np.testing.assert_allclose(Session(model, kinds=kinds).run(_feeds())[0], want, rtol=RTOL, atol=ATOL)
    got = run_as_standard_onnx(folded, _feeds())  # input_order as a Gather
    np.testing.assert_allclose(got[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("group", [1, 2, 8])
def test_input_order_kernel_matches_reference(group):
    rng = np.random.default_rng(group)
    x = rng.standard_normal((2, 5, 7, 16)).astype(np.float32)
    w = np.ascontiguousarray(rng.standard_normal((24 if group < 8 else 16, 16 // group, 3, 3)).astype(np.float32)
                             .transpose(HWIO))
    order = rng.permutation(16).tolist()
    attrs = dict(group=group, pads=[1, 1, 1, 1], activation="Relu", input_order=order)
    want = fused_conv_nhwc_reference(x[..., order], w, None, None, **{**attrs, "input_order": None})
    np.testing.assert_allclose(fused_conv_nhwc_reference(x, w, None, None, **attrs), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(fused_conv_nhwc(x, w, None, None, **attrs), want, rtol=RTOL, atol=ATOL)


def test_input_order_must_be_a_permutation():
    x = np.zeros((1, 3, 3, 4), np.float32)
    w = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(KernelError, match=r"input_order must be a permutation of X's 4 channels, got \[0, 1, 1, 2\]"):
        fused_conv_nhwc(x, w, input_order=[0, 1, 1, 2])
