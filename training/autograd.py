"""Reverse-mode autograd over the IR: a table of rules (``training.grads``) and one walk.

The backward pass is more IR: :func:`compute_gradients` appends, to the model's own graph, the
nodes computing the gradients of a scalar with respect to chosen values, so the inference
passes optimize it and the inference session runs it. Only nodes on a path from those values
to the loss are visited, so frozen layers cost nothing.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

import training.grads  # noqa: F401 - importing registers every gradient rule
import training.kernels.shape_grads  # noqa: F401 - SumToShape for symbolic broadcasting
from inference.ir import Graph, Model, Node, TensorType, Value, outer_names
from inference.session import Session
from inference.shape_inference import infer_node_types, infer_shapes
from training.errors import MissingGradientRuleError, TrainingError
from training.grads.registry import GRAD_DOMAIN, get_rule
from training.grads.shape import reduce_sum

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


class GraphEmitter:
    """Appends typed nodes to one model's graph: the ``GradBuilder`` of the rules and the
    ``StepBuilder`` of losses and optimizers (see ``training.grads.registry`` and
    ``training.protocols``).

    Every emitted node gets its output types inferred at once, so rules can ask ``type_of`` about
    the values they just made; fresh names never collide with the model's.
    """

    def __init__(self, model: Model, tag: str = "bw", infer: bool = True):
        self.model = model
        self.graph: Graph = model.graph
        if infer:  # rules need the forward types (ranks, dtypes, static shapes)
            infer_shapes(model)
        self._tag = tag
        self._count = 0
        self._taken = _all_names(self.graph)
        self._needed: set[str] = set()
        self.states: list[str] = []          # names made by state(), in order
        self.assigns: dict[str, str] = {}    # buffer -> value copied into it after each run

    # -- naming ----------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A name not used anywhere in the graph yet."""
        while True:
            self._count += 1
            name = f"{base}__{self._tag}{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def _claim(self, name: str) -> str:
        if name in self._taken:
            raise TrainingError(f"name {name!r} is already used in graph {self.graph.name!r}")
        self._taken.add(name)
        return name

    # -- the GradBuilder / StepBuilder contract ----------------------------------------------
    def op(self, op_type: str, *inputs: str | None, domain: str = "", outputs: int = 1, **attrs: Any) -> Any:
        domain = "" if domain == "ai.onnx" else domain
        self.model.opset_imports.setdefault(domain, 1)
        ins = [i or "" for i in inputs]
        while ins and not ins[-1]:
            ins.pop()
        outs = [self.fresh(op_type.lower()) for _ in range(outputs)]
        node = Node(op_type, ins, outs, {k: v for k, v in attrs.items() if v is not None}, domain,
                    self.fresh(op_type))
        self.graph.nodes.append(node)
        self._infer(node)
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: Any = None) -> str:
        name = self.fresh("const")
        self.graph.initializers[name] = np.asarray(value, dtype=dtype)
        return name

    def type_of(self, name: str) -> TensorType | None:
        t = self.graph.type_of(name) if name else None
        return t if isinstance(t, TensorType) else None

    def needs(self, name: str) -> bool:
        return bool(name) and name in self._needed

    def opset(self, domain: str = "") -> int:
        domain = "" if domain == "ai.onnx" else domain
        return self.model.opset_imports.get(domain, 1)

    def reduce_to_shape_of(self, grad: str, like: str) -> str:
        gt, lt = self.type_of(grad), self.type_of(like)
        if gt is None or lt is None or gt.shape is None or lt.shape is None:
            out = self.op("SumToShape", grad, self.op("Shape", like), domain=GRAD_DOMAIN)
        else:
            axes = _broadcast_axes(gt.shape, lt.shape)
            if axes is None:
                out = self.op("SumToShape", grad, self.op("Shape", like), domain=GRAD_DOMAIN)
            else:
                lead, inner = axes
                out = reduce_sum(self, grad, inner, keepdims=1) if inner else grad
                out = reduce_sum(self, out, lead, keepdims=0) if lead else out
        if out != grad and lt is not None:
            self._set_type(out, TensorType((gt or lt).elem_type, lt.shape))
        return out

    def input(self, name: str, dtype: Any, shape: tuple | None) -> str:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.graph.inputs.append(Value(self._claim(name), TensorType(elem, None if shape is None else tuple(shape))))
        return name

    def state(self, name: str, init: np.ndarray) -> str:
        name = name if name not in self._taken else self.fresh(name)
        self._taken.add(name)
        self.graph.initializers[name] = np.array(init, copy=True, order="C")
        make_overridable(self.graph, name)
        self.states.append(name)
        return name

    # -- extensions of the contracts -----------------------------------------------------------
    def assign(self, buffer: str, value: str) -> None:
        """Functional updates: after each step the runner copies ``value`` into ``buffer`` in place."""
        self.assigns[buffer] = value

    # -- internals ---------------------------------------------------------------------------
    def _infer(self, node: Node) -> None:
        try:
            out = infer_node_types(self.model, self.graph, node)
        except Exception:  # noqa: BLE001 - an op without inference just leaves its outputs untyped
            return
        for name, t in out.items():
            if t is not None:
                self._set_type(name, t)

    def _set_type(self, name: str, t: Any) -> None:
        if name in self.graph.initializers or name in self.graph.input_names:
            return
        self.graph.value_info[name] = Value(name, t)


