"""Graph passes, applied in order by :func:`optimize`; each can be switched off by name.

``Config.optimize_graph`` turns the whole pipeline on or off, ``Config.fusion`` the passes that
merge nodes, and ``Config.passes = {"fold_constants": False, ...}`` any single pass.

A model saved after the pipeline (``edgelearn optimize``) carries :data:`OPTIMIZED_KEY` in its
metadata, listing the passes that changed it; the Predictor then loads it without running them.
A pass whose change is a choice that can be taken back (Winograd's marks) has an ``undo``: switched
off, it runs that instead, also on such a saved model, so the switch holds whatever the file says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from inference.ir import Model
from inference.passes.channel_shuffle import fuse_channel_shuffle
from inference.passes.common_subexpressions import eliminate_common_subexpressions
from inference.passes.constant_folding import fold_constants, lift_constant_nodes
from inference.passes.concat_convs import merge_concat_convs
from inference.passes.conv_bn import fold_conv_batchnorm
from inference.passes.eliminate import eliminate_dead_nodes, eliminate_identity
from inference.passes.fusion import fuse_conv_epilogue, fuse_matmul_epilogue
from inference.passes.integer_to_qdq import integer_to_qdq
from inference.passes.inverted_residual import fuse_inverted_residual
from inference.passes.layer_norm import fuse_layer_norm
from inference.passes.lift_1d import lift_1d_to_2d
from inference.passes.layout import to_nhwc
from inference.passes.matmul_add import fuse_matmul_add
from inference.passes.pad_conv import fold_pad_into_conv
from inference.passes.qdq_fusion import fuse_qdq
from inference.passes.quantized_add import fuse_quantized_add
from inference.passes.qlinear_to_qdq import qlinear_to_qdq
from inference.passes.shuffle_fold import fold_channel_shuffle
from inference.passes.split_convs import split_conv_outputs
from inference.passes.squeeze_excite import fuse_squeeze_excite
from inference.passes.transpose_matmul import fuse_transpose_matmul
from inference.passes.transpose_reshape import simplify_transpose_reshape
from inference.passes.widen_float16 import widen_float16
from inference.passes.winograd import choose_winograd, unmark_winograd


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Model], bool]  # returns whether the graph changed
    is_fusion: bool = False
    undo: Callable[[Model], bool] | None = None  # what switching it off does to a graph it has changed


PIPELINE: tuple[Pass, ...] = (
    # first: every pass after it sees a half-precision model as the float32 one it computes
    Pass("widen_float16", widen_float16),
    # before the passes that must run ahead of folding: they read constants (a QDQ scale, a GELU's
    # or a Clip's constants in an int8 epilogue) as initializers, which exporters write as Constant nodes
    Pass("lift_constant_nodes", lift_constant_nodes),
    # before fuse_qdq: a QLinearConv/QLinearMatMul model fuses as its QDQ form
    Pass("qlinear_to_qdq", qlinear_to_qdq),
    Pass("integer_to_qdq", integer_to_qdq),  # onnxruntime's dynamic quantization, as fuse_qdq reads it
    # first: folding would turn the int8 weights of a QDQ model back into fp32 constants
    Pass("fuse_qdq", fuse_qdq, is_fusion=True),
    Pass("fuse_quantized_add", fuse_quantized_add, is_fusion=True),  # a quantized residual's DQ, DQ, Add, Q
    Pass("fold_constants", fold_constants),
    Pass("eliminate_identity", eliminate_identity),
    Pass("eliminate_dead_nodes", eliminate_dead_nodes),
    Pass("simplify_transpose_reshape", simplify_transpose_reshape),
    Pass("fuse_transpose_matmul", fuse_transpose_matmul, is_fusion=True),  # after: sees each Transpose composed
    Pass("fuse_channel_shuffle", fuse_channel_shuffle, is_fusion=True),
    Pass("fuse_layer_norm", fuse_layer_norm, is_fusion=True),  # opset < 17's written-out LayerNorm
    Pass("fuse_matmul_add", fuse_matmul_add, is_fusion=True),  # before: a Dense layer's BatchNorm folds into its Gemm
    Pass("fold_conv_batchnorm", fold_conv_batchnorm, is_fusion=True),
    Pass("fold_pad_into_conv", fold_pad_into_conv, is_fusion=True),
    Pass("lift_1d_to_2d", lift_1d_to_2d),  # after BatchNorm and Pad fold into the 1-D convs; before their epilogues
    Pass("fuse_conv_epilogue", fuse_conv_epilogue, is_fusion=True),
    Pass("fuse_matmul_epilogue", fuse_matmul_epilogue, is_fusion=True),
    Pass("split_conv_outputs", split_conv_outputs, is_fusion=True),  # before the layout: parts convert alone
    Pass("layout_nhwc", to_nhwc, is_fusion=True),  # after the fusions: converts FusedConv chains
    Pass("fold_channel_shuffle", fold_channel_shuffle, is_fusion=True),  # shuffles the layout made NHWC
    Pass("merge_concat_convs", merge_concat_convs, is_fusion=True),  # the Concats the layout made NHWC
    Pass("fuse_inverted_residual", fuse_inverted_residual, is_fusion=True),  # MobileNetV2's blocks, made NHWC
    Pass("fuse_squeeze_excite", fuse_squeeze_excite, is_fusion=True),  # MobileNetV3's gates, made NHWC
    # after the fusions, which absorb only values read once: merging would give some a second reader
    Pass("eliminate_common_subexpressions", eliminate_common_subexpressions),
    # last: sees each channels-last conv as the others left it
    Pass("winograd_conv", choose_winograd, undo=unmark_winograd),
)


OPTIMIZED_KEY = "edgelearn.optimized"

EXTENSIONS: list[Pass] = []  # passes other packages register (training expands Gradient ops)


def register_pass(p: Pass) -> None:
    """Add a pass that runs before the built-in pipeline; how packages above inference extend it."""
    if all(e.name != p.name for e in EXTENSIONS):
        EXTENSIONS.append(p)


def _check_switches(switches: dict[str, bool]) -> None:
    unknown = set(switches) - {p.name for p in PIPELINE + tuple(EXTENSIONS)}
    if unknown:
        from inference.errors import ConfigError

        raise ConfigError(f"unknown passes {sorted(unknown)}; known: {[p.name for p in PIPELINE]}")


def undo_switched_off(model: Model, switches: dict[str, bool] | None) -> list[str]:
    """Take back what the passes ``switches`` turns off left in ``model`` (those with an ``undo``);
    returns the names of those that changed it. How a saved optimized model honours a switch."""
    switches = switches or {}
    _check_switches(switches)
    return [p.name for p in tuple(EXTENSIONS) + PIPELINE
            if p.undo is not None and switches.get(p.name) is False and p.undo(model)]


def optimize(model: Model, fusion: bool = True, switches: dict[str, bool] | None = None,
             max_rounds: int = 3) -> list[str]:
    """Run the enabled passes until nothing changes; returns the names of passes that changed it
    (a switched-off pass's ``undo`` among them when it changed the graph)."""
    switches = switches or {}
    _check_switches(switches)
    applied: list[str] = undo_switched_off(model, switches)
    if not model.graph.value_info:
        from inference.shape_inference import infer_shapes

        infer_shapes(model)  # fusions check ranks and dtypes
    for _ in range(max_rounds):
        changed = False
        for p in tuple(EXTENSIONS) + PIPELINE:
            if not switches.get(p.name, fusion or not p.is_fusion):
                continue
            if p.run(model):
                applied.append(p.name)
                changed = True
        if not changed:
            break
    return applied


def mark_optimized(model: Model, applied: list[str]) -> None:
    """Record in the metadata that the pipeline ran to its end, and which passes changed the model."""
    model.metadata[OPTIMIZED_KEY] = ",".join(dict.fromkeys(applied))


def recorded_passes(model: Model) -> list[str] | None:
    """The passes a saved model says it went through; None if it was never marked optimized."""
    value = model.metadata.get(OPTIMIZED_KEY)
    if value is None:
        return None
    return [p for p in value.split(",") if p]
