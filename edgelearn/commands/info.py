"""`edgelearn info model.onnx`: what a model takes, gives, and costs."""
from __future__ import annotations

from inference.flops import model_flops
from inference.onnx_import import load_model


NAME = "info"
HELP = "inputs, outputs, op histogram, parameter count and FLOPs of a model"


def add_arguments(p) -> None:
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1, help="value for symbolic dims in FLOP counts")


def run(args) -> int:
    return info(args.model, args.batch)


def info(path: str, batch: int = 1) -> int:
    model = load_model(path)
    g = model.graph
    print(f"model: {path}")
    opsets = ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in model.opset_imports.items())
    print(f"opsets: {opsets}")
    print("inputs:")
    for v in g.feed_inputs():
        print(f"  {v.name}: {v.type}")
    print("outputs:")
    for v in g.outputs:
        print(f"  {v.name}: {v.type}")
    print(f"nodes: {len(g.nodes)}")
    for op, count in g.op_histogram().items():
        print(f"  {op:<28}{count:>6}")
    print(f"parameters: {g.parameter_count():,}")
    flops, unknown = model_flops(model, batch)
    note = f" ({unknown} nodes of unknown shape not counted)" if unknown else ""
    print(f"FLOPs at batch {batch}: {flops:,}{note}")
    return 0