def make_overridable(graph: Graph, name: str) -> None:
    """List an initializer among the graph inputs, so no pass treats it as a constant
    (trained parameters and state buffers change between steps)."""
    if name not in graph.input_names:
        arr = graph.initializers[name]
        graph.inputs.append(Value(name, TensorType(helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)))


def _all_names(g: Graph) -> set[str]:
    names = set(g.input_names) | set(g.output_names) | set(g.initializers) | set(g.value_info)
    for n in g.nodes:
        names.update(n.inputs)
        names.update(n.outputs)
        names.add(n.name)
    return names


def _broadcast_axes(g: tuple, like: tuple) -> tuple[list[int], list[int]] | None:
    """(leading axes to drop, axes to sum keeping dims) taking shape ``g`` back to ``like``;
    None when only the run-time shapes can tell (symbolic dims that might be 1)."""
    lead = len(g) - len(like)
    if lead < 0:
        return None
    inner = []
    for i, (gd, ld) in enumerate(zip(g[lead:], like)):
        if ld == 1:
            if gd != 1:
                inner.append(lead + i)
        elif isinstance(ld, int) or (ld is not None and gd == ld):
            continue  # a broadcast result keeps every dim > 1 (or any named dim it shares)
        else:
            return None
    return list(range(lead)), inner


def _is_float(t: TensorType | None) -> bool:
    return t is None or t.elem_type in _FLOAT_TYPES


def _path(b: GraphEmitter, loss: str, wrt: Sequence[str]) -> tuple[set[str], list[Node]]:
    """Float values lying on a path from some ``wrt`` to ``loss``, and the nodes joining them."""
    g = b.graph
    producers = g.producers()
    ancestors: set[str] = set()
    stack = [loss]
    while stack:
        v = stack.pop()
        if v in ancestors:
            continue
        ancestors.add(v)
        node = producers.get(v)
        if node is not None:
            stack.extend(i for i in list(node.inputs) + sorted(outer_names(node)) if i)
    reached = set(wrt)
    for node in g.nodes:
        if (set(node.inputs) | outer_names(node)) & reached:
            reached.update(o for o in node.outputs if o and _is_float(b.type_of(o)))
    needed = reached & ancestors
    nodes = [n for n in g.nodes
             if any(o in needed for o in n.outputs) and (set(n.inputs) | outer_names(n)) & needed]
    return needed, nodes


def _seed(b: GraphEmitter, loss: str) -> str:
    t = b.type_of(loss)
    dtype = t.dtype if t is not None else np.dtype(np.float32)
    if t is not None and t.is_static():
        return b.const(np.ones(t.shape, dtype))
    return b.op("ConstantOfShape", b.op("Shape", loss), value=np.ones(1, dtype))


