"""The epilogue walker both fusion passes share: grow a fused product node over the elementwise
nodes that follow it, then put it in the graph.

A product (float Conv/MatMul, or int8 QConv/QMatMul) is followed, in this order and each at
most once, by: [Add of a constant bias] [Add of a residual tensor] [activation]
[QuantizeLinear]. The activation may be the pair ``Mul(x, Sigmoid(x))`` (SiLU, as exporters write
it), taken in as our ``Silu``, or the five nodes of GELU's erf form (:func:`gelu_erf_chain`), as
``Gelu``, or the nine or ten of its tanh approximation (:func:`gelu_tanh_chain`), as ``GeluTanh``.
Which stages a fused op can take is told by the slots it offers: a bias callback (the op decides
what bias shape it can carry and where it goes), the input slot of the residual, and, for the
int8 ops, the slots of the output scale and zero point. Why one walker:
the rules of what may be absorbed (single reader, static equal shapes for a residual, which
activations fuse) are the same for float and int8, and must stay the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.passes._rewrite import (constant_value, is_plain, next_plain, other_input, readers, scalar_is,
                                      single_reader)

FUSABLE_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu")

# given the name and value of a constant added to the product, put it in the fused node's bias
# slot and return True, or return False when the op cannot carry it
TakeBias = Callable[[Graph, Node, str, np.ndarray], bool]


@dataclass(frozen=True)
class EpilogueSlots:
    """Where a fused op takes what it absorbs; ``None`` means it cannot absorb that stage."""

    residual: int
    take_bias: TakeBias | None = None
    quant_scale: int | None = None  # the zero point goes in the slot after it


def activation_params(g: Graph, node: Node, opset: int) -> tuple[str, float, float] | None:
    """(activation attribute, alpha, beta) for a fusable activation node, None if not fusable."""
    op, a = node.op_type, node.attrs
    if node.domain != "" or op not in FUSABLE_ACTIVATIONS:
        return None
    if op == "Clip":
        if opset < 11:
            return "Clip", float(a.get("min", -math.inf)), float(a.get("max", math.inf))
        bounds = []
        for i, default in ((1, -math.inf), (2, math.inf)):
            name = node.input_at(i)
            v = constant_value(g, name) if name else np.asarray(default)
            if v is None or v.size != 1:
                return None
            bounds.append(float(v.reshape(())))
        return "Clip", bounds[0], bounds[1]
    if op == "LeakyRelu":
        return op, float(a.get("alpha", 0.01)), 0.0
    if op == "HardSigmoid":
        return op, float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if op == "Gelu":
        approx = a.get("approximate", "none")
        return ("Gelu" if approx == "none" else "GeluTanh"), 0.0, 0.0
    return op, 0.0, 0.0


def silu_pair(g: Graph, x: str) -> tuple[Node, Node] | None:
    """(Sigmoid, Mul) when ``x`` is read by exactly those two, as ``Mul(x, Sigmoid(x))`` (either
    order) and neither ``x`` nor the sigmoid is a graph output: SiLU, one activation."""
    if x in g.output_names:
        return None
    found = readers(g, x)
    if len(found) != 2:
        return None
    sig = next((n for n in found if n.op_type == "Sigmoid" and n.domain == ""), None)
    mul = next((n for n in found if n.op_type == "Mul" and n.domain == ""), None)
    if sig is None or mul is None or len(sig.outputs) != 1 or single_reader(g, sig.outputs[0]) is not mul:
        return None
    return (sig, mul) if sorted(mul.inputs) == sorted([x, sig.outputs[0]]) else None


def gelu_erf_chain(g: Graph, x: str) -> tuple[list[Node], str] | None:
    """(its nodes in order, ``"Gelu"``) when ``x`` is read only by the erf form of GELU as
    exporters write it, ``x * 0.5 * (1 + erf(x / sqrt 2))``: torch.onnx's ``Mul(Mul(x, Add(Erf(Div(x,
    sqrt 2)), 1)), 0.5)``, or with ``Mul(x, 0.5)`` taken first (Hugging Face's BERT), the division
    also as a Mul by 1/sqrt 2, the operands of each commutative op in either order. Every value in
    between read once and no graph output: one activation."""
    found = readers(g, x)
    if x in g.output_names or len(found) != 2:
        return None
    scale = next((n for n in found if (is_plain(n, "Div") and n.inputs[0] == x and scalar_is(g, n.inputs[1], math.sqrt(2.0), 1e-6))
                  or (is_plain(n, "Mul") and scalar_is(g, other_input(n, x) or "", math.sqrt(0.5), 1e-6))), None)
    if scale is None:
        return None
    erf = single_reader(g, scale.outputs[0])
    add = single_reader(g, erf.outputs[0]) if is_plain(erf, "Erf") else None
    if not is_plain(add, "Add") or not scalar_is(g, other_input(add, erf.outputs[0]) or "", 1.0):
        return None
    mul = next(n for n in found if n is not scale)
    last = _half_x_times(g, x, mul, add.outputs[0])
    return None if last is None else ([scale, erf, add, mul, last], "Gelu")


def gelu_tanh_chain(g: Graph, x: str) -> tuple[list[Node], str] | None:
    """(its nodes in order, ``"GeluTanh"``) when ``x`` is read only by GELU's tanh approximation as
    exporters write it, ``x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`` (GPT-2's, and
    PyTorch's ``gelu(approximate="tanh")``): the cube as ``Pow(x, 3)`` or ``Mul(x, Mul(x, x))``, the
    half taken last or first as for :func:`gelu_erf_chain`, commutative operands either way. Every
    value in between read once and no graph output: one activation."""
    found = readers(g, x)
    if x in g.output_names:
        return None
    cube = next((n for n in found if is_plain(n, "Pow") and n.inputs[0] == x and scalar_is(g, n.inputs[1], 3.0)), None)
    powers = [cube]
    if cube is None:
        square = next((n for n in found if is_plain(n, "Mul") and n.inputs == [x, x]), None)
        cube = None if square is None else single_reader(g, square.outputs[0])
        if not is_plain(cube, "Mul") or other_input(cube, square.outputs[0]) != x:
            return None
        powers = [square, cube]
    scaled = _next_with_constant(g, cube, "Mul", 0.044715)
    inner = single_reader(g, scaled.outputs[0]) if scaled is not None else None
    if not is_plain(inner, "Add") or other_input(inner, scaled.outputs[0]) != x:
        return None
    arg = _next_with_constant(g, inner, "Mul", math.sqrt(2.0 / math.pi))
    tanh = single_reader(g, arg.outputs[0]) if arg is not None else None
    add = _next_with_constant(g, tanh, "Add", 1.0) if is_plain(tanh, "Tanh") else None
    rest = [n for n in found if all(n is not p for p in powers + [inner])]
    if add is None or len(rest) != 1:
        return None
    last = _half_x_times(g, x, rest[0], add.outputs[0])
    return None if last is None else (powers + [scaled, inner, arg, tanh, add, rest[0], last], "GeluTanh")


def _next_with_constant(g: Graph, node: Node, op: str, value: float) -> Node | None:
    """The single reader of ``node``'s output if it is ``op`` with a one-element constant ~``value``."""
    nxt = next_plain(g, node, op)
    return nxt if nxt is not None and scalar_is(g, other_input(nxt, node.outputs[0]) or "", value, 1e-5) else None


def _half_x_times(g: Graph, x: str, mul: Node, one_plus: str) -> Node | None:
    """The node that ends ``x * 0.5 * one_plus`` from ``mul``, a reader of ``x``: torch.onnx's
    ``Mul(Mul(x, one_plus), 0.5)`` or Hugging Face's ``Mul(Mul(x, 0.5), one_plus)``, ``one_plus``
    read by it alone."""
    if not is_plain(mul, "Mul"):
        return None
    last = single_reader(g, mul.outputs[0])
    if not is_plain(last, "Mul") or single_reader(g, one_plus) not in (mul, last):
        return None
    if other_input(mul, x) == one_plus and scalar_is(g, other_input(last, mul.outputs[0]) or "", 0.5):
        return last
    if scalar_is(g, other_input(mul, x) or "", 0.5) and other_input(last, mul.outputs[0]) == one_plus:
        return last
    return None


def _same_static_float(g: Graph, a: str, b: str) -> bool:
    ta, tb = g.type_of(a), g.type_of(b)
    return (isinstance(ta, TensorType) and isinstance(tb, TensorType) and ta.shape is not None
            and ta.shape == tb.shape and ta.elem_type == tb.elem_type == 1 and None not in ta.shape)


def _quant_tail(g: Graph, q: Node) -> bool:
    """A QuantizeLinear to a per-tensor constant 8-bit scale/zero point (what the int8 ops emit)."""
    if q.op_type != "QuantizeLinear" or len(q.inputs) < 3 or not q.inputs[2]:
        return False
    s, z = constant_value(g, q.inputs[1]), constant_value(g, q.inputs[2])
    return (s is not None and z is not None and s.size == 1 and z.size == 1 and z.dtype in (np.uint8, np.int8)
            and q.attrs.get("saturate", 1) == 1 and not q.attrs.get("block_size", 0))


def absorb_epilogue(g: Graph, model: Model, fused: Node, slots: EpilogueSlots) -> list[Node]:
    """Grow ``fused`` over its readers, stage by stage; returns the nodes it absorbed, in order."""
    absorbed: list[Node] = []
    take_bias = slots.take_bias
    stage = 0  # 0: any stage open; 1: residual taken; 2: activation taken; 3: quantized, done
    opset = model.opset_imports.get("", 1)
    while stage < 3:
        out = fused.outputs[0]
        silu = silu_pair(g, out) if stage <= 1 else None
        gelu = (gelu_erf_chain(g, out) or gelu_tanh_chain(g, out)) if stage <= 1 and silu is None else None
        if silu is not None or gelu is not None:
            fused.attrs.update(activation="Silu" if silu is not None else gelu[1], alpha=0.0, beta=0.0)
            nodes = list(silu) if silu is not None else gelu[0]
            absorbed.extend(nodes)
            fused.outputs = list(nodes[-1].outputs)
            stage = 2
            if slots.quant_scale is None:
                break
            continue
        nxt = single_reader(g, out)
        if nxt is None or nxt.domain != "" or len(nxt.outputs) != 1:
            break
        is_add = nxt.op_type == "Add" or (nxt.op_type == "Sum" and len(nxt.inputs) == 2)  # Sum: opset<7 Add
        if is_add and stage == 0 and nxt.inputs[0] != nxt.inputs[1]:
            other = nxt.inputs[1] if nxt.inputs[0] == out else nxt.inputs[0]
            bias = constant_value(g, other)
            if bias is not None:
                if take_bias is None or not take_bias(g, fused, other, bias):
                    break
                take_bias = None  # one bias only
            elif _same_static_float(g, other, out) and _same_static_float(g, nxt.outputs[0], out):
                fused.inputs[slots.residual] = other
                stage = 1
            else:
                break
        elif stage <= 1 and (act := activation_params(g, nxt, opset)) is not None:
            fused.attrs.update(activation=act[0], alpha=act[1], beta=act[2])
            stage = 2
        elif slots.quant_scale is not None and _quant_tail(g, nxt):
            fused.inputs[slots.quant_scale], fused.inputs[slots.quant_scale + 1] = nxt.inputs[1], nxt.inputs[2]
            stage = 3
        else:
            break
        absorbed.append(nxt)
        fused.outputs = list(nxt.outputs)
        if stage == 2 and slots.quant_scale is None:
            break
    return absorbed


def commit_fused(g: Graph, model: Model, origin: Node, fused: Node, absorbed: list[Node], domain: str) -> None:
    """Put ``fused`` where the last node it replaces was (so a residual computed in between is
    ready before it is read), drop the replaced nodes and their value infos, trim empty inputs."""
    replaced = [origin] + absorbed
    for n in replaced[:-1]:
        g.value_info.pop(n.outputs[0], None)
    idx = next(i for i, n in enumerate(g.nodes) if n is replaced[-1])
    g.nodes[idx] = fused
    gone = {id(n) for n in replaced[:-1]}
    g.nodes = [n for n in g.nodes if id(n) not in gone]
    while fused.inputs and fused.inputs[-1] == "":
        fused.inputs.pop()
    model.opset_imports.setdefault(domain, 1)
