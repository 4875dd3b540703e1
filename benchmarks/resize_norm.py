"""Bilinear upsampling and instance/group normalization as torch exports them: ours vs onnxruntime.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/resize_norm.py [--threads 1,2] [--repeat 30]

A segmentation decoder's pieces at realistic sizes (batch 1): ``nn.Upsample(scale_factor=2,
mode="bilinear")`` with ``align_corners`` False (ONNX Resize, linear, ``half_pixel`` or
``pytorch_half_pixel``) and True, ``nn.GroupNorm`` (exported as Reshape, InstanceNormalization,
Reshape, Mul, Add) and ``nn.InstanceNorm2d(affine=True)``, each a one-module model from
``torch.onnx.export(..., dynamo=False)`` at opset 17. Both runtimes are timed in this one process in
interleaved blocks (onnxruntime with its default graph optimization, same intra-op threads), each
block after 0.3 s of the same runtime's runs; medians in ms. Both outputs are compared with torch's
module run in float64, ours checked (rtol 1e-4, atol 1e-5): onnxruntime's ``align_corners``
coordinates in float32 put it ~2e-5 off at 128 -> 256 pixels, ours (the reference's float64
coordinates) ~5e-7. At 2 threads our kernels run serial when the model is this small
(``inference.thread_policy``: under 8 MFLOP a run, counting an output element as one).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402

CASES = {  # name: (module, input shape)
    "upsample-bilinear 64x128x128": (lambda: torch.nn.Upsample(scale_factor=2, mode="bilinear"), (1, 64, 128, 128)),
    "upsample-bilinear 256x32x32": (lambda: torch.nn.Upsample(scale_factor=2, mode="bilinear"), (1, 256, 32, 32)),
    "upsample-bilinear-corners 64x128x128": (
        lambda: torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), (1, 64, 128, 128)),
    "group-norm 32g 128x64x64": (lambda: torch.nn.GroupNorm(32, 128), (1, 128, 64, 64)),
    "group-norm 32g 256x32x32": (lambda: torch.nn.GroupNorm(32, 256), (1, 256, 32, 32)),
    "instance-norm 64x128x128": (lambda: torch.nn.InstanceNorm2d(64, affine=True), (1, 64, 128, 128)),
}


def export(module: torch.nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(*shape), buf, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    args = p.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, torch {torch.__version__}")
    print("| case | threads | ours ms | onnxruntime ms | ours / onnxruntime | ours - torch | onnxruntime - torch |")
    print("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for name in args.cases.split(","):
        make, shape = CASES[name]
        module = make()
        with torch.no_grad():
            for w in module.parameters():  # not the identity affine of a fresh norm layer
                w.normal_()
        proto = export(module, shape)
        feeds = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        with torch.no_grad():
            want = module.double()(torch.from_numpy(feeds["x"]).double()).numpy()
        for t in (int(v) for v in args.threads.split(",")):
            runners = {"ours": edgelearn_runner(proto.SerializeToString(), t)[0],
                       "onnxruntime": peer_runner("onnxruntime", proto, t)}
            diff, ok = max_abs_diff(runners["ours"](feeds), [want], rtol=1e-4, atol=1e-5)
            if not ok:
                raise SystemExit(f"{name}: ours differs from torch (max abs difference {diff})")
            peer_diff, _ = max_abs_diff(runners["onnxruntime"](feeds), [want])
            ms = {k: tm.median * 1e3 for k, tm in time_interleaved(runners, feeds, args.repeat, settle_s=0.3).items()}
            print(f"| {name} | {t} | {ms['ours']:.3f} | {ms['onnxruntime']:.3f} | "
                  f"{ms['ours'] / ms['onnxruntime']:.2f}x | {diff:.1e} | {peer_diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
