"""`edgelearn compress model.onnx [--prune R [--structured]] [--binarize [LAYER ...]] [--int8 --calib D.npz |
--dynamic] [--fp16] -o out`.

Steps run in the order prune -> binarize -> int8 -> fp16 (pruning needs float weights; the
layers binarize leaves in float may still be quantized; fp16 stores whatever float weights int8
left, e.g. the layers kept in fp32). Prints the file size before/after, the
accuracy on ``--eval data.npz`` before/after when given, and the batch-1 latency of both models
in our runtime (the int8 model runs with its QDQ patterns fused into the int8 kernels).

``.npz`` files hold the inputs under ``x`` (or under the model's input names) and, for
``--eval``, the integer labels under ``y``.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from inference.errors import InputError
from inference.npz import read_npz
from inference.ir import Model
from inference.onnx_export import save_model
from inference.onnx_import import load_model

NAME = "compress"
HELP = "quantize (int8 static/dynamic), store fp16, prune or binarize a model; report size, accuracy, latency"


def add_arguments(p) -> None:
    p.add_argument("model", help="input ONNX model")
    p.add_argument("-o", "--output", required=True, help="where to write the compressed model")
    q = p.add_argument_group("int8 quantization")
    q.add_argument("--int8", action="store_true", help="static int8 (needs --calib)")
    q.add_argument("--dynamic", action="store_true", help="dynamic int8 for MatMul/Gemm (no calibration)")
    q.add_argument("--calib", metavar="DATA.npz", help="calibration inputs for --int8")
    q.add_argument("--calibration", default="minmax", choices=("minmax", "percentile", "entropy"))
    q.add_argument("--percentile", type=float, default=99.99)
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    q.add_argument("--activations", default="uint8", choices=("uint8", "int8"),
                   help="asymmetric uint8 (default) or symmetric int8 activations")
    q.add_argument("--keep-fp32", type=int, default=0, metavar="K", help="keep the K most sensitive layers in fp32")
    q.add_argument("--exclude", action="append", default=[], metavar="NODE", help="keep this node in fp32")
    q.add_argument("--sensitivity", action="store_true", help="print the per-layer sensitivity report")
    q.add_argument("--calib-batches", type=int, default=None, help="use at most this many calibration batches")
    p.add_argument("--fp16", action="store_true", help="store float weights as fp16 (computed in fp32)")
    p.add_argument("--fp16-io", action="store_true", help="with --fp16: make float inputs/outputs fp16 too")
    pr = p.add_argument_group("pruning (compress.prune)")
    pr.add_argument("--prune", type=float, default=None, metavar="RATIO",
                    help="zero this fraction of the Conv/Gemm/MatMul weights by magnitude (with --structured: "
                         "remove this fraction of each Conv's output channels)")
    pr.add_argument("--structured", action="store_true",
                    help="remove whole Conv filters and the inputs they feed: a smaller, faster graph")
    pr.add_argument("--prune-scope", default="layer", choices=("layer", "global"),
                    help="unstructured: the same ratio in every layer, or one threshold over all weights")
    pr.add_argument("--criterion", default="l1", choices=("l1", "l2"), help="--structured: filter norm to rank by")
    b = p.add_argument_group("binarization (compress.binarize)")
    b.add_argument("--binarize", nargs="*", default=None, metavar="LAYER",
                   help="1-bit weights (sign x per-channel scale, bit-packed) for the given node-name globs; "
                        "with no names: every Conv/Gemm/MatMul but the first and the last")
    p.add_argument("--eval", metavar="DATA.npz", help="report accuracy before/after on this labelled set")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for calibration and --eval")
    p.add_argument("--threads", type=int, default=None, help="threads for the latency measurement")
    p.add_argument("--repeats", type=int, default=20, help="latency runs (median reported)")


def run(args) -> int:
    if args.int8 and args.dynamic:
        raise InputError("choose one of --int8 (static) and --dynamic")
    if args.int8 and not args.calib:
        raise InputError("--int8 needs --calib DATA.npz (or use --dynamic, which needs no calibration)")
    if args.structured and args.prune is None:
        raise InputError("--structured needs --prune RATIO (the fraction of channels to remove)")
    if not (args.int8 or args.dynamic or args.fp16 or args.prune is not None or args.binarize is not None):
        raise InputError("nothing to do: give --int8, --dynamic, --fp16, --prune and/or --binarize")
    if args.threads:
        from inference.threads import set_num_threads
        set_num_threads(args.threads)
    original = load_model(args.model)
    model = original
    if args.prune is not None:
        model = apply_pruning(model, args)
    if args.binarize is not None:
        from compress.binarize import binarize, binarized_layers

        model = binarize(model, layers=args.binarize or None, skip_first_last=not args.binarize)
        print(f"binarized layers: {', '.join(binarized_layers(model))}")
    if args.int8 or args.dynamic:
        model = apply_int8(model, args)
    if args.fp16:
        from compress.fp16 import convert_fp16
        # after int8 every weight may be int8 already: then fp16 has nothing left to do
        model = convert_fp16(model, keep_io_types=not args.fp16_io, strict=not (args.int8 or args.dynamic))
    save_model(model, args.output)
    report(args, original, model)
    return 0


def apply_pruning(model: Model, args) -> Model:
    """``--prune``: magnitude pruning of the weights, or with ``--structured`` removal of Conv channels."""
    from compress.prune import apply_plan, plan_channels, prune_unstructured, sparsity

    if args.structured:
        plan = plan_channels(model, args.prune, args.criterion)
        print("pruned channels:\n  " + "\n  ".join(plan.summary()))
        pruned = apply_plan(model, plan)
        print(f"parameters: {model.graph.parameter_count():,} -> {pruned.graph.parameter_count():,}")
        return pruned
    pruned, masks = prune_unstructured(model, args.prune, args.prune_scope)
    print(f"pruned weights ({args.prune_scope}): {sparsity(pruned, list(masks))['total'] * 100:.1f} % zeros "
          f"in {len(masks)} tensors")
    return pruned


def apply_int8(model: Model, args) -> Model:
    from compress.quantize import QuantConfig, quantize_dynamic, quantize_static, sensitivity_report

    if args.dynamic:
        return quantize_dynamic(model, per_channel=not args.per_tensor, exclude=tuple(args.exclude))
    feeds = load_inputs(model, args.calib)
    cfg = QuantConfig(calibration=args.calibration, percentile=args.percentile, per_channel=not args.per_tensor,
                      activations=args.activations, exclude=tuple(args.exclude), keep_fp32=args.keep_fp32,
                      batch_size=args.batch_size, max_batches=args.calib_batches)
    if args.sensitivity:
        print("per-layer sensitivity (output rel. L2 error with only that layer in int8):")
        for s in sensitivity_report(model, feeds, cfg):
            print(f"  {s.node:<32} {s.op_type:<8} {s.error:.5f}")
    return quantize_static(model, feeds, cfg)


def load_inputs(model: Model, path: str, with_labels: bool = False) -> Any:
    """Inputs (and labels ``y``) of an .npz: key ``x`` for a single-input model, else input names."""
    arrays = read_npz(path)
    names = [v.name for v in model.graph.feed_inputs()]
    if "x" in arrays and len(names) == 1:
        feeds: Any = {names[0]: arrays["x"]}
    else:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise InputError(f"{path}: needs arrays {names} (or 'x' for a single-input model), holds {sorted(arrays)}")
        feeds = {n: arrays[n] for n in names}
    if not with_labels:
        return feeds
    if "y" not in arrays:
        raise InputError(f"{path}: --eval needs integer labels under 'y', the file holds {sorted(arrays)}")
    return feeds, arrays["y"]


def runnable(model: Model):
    """A session as the Predictor would build it, with the QDQ patterns fused into int8 ops."""
    from compress.quantize import clone
    from inference.passes import optimize
    from inference.passes.qdq_fusion import fuse_qdq
    from inference.session import CONSTANT_WEIGHT_KINDS, Session

    m = clone(model)
    fuse_qdq(m)
    optimize(m)
    return Session(m, kinds=CONSTANT_WEIGHT_KINDS)  # the Predictor's kinds: its weights never change


def accuracy(session, feeds: dict, labels: np.ndarray, batch_size: int) -> float:
    inputs = session.graph.feed_inputs()
    n, hits = len(labels), 0
    for start in range(0, n, batch_size):
        batch = {k: np.asarray(v[start:start + batch_size]).astype(_dtype(session, k, inputs))
                 for k, v in feeds.items()}
        out = np.asarray(session.run(batch)[0])
        hits += int((out.reshape(len(out), -1).argmax(axis=1) == labels[start:start + batch_size]).sum())
    return hits / n


def _dtype(session, name: str, inputs) -> np.dtype:
    for v in inputs:
        if v.name == name and v.type is not None:
            return v.type.dtype
    return np.dtype(np.float32)


def latency_ms(session, feeds: dict, repeats: int) -> float:
    one = {k: np.asarray(v[:1]).astype(_dtype(session, k, session.graph.feed_inputs())) for k, v in feeds.items()}
    session.run(one)  # warm up: numba compiles or loads its cache here, outside the timing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(one)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def report(args, before: Model, after: Model) -> None:
    size0, size1 = os.path.getsize(args.model), os.path.getsize(args.output)
    print(f"size:     {size0:>12,d} B -> {size1:>12,d} B  ({size1 / size0:.3f}x)  written to {args.output}")
    s0, s1 = runnable(before), runnable(after)
    if args.eval:
        feeds, labels = load_inputs(before, args.eval, with_labels=True)
        a0 = accuracy(s0, feeds, labels, args.batch_size)
        a1 = accuracy(s1, _retyped(after, feeds), labels, args.batch_size)
        print(f"accuracy: {a0 * 100:11.2f} %  -> {a1 * 100:11.2f} %   "
              f"({(a1 - a0) * 100:+.2f} points, {len(labels)} samples)")
        sample = feeds
    elif args.calib:
        sample = load_inputs(before, args.calib)
    else:
        sample = None
    if sample is not None:
        l0, l1 = latency_ms(s0, sample, args.repeats), latency_ms(s1, _retyped(after, sample), args.repeats)
        print(f"latency:  {l0:11.2f} ms -> {l1:11.2f} ms  ({l1 / l0:.2f}x, batch 1, median of {args.repeats})")
    else:
        print("latency:  give --eval or --calib data to measure it")


def _retyped(model: Model, feeds: dict) -> dict:
    """Feeds cast to the compressed model's input types (fp16 inputs with --fp16-io)."""
    types = {v.name: v.type for v in model.graph.feed_inputs()}
    return {k: np.asarray(v).astype(types[k].dtype) if types.get(k) is not None else v for k, v in feeds.items()}
