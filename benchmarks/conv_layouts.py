"""A model's convolutions in both layouts: the NCHW tile beside the channels-last gathered GEMM
and onnxruntime, per layer (ResNet-18's, squeezenet's or shufflenet's).

Run from the project root:
  env -u OPENBLAS_CORETYPE python benchmarks/conv_layouts.py [--model resnet18|squeezenet|shufflenet] [--rounds 12]

Why: the layout pass decides where convolutions run channels-last (``inference.passes.layout``);
this says, layer by layer, which kernel is faster: ``nchw`` is FusedConv's packed kernel (the
implicit-GEMM tile with pixels along its lanes, ``inference.kernels.conv_f32``), ``nhwc`` is
FusedConvNHWC's (output channels along the lanes, patches gathered from the padded input,
``inference.kernels.nhwc``), each called on its own layout's tensors; onnxruntime runs a one-node
Conv + Relu model. Layers run in model order, every layer once per round, so each layer's weights
arrive from L3 as in a whole model (46 MB of them). One thread; each cell is the minimum CPU time
(``time.thread_time``: time other jobs take the core is not counted) over the rounds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import peer_runner  # noqa: E402
from inference.kernels.conv import fused_conv, packed_conv_binder  # noqa: E402
from inference.kernels.nhwc import HWIO, fused_conv_nhwc_packed, nhwc_binder  # noqa: E402
from inference.threads import set_num_threads  # noqa: E402



def _fire(c: int, h: int, squeeze: int, expand: int) -> list[tuple]:
    return [(c, h, squeeze, 1, 1), (squeeze, h, expand, 1, 1), (squeeze, h, expand, 3, 1)]


def _shuffle_unit(c: int, h: int, stride: int = 1, c_in: int | None = None) -> list[tuple]:
    """A shufflenet unit's grouped 1x1, depthwise 3x3 and grouped 1x1 (4 groups)."""
    return [(c_in or c, h, c, 1, 1, 4), (c, h, c, 3, stride, c), (c, h // stride, c, 1, 1, 4)]


# (C, H, M, kernel, stride[, group]) of each model's convolutions in order; pads k // 2
LAYERS = {
    "resnet18": ([(3, 224, 64, 7, 2)] + [(64, 56, 64, 3, 1)] * 4
                 + [(64, 56, 128, 3, 2), (128, 28, 128, 3, 1), (64, 56, 128, 1, 2)] + [(128, 28, 128, 3, 1)] * 2
                 + [(128, 28, 256, 3, 2), (256, 14, 256, 3, 1), (128, 28, 256, 1, 2)] + [(256, 14, 256, 3, 1)] * 2
                 + [(256, 14, 512, 3, 2), (512, 7, 512, 3, 1), (256, 14, 512, 1, 2)] + [(512, 7, 512, 3, 1)] * 2),
    "squeezenet": ([(3, 224, 64, 3, 2)] + _fire(64, 55, 16, 64) + _fire(128, 55, 16, 64) + _fire(128, 27, 32, 128)
                   + _fire(256, 27, 32, 128) + _fire(256, 13, 48, 192) + _fire(384, 13, 48, 192)
                   + _fire(384, 13, 64, 256) + _fire(512, 13, 64, 256) + [(512, 13, 1000, 1, 1)]),
    "shufflenet": ([(3, 224, 24, 3, 2)] + _shuffle_unit(112, 56, 2, c_in=24) + _shuffle_unit(136, 28) * 3
                   + _shuffle_unit(136, 28, 2) + _shuffle_unit(272, 14) * 7 + _shuffle_unit(272, 14, 2)
                   + _shuffle_unit(544, 7) * 3),
}
SIDES = ("nchw", "nhwc", "onnxruntime")


def layer(rng, c: int, h: int, m: int, k: int, s: int, group: int = 1) -> tuple[dict, float]:
    """The three runners of one layer, and the largest difference of our outputs from onnxruntime's."""
    x = rng.standard_normal((1, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((m, c // group, k, k), dtype=np.float32) / np.sqrt(c // group * k * k)).astype(np.float32)
    b = rng.standard_normal(m, dtype=np.float32)
    attrs = dict(pads=[k // 2] * 4, strides=[s, s], kernel_shape=[k, k], group=group, activation="Relu")
    nchw = packed_conv_binder(fused_conv)(**attrs)
    nhwc = nhwc_binder(fused_conv_nhwc_packed, constant_weights=True)(**attrs)  # bound once, as in a session
    w_hwio, x_nhwc = np.ascontiguousarray(w.transpose(HWIO)), np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[s, s], kernel_shape=[k, k],
                            group=group)
    graph = helper.make_graph([conv, helper.make_node("Relu", ["c"], ["y"])], "layer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    ort = peer_runner("onnxruntime", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), 1)
    runners = {"nchw": lambda: nchw(x, w, b), "nhwc": lambda: nhwc(x_nhwc, w_hwio, b),
               "onnxruntime": lambda: ort({"x": x})[0]}
    want = runners["onnxruntime"]()
    diff = max(float(np.abs(runners["nchw"]() - want).max()),
               float(np.abs(runners["nhwc"]().transpose(0, 3, 1, 2) - want).max()))
    return runners, diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(LAYERS), default="resnet18")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    set_num_threads(1)
    rng = np.random.default_rng(0)
    layers = LAYERS[args.model]
    cells = [layer(rng, *spec) for spec in layers]
    best = [dict.fromkeys(SIDES, float("inf")) for _ in layers]
    for _ in range(args.rounds):
        for side in SIDES:
            for (runners, _), cell in zip(cells, best):
                t = time.thread_time()
                runners[side]()
                cell[side] = min(cell[side], time.thread_time() - t)
    print("| layer | nchw ms | nhwc ms | onnxruntime ms | nchw/ort | nhwc/ort | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for (c, h, m, k, s, *group), cell, (_, diff) in zip(layers, best, cells):
        ort_t = cell["onnxruntime"]
        groups = f" g{group[0]}" if group else ""
        print(f"| {c}x{h}x{h} -> {m}, {k}x{k}/{s}{groups} | {cell['nchw'] * 1e3:.3f} | {cell['nhwc'] * 1e3:.3f} | "
              f"{ort_t * 1e3:.3f} | {cell['nchw'] / ort_t:.2f}x | {cell['nhwc'] / ort_t:.2f}x | {diff:.1e} |")
    tot = {side: sum(cell[side] for cell in best) for side in SIDES}
    print(f"| all | {tot['nchw'] * 1e3:.2f} | {tot['nhwc'] * 1e3:.2f} | {tot['onnxruntime'] * 1e3:.2f} | "
          f"{tot['nchw'] / tot['onnxruntime']:.2f}x | {tot['nhwc'] / tot['onnxruntime']:.2f}x | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
