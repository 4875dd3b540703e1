"""Run an IR graph: a static plan of kernel calls with intermediates freed after their last reader."""
from __future__ import annotations

import time
from collections import ChainMap
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from inference.errors import EdgelearnError, InputError, KernelError, ShapeInferenceError, UnsupportedOpError
from inference.ir import Graph, Model, Node, TensorType, outer_names
from inference.ops.registry import KernelContext, KernelEntry, lookup

DEFAULT_KINDS = ("fast", "reference")
#: for sessions whose initializers never change (a Predictor's): "sparse" kernels pack their weight
#: once, so they must not serve graphs whose arrays training rewrites in place between runs
CONSTANT_WEIGHT_KINDS = ("sparse",) + DEFAULT_KINDS

#: called after each step as ``(node, kernel, start, end)``, times from ``time.perf_counter``
Profiler = Callable[[Node, "KernelEntry", float, float], None]


@dataclass
class Step:
    """One planned kernel call and the names freed once it has run."""

    node: Node
    kernel: KernelEntry
    ctx: KernelContext | None
    free_after: tuple[str, ...] = ()


class Session:
    """Executes a model's graph (or a subgraph of it) with the kernels of the registry.

    ``kinds`` orders the kernel kinds to try per node: a fast kernel whose ``applies`` accepts the
    node replaces the reference one, which is how optimized kernels plug in without edits here.
    """

    def __init__(self, model: Model, graph: Graph | None = None, kinds: Sequence[str] = DEFAULT_KINDS,
                 outer_scope: Iterable[str] = (), free_intermediates: bool = True):
        self.model = model
        self.graph = graph if graph is not None else model.graph
        self.kinds = tuple(kinds)
        self.free_intermediates = free_intermediates  # off: every value stays alive (debugging)
        self._subsessions: dict[int, Session] = {}
        self._outer = frozenset(outer_scope)
        self.steps = self._plan()
        self.profiler: Profiler | None = None  # per-op timing hook (``edgelearn bench``'s trace)

    # -- planning ---------------------------------------------------------------------------
    def _plan(self) -> list[Step]:
        steps = [Step(n, self._select(n), None) for n in self.graph.nodes]
        for s in steps:
            if s.kernel.wants_ctx:
                s.ctx = KernelContext(node=s.node, opset=self._opset(s.node), num_outputs=len(s.node.outputs),
                                      run_graph=self._run_subgraph)
        self._assign_frees(steps)
        return steps

    def _opset(self, node: Node) -> int:
        return self.model.opset_imports.get(node.domain, 1)

    def _select(self, node: Node) -> KernelEntry:
        return select_kernel(self.model, self.graph, node, self.kinds)

    def _assign_frees(self, steps: list[Step]) -> None:
        if not self.free_intermediates:
            return
        keep = set(self.graph.output_names) | set(self.graph.initializers) | set(self._outer)
        last_use: dict[str, int] = {}
        for i, s in enumerate(steps):
            for name in list(s.node.inputs) + sorted(outer_names(s.node)) + list(s.node.outputs):
                if name:
                    last_use[name] = i
        frees: dict[int, list[str]] = {}
        for name, i in last_use.items():
            if name not in keep:
                frees.setdefault(i, []).append(name)
        for i, s in enumerate(steps):
            s.free_after = tuple(frees.get(i, ()))

    # -- running ----------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any], output_names: Sequence[str] | None = None,
            outer: Mapping[str, Any] | None = None) -> list[Any]:
        """Run the plan on ``feeds`` and return the requested outputs (default: all, in order)."""
        local: dict[str, Any] = dict(self.graph.initializers)
        local.update(feeds)
        env = ChainMap(local, outer) if outer is not None else local
        profiler = self.profiler
        for step in self.steps:
            if profiler is None:
                self._run_step(step, env, local)
            else:
                start = time.perf_counter()
                self._run_step(step, env, local)
                profiler(step.node, step.kernel, start, time.perf_counter())
            for name in step.free_after:
                local.pop(name, None)
        names = output_names or self.graph.output_names
        missing = [n for n in names if n not in env]
        if missing:
            raise InputError(f"outputs {missing} were not produced by graph {self.graph.name!r}")
        return [env[n] for n in names]

    def _run_step(self, step: Step, env: Mapping[str, Any], local: dict[str, Any]) -> None:
        node = step.node
        try:
            args = [env[i] if i else None for i in node.inputs]
        except KeyError as e:
            raise InputError(f"node {node.label()} ({node.op_type}) needs {e.args[0]!r}, which was not "
                             "fed or computed") from None
        if step.ctx is not None:
            step.ctx.outer = env
        result = call_kernel(step.kernel, node, args, step.ctx, self._opset(node))
        for name, value in zip(node.outputs, result):
            if name:
                local[name] = value

    def _run_subgraph(self, graph: Graph, feeds: Mapping[str, Any] | Sequence[Any],
                      outer: Mapping[str, Any] | None = None) -> list[Any]:
        """Run a subgraph (If/Loop/Scan body) with the enclosing values visible to it."""
        sub = self._subsessions.get(id(graph))
        if sub is None:
            sub = Session(self.model, graph, self.kinds, outer_scope=_names_in(outer),
                          free_intermediates=self.free_intermediates)
            self._subsessions[id(graph)] = sub
        if not isinstance(feeds, Mapping):
            feeds = dict(zip(graph.input_names, feeds))
        return sub.run(feeds, outer=outer)


