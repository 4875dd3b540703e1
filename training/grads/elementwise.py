"""Gradient rules of elementwise ops: arithmetic with numpy broadcasting and the activations.

Binary ops sum each input's gradient back to that input's shape (``reduce_to_shape_of``).
Activations whose derivative is a function of their output (Relu, Sigmoid, Tanh, Exp, Sqrt)
read the output rather than the input, so the input can be freed earlier.

At kinks the rules pick one subgradient: Abs gives 0 at 0 (``sign(x)``); Max and Min give the
gradient to every input equal to the result, split evenly among tied inputs (as PyTorch's
``maximum``/``minimum``), so the inputs' gradients always sum to ``dy``.
"""
from __future__ import annotations

import math
from typing import Sequence

import training.kernels.shape_grads  # noqa: F401 - registers ReluGrad, ClipGrad, LeakyReluGrad
from inference.ir import Node
from training.errors import NotDifferentiableError
from training.grads.registry import GRAD_DOMAIN, GradBuilder, grad_rule, scalar
from training.grads.shape import dtype_of, pad_none

Grads = Sequence[str | None]


def _k(b: GradBuilder, node: Node, value: float) -> str:
    """A scalar constant in the dtype of the node's first input."""
    return b.const(scalar(value, dtype_of(b, node.inputs[0], node)))


# --- arithmetic ------------------------------------------------------------------------------

