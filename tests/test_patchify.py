"""Patch-embedding convolutions (``inference.kernels.patchify``): a ViT's k x k / k embedding as a
gather of patches and one product, equal to the reference convolution with its bias and
activation, any batch, a map the patches do not cover exactly; chosen by the conv binder for
large patches of a constant weight, and a residual or padding left to the general path."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.kernels.activations import activation_code
from inference.kernels.fused import reference_activation
from inference.kernels.patchify import PatchifyConv, is_patchify
from inference.ops.conv import conv as reference_conv
from tests.test_kernels import ACTIVATIONS

RNG = np.random.default_rng(21)


@pytest.mark.parametrize("activation, alpha, beta", ACTIVATIONS)
@pytest.mark.parametrize("shape, m, k", [((1, 3, 32, 32), 16, 8), ((3, 3, 35, 37), 8, 8), ((2, 4, 48, 32), 12, 16)],
                         ids=str)
def test_equals_the_reference_convolution(shape, m, k, activation, alpha, beta, threads):
    x = RNG.standard_normal(shape).astype(np.float32)
    w = (RNG.standard_normal((m, shape[1], k, k)) * 0.1).astype(np.float32)
    b = RNG.standard_normal(m).astype(np.float32)
    out_hw = (shape[2] // k, shape[3] // k)  # the last partial patches are dropped, as the conv drops them
    got = PatchifyConv(shape, w.shape, out_hw, activation_code(activation), alpha, beta)(x, w, b, None)
    want = reference_activation(reference_conv(x, w, b, kernel_shape=[k, k], strides=[k, k]), activation, alpha, beta)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_which_convolutions_take_it():
    assert is_patchify((16, 16), (16, 16), (1, 1), (0, 0, 0, 0), 1) and is_patchify((8, 8), (8, 8), (1, 1), (0,) * 4, 1)
    assert not is_patchify((4, 4), (4, 4), (1, 1), (0,) * 4, 1)  # short products: the tile is faster
    assert not is_patchify((8, 8), (4, 4), (1, 1), (0,) * 4, 1)  # overlapping
    assert not is_patchify((8, 8), (8, 8), (1, 1), (1, 1, 0, 0), 1) and not is_patchify((8, 8), (8, 8), (1, 1), (0,) * 4, 2)


def _model(k: int, residual: bool) -> tuple:
    w = (RNG.standard_normal((24, 3, k, k)) * 0.1).astype(np.float32)
    b = RNG.standard_normal(24).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[k, k])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", 24, 64 // k, 64 // k]))
    nodes.append(helper.make_node("Relu", ["y" if residual else "c"], ["out"]))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w, b


@pytest.mark.parametrize("residual", [False, True])
def test_predictor_runs_patch_embeddings_on_it(residual, monkeypatch):
    """Without a residual every run takes this path; with one (the fused conv's Z) the general one."""
    calls = []
    original = PatchifyConv.__call__

    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(PatchifyConv, "__call__", counted)
    proto, w, b = _model(16, residual)
    p = Predictor(Config(model_path=proto, kernel_replay=False))
    x = RNG.standard_normal((2, 3, 64, 64)).astype(np.float32)
    feeds = {"x": x}
    want = reference_conv(x, w, b, kernel_shape=[16, 16], strides=[16, 16])
    if residual:
        feeds["r"] = RNG.standard_normal(want.shape).astype(np.float32)
        want = want + feeds["r"]
    for _ in range(3):
        np.testing.assert_allclose(p.run(feeds)["out"], np.maximum(want, 0), rtol=1e-4, atol=1e-5)
    assert len(calls) == (0 if residual else 3)