def _names_in(env: Mapping[str, Any] | None) -> set[str]:
    return set(env.keys()) if env is not None else set()


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype}{list(a.shape)}"
    if isinstance(a, list):
        return f"sequence[{len(a)}]"
    return "None" if a is None else type(a).__name__


def check_feed(name: str, value: Any, declared: TensorType | None, bindings: dict[str, int]) -> np.ndarray:
    """Validate one tensor feed against its declared type; symbolic dims must agree across feeds."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if declared is None:
        return arr
    if arr.dtype != declared.dtype:
        raise InputError(f"input {name!r} expects dtype {declared.dtype}, got {arr.dtype}")
    if declared.shape is not None:
        if arr.ndim != len(declared.shape):
            raise InputError(f"input {name!r} expects rank {len(declared.shape)} "
                             f"(shape {list(declared.shape)}), got shape {list(arr.shape)}")
        for axis, (want, got) in enumerate(zip(declared.shape, arr.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(f"input {name!r} expects dim {axis} = {want} "
                                 f"(shape {list(declared.shape)}), got shape {list(arr.shape)}")
            if isinstance(want, str):
                if bindings.setdefault(want, got) != got:
                    raise InputError(f"input {name!r} dim {axis} ({want!r}) is {got}, but another input "
                                     f"bound {want!r} to {bindings[want]}")
    return arr


def select_kernel(model: Model, graph: Graph, node: Node, kinds: Sequence[str] = DEFAULT_KINDS) -> KernelEntry:
    """The first kernel kind in ``kinds`` that has a kernel for ``node`` and accepts it."""
    if node.domain not in model.opset_imports:
        raise UnsupportedOpError(node.op_type, node.domain, 0, node.label(),
                                 "the model imports no opset for this domain")
    opset = model.opset_imports[node.domain]
    for kind in kinds:
        entry = lookup(node.op_type, node.domain, opset, kind)
        if entry is not None and (entry.applies is None or entry.applies(node, graph)):
            return entry
    raise UnsupportedOpError(node.op_type, node.domain, opset, node.label())


def call_kernel(entry: KernelEntry, node: Node, args: list, ctx: KernelContext | None, opset: int) -> tuple:
    """Call one kernel; errors name the node and its inputs. Returns one value per node output."""
    kwargs = dict(node.attrs)
    if entry.wants_ctx:
        kwargs["ctx"] = ctx if ctx is not None else KernelContext(node=node, opset=opset,
                                                                  num_outputs=len(node.outputs))
    try:
        result = entry.fn(*args, **kwargs)
    except (KernelError, ShapeInferenceError) as e:  # a kernel's own check: add where it happened
        raise type(e)(f"node {node.label()} ({node.domain or 'ai.onnx'}::{node.op_type}): {e}") from e
    except EdgelearnError:
        raise
    except Exception as e:  # noqa: BLE001 - name the node and its inputs, keep the cause
        shapes = ", ".join(_describe(a) for a in args)
        raise KernelError(f"node {node.label()} ({node.domain or 'ai.onnx'}::{node.op_type}, opset "
                          f"{opset}) failed on inputs ({shapes}): {type(e).__name__}: {e}") from e
    if not isinstance(result, tuple):
        result = (result,)
    return tuple(np.asarray(v) if isinstance(v, (np.generic, int, float, bool)) else v for v in result)
