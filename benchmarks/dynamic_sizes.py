"""CNNs exported with symbolic image sizes: our Predictor specialising its graph to the size fed
(``inference.specialize``), the same with that switched off (one generic graph, which stays NCHW),
the model exported with static sizes, and onnxruntime on the dynamic model; one process, the
runtimes' blocks interleaved.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/dynamic_sizes.py [--threads 1,2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402
from inference import zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402

MODELS = {"mobilenet_v2": zoo.mobilenet_v2, "resnet18": zoo.resnet18}


def dynamic(proto):
    """``proto`` with its image input's height and width made symbolic (as a dynamic-axes export)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del proto.graph.value_info[:]
    return proto


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    print("| model | threads | specialised ms | generic ms | static export ms | onnxruntime ms | "
          "specialised/static | specialised/onnxruntime |")
    print("|---|---|---|---|---|---|---|---|")
    for name, build in MODELS.items():
        static = model_to_proto(build(size=args.size))
        flexible = dynamic(model_to_proto(build(size=args.size)))
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        feeds = {static.graph.input[0].name: x}
        for t in (int(v) for v in args.threads.split(",")):
            runners = {"specialised": edgelearn_runner(flexible.SerializeToString(), t)[0],
                       "generic": edgelearn_runner(flexible.SerializeToString(), t, specialize_sizes=0)[0],
                       "static": edgelearn_runner(static.SerializeToString(), t)[0],
                       "onnxruntime": peer_runner("onnxruntime", flexible, t)}
            outs = {k: r(feeds) for k, r in runners.items()}
            for k, v in outs.items():
                worst, ok = max_abs_diff(v, outs["onnxruntime"])
                if not ok:
                    raise SystemExit(f"{name}: {k} differs from onnxruntime (max abs difference {worst})")
            ms = {k: tm.median * 1e3 for k, tm in time_interleaved(runners, feeds, args.repeat, settle_s=0.3).items()}
            print(f"| {name} | {t} | {ms['specialised']:.2f} | {ms['generic']:.2f} | {ms['static']:.2f} | "
                  f"{ms['onnxruntime']:.2f} | {ms['specialised'] / ms['static']:.2f}x | "
                  f"{ms['specialised'] / ms['onnxruntime']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
