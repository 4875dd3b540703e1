"""The training step as one IR graph: forward -> loss -> backward -> optimizer update.

:func:`build_training_graph` copies a model, switches BatchNormalization/Dropout to training
behaviour, lets a :class:`~training.protocols.Loss` emit the loss, emits the backward pass,
lets an :class:`~training.protocols.Optimizer` emit each parameter's update, runs the safe
inference passes and plans one :class:`~inference.session.Session` for all of it.

How updates reach the next step (both work, pick per optimizer):

* in place (the contract of ``training.protocols``): an update kernel mutates its parameter and
  state inputs; the session hands kernels the very arrays held in ``graph.initializers``, so the
  next run reads the new values. The update nodes' outputs are made graph outputs, which keeps
  them from dead-node elimination (an update op therefore needs at least one output).
* functional: the optimizer emits ordinary ops computing the new value and calls
  ``b.assign(param, new_value)``; after each run the new value is copied into the parameter's
  array (in place, so every view of the parameter stays valid). BatchNorm running statistics
  use this path unless their kernel already updated the array in place.

Trained parameters and state buffers are listed among the graph inputs (ONNX's overridable
initializers), so constant folding never freezes them; frozen parameters stay constants and
whatever depends only on them folds away.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from inference.errors import InputError
from inference.ir import Graph, Model, TensorType, Value
from inference.session import Session
from inference.shape_inference import infer_shapes
from training.autograd import GraphEmitter, backward, make_overridable
from training.errors import TrainableError, TrainingError
from training.grads.registry import GRAD_DOMAIN
from training.heap import retain_freed_memory
from training.kernels.nn_train import seeded_dropout_node
from training.protocols import Loss, Optimizer

_WILDCARDS = set("*?[")


@dataclass
class TrainingGraph:
    """A built training step and its views; parameter arrays are shared by all views."""

    model: Model                      # the step graph (forward in training mode + loss + backward + updates)
    forward: Model                    # inference view: the original graph over the live parameters
    loss: str
    prediction: str
    target: str
    lr: str                           # name of the float32 scalar learning-rate input
    params: list[str]
    grads: dict[str, str]             # param -> its gradient (in last_outputs when built with keep_grads)
    states: list[str]                 # optimizer buffers and BatchNorm running statistics
    assigns: dict[str, str]           # buffer -> value copied into it after each step
    session: Session
    loss_fn: Loss
    default_lr: float | None = None
    last_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    _eval: tuple[Session, str] | None = field(default=None, repr=False)
    _predict: Session | None = field(default=None, repr=False)

    # -- running ----------------------------------------------------------------------------
    def step(self, feeds: Mapping[str, Any], lr: float | None = None) -> float:
        """Run one training step (parameters and state change); returns the loss."""
        run = dict(feeds)
        if lr is not None:
            run[self.lr] = lr
        elif self.lr not in run:
            if self.default_lr is None:
                raise InputError(f"a training step needs a learning rate: pass lr= or feed {self.lr!r}")
            run[self.lr] = self.default_lr
        run[self.lr] = np.asarray(run[self.lr], np.float32)
        out = dict(zip(self.model.graph.output_names, self.session.run(run)))
        live = self.model.graph.initializers
        for buffer, value in self.assigns.items():
            if out[value] is not live[buffer]:
                np.copyto(live[buffer], out[value], casting="same_kind")
        self.last_outputs = out
        return float(out[self.loss])

    def predict(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """The forward graph's outputs in inference mode, with the current parameters."""
        if self._predict is None:
            self._predict = Session(self.forward)
        return self._predict.run(feeds)

    def evaluate(self, feeds: Mapping[str, Any]) -> tuple[float, np.ndarray]:
        """(loss, prediction) in inference mode (BatchNorm running statistics, no Dropout); no update."""
        if self._eval is None:
            self._eval = _eval_session(self)
        session, loss = self._eval
        value, pred = session.run(feeds)
        return float(value), pred

    # -- state ------------------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays (updated in place by every step)."""
        return {p: self.model.graph.initializers[p] for p in self.params}

    def buffers(self) -> dict[str, np.ndarray]:
        """Parameters and state buffers: everything a checkpoint must hold (live arrays)."""
        live = self.model.graph.initializers
        return {n: live[n] for n in [*self.params, *self.states]}

    def load_buffers(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy values into the live parameters/state (names, shapes and dtypes must match)."""
        live = self.buffers()
        unknown = sorted(set(arrays) - set(live))
        if unknown:
            raise TrainingError(f"unknown parameters or state buffers {unknown}")
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.shape != live[name].shape:
                raise TrainingError(f"{name!r}: shape {value.shape} does not match {live[name].shape}")
            np.copyto(live[name], value, casting="same_kind")

    def export_model(self) -> Model:
        """A plain inference model holding a copy of the current parameters."""
        return copy.deepcopy(self.forward)


def build_training_graph(model: Model, loss: Loss, trainable: Sequence[str] | str | None = None,
                         optimizer: Optimizer | None = None, prediction: str | None = None, *,
                         target_type: TensorType | None = None, keep_grads: bool = False,
                         optimize: bool = True, seed: int = 0) -> TrainingGraph:
    """Build the training step of ``model`` (which is not modified).

    ``trainable``: initializer names or glob patterns (default: every float initializer of rank
    >= 1 that the loss depends on, BatchNorm running statistics excluded). ``prediction``: the
    value the loss reads (default: the first graph output). ``target_type``: the type of the
    ``target`` input (default: ``loss.target_type(prediction_type)`` if the loss defines it, else
    the prediction's type). ``keep_grads``: make the gradients graph outputs (always so without
    an optimizer), readable in ``last_outputs`` after a step. ``seed``: base seed of the Dropout
    masks (Dropout ``k`` of the graph uses ``seed + k`` and the step counter).
    """
    retain_freed_memory()  # a step re-allocates the same temporaries: keep them mapped (training.heap)
    step = copy.deepcopy(model)
    g = step.graph
    infer_shapes(step)
    prediction = prediction or (g.output_names[0] if g.outputs else "")
    if prediction not in set(g.input_names) | set(g.producers()):
        raise TrainingError(f"prediction {prediction!r} is not a value of graph {g.name!r}")
    b = GraphEmitter(step, tag="tr", infer=False)
    bn_stats = _switch_to_training(b, seed)
    candidates, exact, patterns = _candidates(g, trainable, set(bn_stats))

    pred_type = b.type_of(prediction)
    tt = target_type or (loss.target_type(pred_type) if hasattr(loss, "target_type") else pred_type)
    target = b.input(_free(b, "target"), tt.dtype if tt is not None else np.float32,
                     tt.shape if tt is not None else None)
    loss_name = loss.build(b, prediction, target)
    grads = backward(b, loss_name, candidates, strict=False)
    params = [p for p in candidates if p in grads]
    _check_selection(params, exact, patterns, candidates, loss_name)
    for name in [*params, *bn_stats]:
        make_overridable(g, name)

    lr = b.input(_free(b, "lr"), np.float32, ())
    first_update = len(g.nodes)
    if optimizer is not None and hasattr(optimizer, "emit_updates"):  # all at once (global-norm clipping)
        optimizer.emit_updates(b, [(p, grads[p]) for p in params], lr)
    elif optimizer is not None:
        for p in params:
            optimizer.emit_update(b, p, grads[p], lr)
    b.assigns.update({s: out for s, out in bn_stats.items() if s not in b.assigns})
    outputs = [loss_name, prediction]
    if keep_grads or optimizer is None:
        outputs += [grads[p] for p in params]
    outputs += list(b.assigns.values()) + _terminal_outputs(g, first_update)
    g.outputs = [Value(n, b.type_of(n)) for n in dict.fromkeys(outputs)]
    if optimize:
        from inference.passes import optimize as run_passes

        fuse_relu_into_pool_grads(g)

        # no fusion in general: Conv+BN folding and transposed Gemm weights would train copies of
        # the parameters. The conv epilogue fusion reads W and B as they are, so it is safe, and it
        # saves a full pass (and a buffer) per Conv -> Relu of the forward.
        run_passes(step, fusion=False, switches={"fuse_conv_epilogue": True})
    default_lr = getattr(optimizer, "lr", None)
    return TrainingGraph(
        model=step, forward=_forward_view(model, step, [*params, *bn_stats]), loss=loss_name,
        prediction=prediction, target=target, lr=lr, params=params, grads={p: grads[p] for p in params},
        states=list(dict.fromkeys([*b.states, *bn_stats])), assigns=dict(b.assigns), session=Session(step),
        loss_fn=loss, default_lr=float(default_lr) if isinstance(default_lr, (int, float)) else None)


# --- pieces --------------------------------------------------------------------------------------

def fuse_relu_into_pool_grads(g: Graph) -> int:
    """``ReluGrad(MaxPoolGradByMatch(dY, X, Y), X)`` -> ``MaxPoolGradByMatch(dY, X, Y, through_relu=1)``
    when nothing else reads the pooling gradient; returns how many were fused.

    Why: a MaxPool reading a Relu's output routes each window's gradient to a tap holding the
    window max, where the Relu's mask is ``Y > 0``; applying it to the pooled dY (a quarter of
    the activation for 2x2 windows) saves the ReluGrad pass over the whole activation and its
    buffer (measured ~0.2 ms of the benchmark CNN's ~6 ms step)."""
    producers, outputs = g.producers(), set(g.output_names)
    reads: dict[str, int] = {}
    for n in g.nodes:
        for i in n.inputs:
            reads[i] = reads.get(i, 0) + 1
    fused: set[int] = set()
    for r in g.nodes:
        if r.op_type != "ReluGrad" or r.domain != GRAD_DOMAIN:
            continue
        p = producers.get(r.inputs[0])
        if p is None or p.op_type != "MaxPoolGradByMatch" or p.domain != GRAD_DOMAIN or p.inputs[1] != r.inputs[1] \
                or p.attrs.get("through_relu") or reads[r.inputs[0]] != 1 or r.inputs[0] in outputs:
            continue
        p.attrs["through_relu"] = 1
        g.value_info.pop(p.outputs[0], None)
        p.outputs = list(r.outputs)
        fused.add(id(r))
    g.nodes = [n for n in g.nodes if id(n) not in fused]
    return len(fused)


def _free(b: GraphEmitter, name: str) -> str:
    return b.fresh(name) if name in b._taken else name


def _switch_to_training(b: GraphEmitter, seed: int) -> dict[str, str]:
    """Put BatchNormalization in training mode and make each Dropout a SeededDropout fed the step
    counter; return {running statistic: its updated value}."""
    g, stats = b.graph, {}
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "BatchNormalization":
            node.attrs["training_mode"] = 1
            node.outputs += [""] * (3 - len(node.outputs))
            for k in (1, 2):
                if not node.outputs[k]:
                    node.outputs[k] = b.fresh(f"{node.inputs[k + 2]}_new")
                    b._set_type(node.outputs[k], b.type_of(node.inputs[k + 2]))
                if node.inputs[k + 2] in g.initializers:
                    stats[node.inputs[k + 2]] = node.outputs[k]
    dropouts = [i for i, n in enumerate(g.nodes) if n.op_type == "Dropout" and n.domain in ("", "ai.onnx")]
    if dropouts:  # seeded by (seed, step): masks change every step, and a resumed run draws the same
        step = b.state("dropout.step", np.zeros((), np.int64))
        b.assign(step, b.op("Add", step, b.const(np.ones((), np.int64))))
        for k, i in enumerate(dropouts):
            node = g.nodes[i]
            if len(node.outputs) < 2 or not node.outputs[1]:
                node.outputs = [node.outputs[0], b.fresh(f"{node.outputs[0]}_mask")]
            g.nodes[i] = seeded_dropout_node(node, step, seed + k)
            b.model.opset_imports.setdefault(g.nodes[i].domain, 1)
            x = b.type_of(node.inputs[0])
            b._set_type(node.outputs[1], TensorType(onnx.TensorProto.BOOL, x.shape if x is not None else None))
    return stats


def _candidates(g: Graph, trainable: Sequence[str] | str | None, exclude: set[str]
                ) -> tuple[list[str], list[str], list[str]]:
    """(candidate parameters, exact names asked for, patterns asked for)."""
    floats = [n for n, a in g.initializers.items() if a.dtype.kind == "f" and n not in exclude]
    if trainable is None:
        return [n for n in floats if g.initializers[n].ndim > 0], [], []
    asked = [trainable] if isinstance(trainable, str) else list(trainable)
    exact = [p for p in asked if not _WILDCARDS & set(p)]
    patterns = [p for p in asked if _WILDCARDS & set(p)]
    bad = [n for n in exact if n not in floats]
    if bad:
        raise TrainableError(f"trainable names {bad} are not float initializers of graph {g.name!r} "
                             f"(BatchNorm running statistics are state, not parameters)")
    chosen = [n for n in floats if n in exact or any(fnmatchcase(n, p) for p in patterns)]
    return chosen, exact, patterns


def _check_selection(params: list[str], exact: list[str], patterns: list[str], candidates: list[str],
                     loss: str) -> None:
    unreached = [n for n in exact if n not in params]
    if unreached:
        raise TrainableError(f"loss {loss!r} does not depend on trainable parameters {unreached}")
    empty = [p for p in patterns if not any(fnmatchcase(n, p) for n in params)]
    if empty:
        raise TrainableError(f"trainable patterns {empty} match no parameter the loss depends on")
    if not params:
        raise TrainableError(f"nothing to train: none of {candidates[:10]} reaches loss {loss!r}")


def _terminal_outputs(g: Graph, first: int) -> list[str]:
    """Outputs of the update nodes that no node reads: what keeps in-place updates alive."""
    read = {i for n in g.nodes for i in n.inputs}
    return [o for n in g.nodes[first:] for o in n.outputs if o and o not in read]


def _forward_view(original: Model, step: Model, live: Sequence[str]) -> Model:
    """A copy of the original model whose trained arrays are the step graph's live arrays."""
    memo = {id(original.graph.initializers[n]): step.graph.initializers[n] for n in live}
    return copy.deepcopy(original, memo)


def _eval_session(tg: TrainingGraph) -> tuple[Session, str]:
    """Forward in inference mode + the loss, sharing every array with the forward view."""
    fwd = tg.forward
    memo = {id(a): a for a in fwd.graph.initializers.values()}
    ev = copy.deepcopy(fwd, memo)
    b = GraphEmitter(ev, tag="ev")
    t = tg.model.graph.type_of(tg.target)
    target = b.input(tg.target, t.dtype, t.shape) if isinstance(t, TensorType) else b.input(tg.target, np.float32, None)
    loss = tg.loss_fn.build(b, tg.prediction, target)
    ev.graph.outputs = [Value(loss, b.type_of(loss)), Value(tg.prediction, b.type_of(tg.prediction))]
    return Session(ev), loss