def _check_names(g: Graph, loss: str, wrt: Sequence[str]) -> None:
    known = set(g.input_names) | set(g.initializers) | {o for n in g.nodes for o in n.outputs}
    missing = [n for n in [loss, *wrt] if n not in known]
    if missing:
        raise TrainingError(f"graph {g.name!r} has no value named {missing}")


def backward(b: GraphEmitter, loss: str, wrt: Sequence[str], strict: bool = True) -> dict[str, str]:
    """Emit the backward pass through ``b``; return {wrt name: gradient name}."""
    g = b.graph
    _check_names(g, loss, wrt)
    not_float = [w for w in wrt if not _is_float(b.type_of(w))]
    if not_float:
        raise TrainingError(f"cannot differentiate with respect to non-float values {not_float}")
    needed, nodes = _path(b, loss, wrt)
    b._needed = needed
    grads: dict[str, list[str]] = {loss: [_seed(b, loss)]} if loss in needed else {}

    def total(name: str) -> str | None:
        parts = grads.get(name)
        if not parts:
            return None
        if len(parts) > 1:
            summed = b.op("Sum", *parts)
            b._set_type(summed, b.type_of(name) or b.type_of(parts[0]))
            grads[name] = parts = [summed]
        return parts[0]

    for node in reversed(nodes):
        dys = [total(o) if o else None for o in node.outputs]
        if all(d is None for d in dys):
            continue
        rule = get_rule(node.op_type, node.domain)
        if rule is None:
            raise MissingGradientRuleError(node.op_type, node.domain, node.label())
        dxs = list(rule(b, node, dys))
        if len(dxs) > len(node.inputs):
            raise TrainingError(f"gradient rule of {node.op_type} returned {len(dxs)} gradients for "
                                f"{len(node.inputs)} inputs (node {node.label()!r})")
        for name, dx in zip(node.inputs, dxs):
            if dx and name in needed:
                _check_grad_type(b, node, name, dx)
                grads.setdefault(name, []).append(dx)
    result = {w: t for w in dict.fromkeys(wrt) if (t := total(w)) is not None}
    missing = [w for w in wrt if w not in result]
    if strict and missing:
        raise TrainingError(f"{loss!r} does not depend on {missing} through differentiable ops")
    return result


def _check_grad_type(b: GraphEmitter, node: Node, name: str, dx: str) -> None:
    """A gradient has the type of its value: check it when both are known, else record it."""
    want, got = b.type_of(name), b.type_of(dx)
    if want is None:
        return
    if got is not None and got.is_static() and want.is_static() and got.shape != want.shape:
        raise TrainingError(f"gradient rule of {node.op_type} (node {node.label()!r}) gave {name!r} a "
                            f"gradient of shape {list(got.shape)}, but {name!r} has shape {list(want.shape)}")
    if got is None or not got.is_static():
        b._set_type(dx, TensorType(got.elem_type if got is not None else want.elem_type, want.shape))


def compute_gradients(model: Model, loss: str, wrt: Iterable[str], strict: bool = True) -> dict[str, str]:
    """Append to ``model.graph`` the nodes computing d``loss``/d``w`` for each ``w`` in ``wrt``.

    Returns {w: name of its gradient}. With ``strict`` (the default) every ``w`` must reach the
    loss through differentiable ops; otherwise unreachable ones are left out of the result.
    """
    return backward(GraphEmitter(model), loss, list(wrt), strict)


def gradients(model: Model, feeds: Mapping[str, Any], of: str = "loss",
              wrt: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Evaluate d``of``/d``w`` on ``feeds`` (the model itself is left untouched)."""
    m = copy.deepcopy(model)
    names = compute_gradients(m, of, wrt)
    m.graph.outputs = [Value(n, m.graph.type_of(n)) for n in dict.fromkeys(names.values())]
    values = dict(zip(m.graph.output_names, Session(m).run(feeds)))
    return {w: values[n] for w, n in names.items()}