@grad_rule("Add")
def _add(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    a, c = node.inputs
    return [b.reduce_to_shape_of(dys[0], a) if b.needs(a) else None,
            b.reduce_to_shape_of(dys[0], c) if b.needs(c) else None]


@grad_rule("Sum")
def _sum(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.reduce_to_shape_of(dys[0], x) if b.needs(x) else None for x in node.inputs]


@grad_rule("Sub")
def _sub(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    a, c = node.inputs
    return [b.reduce_to_shape_of(dys[0], a) if b.needs(a) else None,
            b.reduce_to_shape_of(b.op("Neg", dys[0]), c) if b.needs(c) else None]


@grad_rule("Mul")
def _mul(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    a, c = node.inputs
    if a == c:  # x * x: one gradient 2 x dy rather than two summed
        return [b.op("Mul", dys[0], b.op("Add", a, a)), None]
    return [b.reduce_to_shape_of(b.op("Mul", dys[0], c), a) if b.needs(a) else None,
            b.reduce_to_shape_of(b.op("Mul", dys[0], a), c) if b.needs(c) else None]


@grad_rule("Div")
def _div(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    a, c = node.inputs
    y, dy = node.outputs[0], dys[0]
    da = b.reduce_to_shape_of(b.op("Div", dy, c), a) if b.needs(a) else None
    dc = b.reduce_to_shape_of(b.op("Neg", b.op("Mul", dy, b.op("Div", y, c))), c) if b.needs(c) else None
    return [da, dc]


@grad_rule("Pow")
def _pow(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """y = a^p: da = dy * p * a^(p-1), dp = dy * y * log(a) (the exponent may have another dtype)."""
    a, p = node.inputs
    y, dy = node.outputs[0], dys[0]
    a_type, p_type = dtype_of(b, a, node), dtype_of(b, p, node)
    p_same = p if p_type == a_type else b.op("Cast", p, to=int(b.type_of(a).elem_type))
    da = dp = None
    if b.needs(a):
        slope = b.op("Mul", p_same, b.op("Pow", a, b.op("Sub", p_same, _k(b, node, 1.0))))
        da = b.reduce_to_shape_of(b.op("Mul", dy, slope), a)
    if b.needs(p):
        dp = b.reduce_to_shape_of(b.op("Mul", dy, b.op("Mul", y, b.op("Log", a))), p)
        if p_type != a_type:
            dp = b.op("Cast", dp, to=int(b.type_of(p).elem_type))
    return [da, dp]


@grad_rule("Abs")
def _abs(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """dx = dy * sign(x) (0 at x == 0); before opset 9 (no Sign) as (x > 0) - (x < 0)."""
    x = node.inputs[0]
    if b.opset() >= 9:
        sign = b.op("Sign", x)
    else:
        to = int(b.type_of(x).elem_type)
        zero = _k(b, node, 0.0)
        sign = b.op("Sub", b.op("Cast", b.op("Greater", x, zero), to=to), b.op("Cast", b.op("Less", x, zero), to=to))
    return [b.op("Mul", dys[0], sign)]


def _extremum(b: GradBuilder, node: Node, dys: Grads, beaten_by: str) -> Grads:
    """Max/Min over broadcast inputs: each input equal to the result gets ``dy`` divided by the
    number of inputs tied there. ``x == y`` is spelled ``Not(y > x)`` for Max (``Not(y < x)``
    for Min), valid for floats at every opset with broadcasting."""
    xs, y, dy = node.inputs, node.outputs[0], dys[0]
    if len(xs) == 1:
        return [dy]
    to = int(b.type_of(y).elem_type)
    hits = [b.op("Cast", b.op("Not", b.op(beaten_by, y, x)), to=to) for x in xs]
    share = b.op("Div", dy, b.op("Sum", *hits))
    return [b.reduce_to_shape_of(b.op("Mul", share, h), x) if b.needs(x) else None for h, x in zip(hits, xs)]


@grad_rule("Max")
def _max(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return _extremum(b, node, dys, "Greater")


@grad_rule("Min")
def _min(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return _extremum(b, node, dys, "Less")


@grad_rule("Where")
def _where(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """The gradient goes to the branch each element was taken from; the condition gets none."""
    cond, x, z = node.inputs
    dy = dys[0]
    zero = b.const(scalar(0.0, dtype_of(b, node.outputs[0], node)))
    dx = b.reduce_to_shape_of(b.op("Where", cond, dy, zero), x) if b.needs(x) else None
    dz = b.reduce_to_shape_of(b.op("Where", cond, zero, dy), z) if b.needs(z) else None
    return [None, dx, dz]


@grad_rule("Neg")
def _neg(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.op("Neg", dys[0])]


@grad_rule("Identity")
def _identity(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [dys[0]]


@grad_rule("Cast")
def _cast(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    t = b.type_of(node.inputs[0])
    if t is None:
        raise NotDifferentiableError(f"Cast (node {node.label()!r}): the input's type is unknown")
    return [b.op("Cast", dys[0], to=int(t.elem_type))]


# --- activations -----------------------------------------------------------------------------

@grad_rule("Relu")
def _relu(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.op("ReluGrad", dys[0], node.outputs[0], domain=GRAD_DOMAIN)]


@grad_rule("LeakyRelu")
def _leaky_relu(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.op("LeakyReluGrad", dys[0], node.inputs[0], domain=GRAD_DOMAIN, alpha=node.attrs.get("alpha", 0.01))]


@grad_rule("Sigmoid")
def _sigmoid(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    y = node.outputs[0]
    return [b.op("Mul", dys[0], b.op("Mul", y, b.op("Sub", _k(b, node, 1.0), y)))]


@grad_rule("Tanh")
def _tanh(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    y = node.outputs[0]
    return [b.op("Mul", dys[0], b.op("Sub", _k(b, node, 1.0), b.op("Mul", y, y)))]


@grad_rule("Clip")
def _clip(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """The gradient passes where Clip left x unchanged (min <= x <= max); bounds get none."""
    return pad_none(node, b.op("ClipGrad", dys[0], node.inputs[0], node.outputs[0], domain=GRAD_DOMAIN))


@grad_rule("Exp")
def _exp(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.op("Mul", dys[0], node.outputs[0])]


@grad_rule("Log")
def _log(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.op("Div", dys[0], node.inputs[0])]


@grad_rule("Sqrt")
def _sqrt(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return [b.op("Div", b.op("Mul", dys[0], _k(b, node, 0.5)), node.outputs[0])]


def _gaussian(b: GradBuilder, node: Node, x: str, scale: float) -> str:
    """scale * exp(-x^2): the Gaussian shape behind the derivatives of Erf and Gelu."""
    return b.op("Mul", b.op("Exp", b.op("Neg", b.op("Mul", x, x))), _k(b, node, scale))


@grad_rule("Erf")
def _erf(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    x = node.inputs[0]
    return [b.op("Mul", dys[0], _gaussian(b, node, x, 2.0 / math.sqrt(math.pi)))]


@grad_rule("Gelu")
def _gelu(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    x = node.inputs[0]
    approx = node.attrs.get("approximate", "none")
    if isinstance(approx, bytes):
        approx = approx.decode()
    half, one = _k(b, node, 0.5), _k(b, node, 1.0)
    if approx == "tanh":
        c, k = math.sqrt(2.0 / math.pi), 0.044715
        x2 = b.op("Mul", x, x)
        inner = b.op("Mul", b.op("Mul", x, b.op("Add", one, b.op("Mul", x2, _k(b, node, k)))), _k(b, node, c))
        t = b.op("Tanh", inner)
        du = b.op("Mul", b.op("Add", one, b.op("Mul", x2, _k(b, node, 3 * k))), _k(b, node, c))
        sech2 = b.op("Sub", one, b.op("Mul", t, t))
        slope = b.op("Mul", half, b.op("Add", b.op("Add", one, t), b.op("Mul", b.op("Mul", x, sech2), du)))
    elif approx == "none":
        cdf = b.op("Mul", half, b.op("Add", one, b.op("Erf", b.op("Mul", x, _k(b, node, 1 / math.sqrt(2))))))
        pdf = _gaussian(b, node, b.op("Mul", x, _k(b, node, 1 / math.sqrt(2))), 1 / math.sqrt(2 * math.pi))
        slope = b.op("Add", cdf, b.op("Mul", x, pdf))
    else:
        raise NotDifferentiableError(f"Gelu (node {node.label()!r}): unknown approximate={approx!r}")
    return [b.op("Mul", dys[0], slope)]

