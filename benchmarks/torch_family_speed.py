"""Speech, sensor, segmentation and ViT models as PyTorch exports them (``benchmarks/torch_families.py``):
ours against onnxruntime in one process, blocks interleaved, both checked against torch.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/torch_family_speed.py [--threads 1,2]

Prints per family, batch and thread count the median ms of each runtime, the ratio, each one's
largest difference from torch, and how our Predictor ran it (replayed or step by step).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.torch_families import FAMILIES, build, export, run_torch, sample  # noqa: E402
from edgelearn.commands.bench import edgelearn_runner, peer_runner, time_interleaved  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--repeat", type=int, default=60)
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of: " + ", ".join(FAMILIES))
    args = p.parse_args()
    print("| model | batch | threads | ours ms | onnxruntime ms | ours / onnxruntime | ours vs torch | ort vs torch "
          "| our run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.families.split(","):
        module = build(name)
        data = export(module, sample(name, 2))
        proto = onnx.load_from_string(data)
        for batch in (int(v) for v in args.batch.split(",")):
            x = sample(name, batch, seed=batch)
            want = run_torch(module, x)
            for t in (int(v) for v in args.threads.split(",")):
                ours, pred = edgelearn_runner(data, t)
                runners = {"ours": ours, "onnxruntime": peer_runner("onnxruntime", proto, t)}
                diffs = {k: float(np.max(np.abs(r({"x": x})[0] - want))) for k, r in runners.items()}
                if not np.allclose(runners["ours"]({"x": x})[0], want, rtol=1e-4, atol=1e-5):
                    raise SystemExit(f"{name}: ours differs from torch (max abs difference {diffs['ours']})")
                ms = {k: tm.median * 1e3 for k, tm in time_interleaved(runners, {"x": x}, args.repeat,
                                                                     settle_s=0.3).items()}
                report = pred.replay_report()  # one input shape per Predictor here
                how = ("replayed" if "replayed" in report and "step by step" not in report else
                       "step by step" if "step by step" in report else report)
                how += ", batch split over threads" if "batch part" in report else ""
                print(f"| {name} | {batch} | {t} | {ms['ours']:.3f} | {ms['onnxruntime']:.3f} | "
                      f"{ms['ours'] / ms['onnxruntime']:.2f}x | {diffs['ours']:.1e} | {diffs['onnxruntime']:.1e} | "
                      f"{how} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
