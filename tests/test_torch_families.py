"""Speech, sensor, segmentation and ViT models as PyTorch exports them (``benchmarks/torch_families.py``):
torch's outputs at the exported batch and another, every op that does the work on a fast kernel,
and every family but the UNet replayed (each had a numpy step that kept it step by step: the
recurrent ops, 1-D convolutions, a class-token Concat, a 5-D permute, a ReduceMean; the YOLO's
channel Slices and NCHW nearest Resize; a CRNN's LogSoftmax and zero LSTM state; a TCN's PReLUs and
the copies around its small-map depthwise convs; PointNet's max). The UNet's
ConvTranspose multiplies with numpy's BLAS, which a replay cannot repeat: it runs step by step,
its other numpy steps (linear Resize, InstanceNormalization, a middle-axis Softmax, a per-channel
affine) now numba."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor

pytestmark = pytest.mark.slow  # twelve torch exports, each run six times
torch = pytest.importorskip("torch")
from benchmarks.torch_families import FAMILIES, build, export, run_torch, sample  # noqa: E402

#: per family, the ops that do its work, which must run on fast kernels
WORK = {"lstm": {"LSTM"}, "gru": {"GRU", "ReduceMean"}, "conv1d": {"FusedConv", "FusedConvNHWC", "MaxPool", "MaxPoolNHWC"},
        "unet": {"ConvTranspose", "Resize", "InstanceNormalization", "Softmax"}, "vit": {"Softmax", "LayerNormalization"},
        "causal": {"Transpose", "Softmax"},
        "yolo": {"FusedConvNHWC", "Slice", "Split", "Concat", "MaxPoolNHWC", "Resize", "Softmax", "ReduceSum", "Sigmoid"},
        "deeplab": {"FusedConvNHWC", "Expand", "Resize", "AveragePoolNHWC"},
        "convnext": {"FusedConvNHWC", "LayerNormalization", "FusedMatMul", "ReduceMean"},
        "crnn": {"FusedConvNHWC", "MaxPoolNHWC", "LSTM", "LogSoftmax"},
        "tcn": {"PRelu", "InstanceNormalization", "Conv", "FusedConv"},
        "pointnet": {"FusedConv", "Conv", "ReduceMax"}}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_runs_fast_and_replays(name):
    module = build(name)
    p = Predictor(Config(model_path=export(module, sample(name, 2)), num_threads=1))
    for batch in (2, 1, 2, 2, 2, 2):
        x = sample(name, batch, seed=batch)
        np.testing.assert_allclose(p.run({"x": x})["y"], run_torch(module, x), rtol=1e-4, atol=1e-5)
    kinds = {s.node.op_type: s.kernel.kind for s in p.session.steps if s.node.op_type in WORK[name]}
    assert kinds and "reference" not in kinds.values(), kinds
    # a replay is kept only when a run on random inputs matched the step-by-step run: all the work in numba
    replayed = f"x [2, {', '.join(map(str, FAMILIES[name][1][1:]))}] at 1 thread(s): replayed" in p.replay_report()
    assert replayed == (name != "unet"), p.replay_report()


def test_a_vit_counts_its_flops_and_runs_batch_1_serial():
    """Its head splits' reshape targets are computed from ``Shape`` at run time; their shapes are
    known now (the constant folding infers the types downstream of what it folds), and data-moving
    ops count 0 FLOPs whatever their shapes, so the total is known and batch 1 runs serial at two
    threads (threaded it took twice as long)."""
    from inference.flops import row_flops
    from inference.thread_policy import MIN_THREADED_FLOPS, serial_rows
    p = Predictor(Config(model_path=export(build("vit"), sample("vit", 2)), num_threads=2))
    g = p.model.graph
    assert 0 < row_flops(g) < MIN_THREADED_FLOPS and serial_rows(g) >= 1


def test_a_yolo_under_a_dynamic_batch_runs_channels_last_with_its_chunks_folded():
    """``chunk`` exports as ``Shape -> Gather(1) -> Add -> Div -> Mul -> Slice``: the channel count
    it gathers is static under a dynamic batch, so the arithmetic folds, the Slices' outputs get
    static shapes, the next block's ``Shape`` folds in turn, and the whole backbone is one
    channels-last region (it had stayed NCHW: 1.9x onnxruntime's time)."""
    p = Predictor(Config(model_path=export(build("yolo"), sample("yolo", 2)), num_threads=1))
    ops = [n.op_type for n in p.model.graph.nodes]
    assert "FusedConv" not in ops and "Conv" not in ops and ops.count("FusedConvNHWC") == 16, ops
    g = p.model.graph
    chunks = [n for n in g.nodes if n.op_type == "Slice" and g.type_of(n.inputs[0]).rank == 4]
    assert len(chunks) == 4 and all(int(g.initializers[n.inputs[3]][0]) == 3 for n in chunks)
    assert ops.count("Shape") == 1  # the head's batch, which stays symbolic


def test_a_convnext_keeps_its_blocks_channels_last_without_transposes():
    """Each block's ``permute(0, 2, 3, 1)`` and ``permute(0, 3, 1, 2)`` join the channels-last region
    as Identities (what they make is the region's NHWC tensor), so the residual stream stays NHWC
    from the stem to the pooling, the 7x7 depthwise convs run the channels-last stencil, and the only
    transpose left is the one to the final ReduceMean (each block had cut its depthwise conv into a
    region of its own that did not pay: NCHW, 1.35x onnxruntime's time)."""
    p = Predictor(Config(model_path=export(build("convnext"), sample("convnext", 2)), num_threads=1))
    ops = [n.op_type for n in p.model.graph.nodes]
    assert ops.count("Transpose") == 1 and ops.count("FusedConvNHWC") == 6 and "Conv" not in ops, ops
    dw = [s for s in p.session.steps if s.node.op_type == "FusedConvNHWC" and s.node.attrs.get("group", 1) > 1]
    assert len(dw) == 4
