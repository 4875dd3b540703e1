"""The activation arena against numpy's allocation: the same model in two Predictors, one with
``Config.memory_arena`` (the default) and one without, interleaved in one process. Prints each
one's median latency, their ratio, the arena's bytes and what one run allocates (tracemalloc's
peak over a run: activations and scratch with numpy; what stays outside the arena with it).

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/arena.py [--threads 1,2]
"""
from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, time_interleaved  # noqa: E402
from inference import zoo  # noqa: E402
from inference.onnx_export import model_to_proto  # noqa: E402

MODELS = ("mobilenet_v2", "resnet18", "transformer", "squeezenet", "shufflenet", "mobilenet_v3_style",
          "efficientnet_lite0", "yolo_style", "yolov8_style")


def _proto(name: str):
    return model_to_proto(zoo.ZOO[name]()) if name in zoo.ZOO else zoo.light_model(name)


def _allocated(run, feeds: dict) -> int:
    tracemalloc.start()
    try:
        run(feeds)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", default="1")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    print("| model | batch | threads | arena ms | numpy ms | arena / numpy | arena MiB | allocated per run, arena / numpy |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        proto = _proto(name)
        for batch in (int(v) for v in args.batch.split(",")):
            x = np.random.default_rng(0).standard_normal(zoo.input_shape(name, batch)).astype(np.float32)
            feeds = {proto.graph.input[0].name: x}
            for t in (int(v) for v in args.threads.split(",")):
                arena, pred = edgelearn_runner(proto.SerializeToString(), t)
                plain, _ = edgelearn_runner(proto.SerializeToString(), t, memory_arena=False)
                for a, b in zip(arena(feeds), plain(feeds)):
                    if not np.array_equal(a, b):
                        raise SystemExit(f"{name}: the arena's outputs differ from numpy allocation's")
                runners = {"arena": arena, "numpy": plain}
                ms = {k: tm.median * 1e3 for k, tm in time_interleaved(runners, feeds, args.repeat, settle_s=0.3).items()}
                held = pred.arena_bytes
                print(f"| {name} | {batch} | {t} | {ms['arena']:.2f} | {ms['numpy']:.2f} | "
                      f"{ms['arena'] / ms['numpy']:.3f} | {held / 2**20:.2f} | "
                      f"{_allocated(arena, feeds) / 2**20:.2f} / {_allocated(plain, feeds) / 2**20:.2f} MiB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
