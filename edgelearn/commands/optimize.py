"""`edgelearn optimize in.onnx -o out.onnx [--disable PASS ...] [--no-fusion] [--keep-standard]`.

Runs the graph passes once, ahead of time, and saves the result, so a device loads the optimized
graph directly: the file records in its metadata (``edgelearn.optimized``) which passes changed
it, and the Predictor then runs none (``Config(reoptimize=True)`` forces them; they are safe to
run again). Fused ops are saved in our ``edgelearn`` domain, which only this runtime reads;
``--keep-standard`` writes them back as the standard ops they stand for (Conv/MatMul + Add +
activation, QDQ around the int8 ones) so onnxruntime and ``onnx.checker`` accept the file. That
file is not marked optimized: our runtime fuses it again when it loads it.
"""
from __future__ import annotations

import os

import onnx

from inference.errors import InvalidModelError
from inference.onnx_export import save_model
from inference.onnx_import import load_model
from inference.passes import PIPELINE, mark_optimized, optimize
from inference.specialize import symbolic_image_inputs

NAME = "optimize"
HELP = "run the graph passes ahead of time and save the optimized model (loads without passes)"


def add_arguments(p) -> None:
    p.add_argument("model", help="input ONNX model")
    p.add_argument("-o", "--output", required=True, help="where to write the optimized model")
    p.add_argument("--disable", action="append", default=[], metavar="PASS",
                   help=f"switch a pass off (repeatable): {', '.join(x.name for x in PIPELINE)}")
    p.add_argument("--no-fusion", action="store_true", help="switch off every pass that merges nodes")
    p.add_argument("--keep-standard", action="store_true",
                   help="write fused ops as standard ONNX ops (for other runtimes)")


def run(args) -> int:
    model = load_model(args.model)
    before = model.graph.op_histogram()
    symbolic = symbolic_image_inputs(model)
    if symbolic:
        print(f"note: inputs {symbolic} have symbolic image sizes, so the channels-last and fusion passes that "
              "need them leave those convolutions as they are; a Predictor given the original model optimizes "
              "it per size it is fed (inference.specialize), or export the model with fixed sizes")
    applied = optimize(model, fusion=not args.no_fusion, switches={name: False for name in args.disable})
    if not args.keep_standard:
        mark_optimized(model, applied)
    save_model(model, args.output, standard=args.keep_standard)
    try:
        onnx.checker.check_model(args.output, full_check=args.keep_standard)
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"{args.output}: the optimized model fails onnx.checker: {e}") from e
    after = load_model(args.output).graph.op_histogram()
    print_report(before, after, list(dict.fromkeys(applied)))
    size0, size1 = os.path.getsize(args.model), os.path.getsize(args.output)
    print(f"size: {size0:,d} B -> {size1:,d} B; written to {args.output}"
          + (" (standard ONNX)" if args.keep_standard else " (loads without passes)"))
    return 0


def print_report(before: dict[str, int], after: dict[str, int], applied: list[str]) -> None:
    """Node counts per op type before and after, then the totals and the passes that changed the graph."""
    ops = sorted(set(before) | set(after), key=lambda k: (-max(before.get(k, 0), after.get(k, 0)), k))
    width = max([len(k) for k in ops] + [7])
    print(f"{'op type':<{width}}  {'before':>7}  {'after':>7}")
    for op in ops:
        print(f"{op:<{width}}  {before.get(op, 0):>7}  {after.get(op, 0):>7}")
    print(f"{'total':<{width}}  {sum(before.values()):>7}  {sum(after.values()):>7}")
    print(f"passes that changed the graph: {', '.join(applied) or 'none'}")
