"""Run an IR graph: a static plan of kernel calls with intermediates freed after their last reader.

Everything that does not depend on the run is settled when the plan is made: the kernel per node,
its attributes bound (by the kernel's own ``bind`` when it has one, which may also memoise what it
derives from input shapes), input and output names, what to free after each step. A run then only
gathers inputs, calls and stores: on batch-1 small models the loop and the attribute handling had
cost more than the arithmetic (an MNIST CNN: 143 -> 62 us per run, ``benchmarks/overhead.py``).
Errors are located after the fact (the ``try`` costs nothing until something raises).
"""
from __future__ import annotations

import functools
import time
from collections import ChainMap
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from inference.errors import EdgelearnError, InputError, KernelError, ShapeInferenceError, UnsupportedOpError
from inference.ir import Graph, Model, Node, TensorType, outer_names
from inference.kernels.activation_matmul import REPLAYABLE
from inference.kernels.arena_slot import arm, close_workspace, open_workspace, taken
from inference.ops.registry import KernelContext, KernelEntry, lookup
from inference.shape_values import plan_shape_values

DEFAULT_KINDS = ("fast", "reference")
#: for sessions whose initializers never change (a Predictor's): "sparse" and "packed" kernels pack
#: their weight once, so they must not serve graphs whose arrays training rewrites in place between runs
CONSTANT_WEIGHT_KINDS = ("sparse", "packed") + DEFAULT_KINDS
#: for sessions that also replay their kernel calls (a Predictor's with ``Config.kernel_replay``):
#: :data:`~inference.kernels.activation_matmul.REPLAYABLE` kernels do in numba what numpy does as
#: fast, so that a replay can repeat it
REPLAY_KINDS = ("sparse", "packed", REPLAYABLE) + DEFAULT_KINDS

#: called after each step as ``(node, kernel, start, end)``, times from ``time.perf_counter``
Profiler = Callable[[Node, "KernelEntry", float, float], None]
#: each array a run produced, by name: its shape and dtype (what an arena is planned at)
ValueShapes = dict[str, tuple[tuple[int, ...], np.dtype]]


@dataclass
class Step:
    """One planned kernel call and the names freed once it has run.

    ``call`` is the kernel with the node's attributes (and ``ctx``) already bound, so running a
    step only gathers the inputs: the run loop does per node what cannot be known before the run.
    Planned once: edit a node after planning and the session must be built again.
    """

    node: Node
    kernel: KernelEntry
    ctx: KernelContext | None
    free_after: tuple[str, ...] = ()
    opset: int = 1
    call: Callable[..., Any] | None = None
    inputs: tuple[str, ...] = ()  # "" (an omitted optional input) reads as None
    outputs: tuple[str, ...] = ()  # the named outputs only
    out_index: tuple[int, ...] = ()  # the position of each named output in the kernel's result
    single: bool = False  # exactly one output, the first: an array result is stored as is


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
        self._no_slots = (None,) * len(self.steps)
        #: the steps computing values from the feeds' shapes alone, kept per feed shapes
        #: (``inference.shape_values``); None: there are none, a subgraph's session, or one whose
        #: initializers may change between runs (training's: only kinds that pack a weight once
        #: promise they do not, :data:`CONSTANT_WEIGHT_KINDS`)
        constant = "packed" in self.kinds
        self.shape_values = plan_shape_values(self.graph, self.steps) if constant and not self._outer else None
        self.profiler: Profiler | None = None  # per-op timing hook (``edgelearn bench``'s trace)
        #: where the intermediates go (``inference.arena.Arenas``); None: numpy allocates each
        self.arenas: Any = None
        #: recorded kernel calls to replay (``inference.kernel_replay.KernelReplays``); None: never
        self.replays: Any = None

    # -- planning ---------------------------------------------------------------------------
    def _plan(self) -> list[Step]:
        steps = [Step(n, self._select(n), None, opset=self._opset(n)) for n in self.graph.nodes]
        for s in steps:
            node = s.node
            if s.kernel.wants_ctx:
                s.ctx = KernelContext(node=node, opset=s.opset, num_outputs=len(node.outputs),
                                      run_graph=self._run_subgraph)
            s.call = bind_kernel(s.kernel, node, s.ctx)
            s.inputs = tuple(node.inputs)
            s.out_index = tuple(i for i, name in enumerate(node.outputs) if name)
            s.outputs = tuple(node.outputs[i] for i in s.out_index)
            s.single = s.out_index == (0,)
        self._assign_frees(steps)
        self._contexts = [s.ctx for s in steps if s.ctx is not None]
        self._output_names = tuple(self.graph.output_names)  # also what _assign_frees keeps alive
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
        """Run the plan on ``feeds`` and return the requested outputs (default: all, in order):
        by replay of its recorded kernel calls where :attr:`replays` has them for these feeds."""
        replays = self.replays
        if replays is not None and output_names is None and outer is None and self.profiler is None:
            outputs = replays.run(feeds)
            if outputs is not None:
                return outputs
        return self.execute(feeds, output_names, outer)

    def execute(self, feeds: Mapping[str, Any], output_names: Sequence[str] | None = None,
                outer: Mapping[str, Any] | None = None, seen: ValueShapes | None = None) -> list[Any]:
        """Run the plan step by step (what :meth:`run` does unless it replays); each array's shape
        and dtype go into ``seen`` when given (and when the arena asks for them: see
        :meth:`inference.arena.Arenas.wants_shapes`)."""
        local: dict[str, Any] = dict(self.graph.initializers)
        local.update(feeds)
        local[""] = None  # an omitted optional input; named outputs never write it
        env = ChainMap(local, outer) if outer is not None else local
        for ctx in self._contexts:
            ctx.outer = env
        profiler = self.profiler
        arenas = self.arenas
        slots = arenas.acquire(feeds) if arenas is not None else None
        if slots is not None:
            open_workspace(arenas.workspace)
        learn = slots is None and arenas is not None and arenas.wants_shapes(feeds)
        if learn and seen is None:
            seen = {}  # this run's shapes plan the arena for the next run of these feeds' shapes
        steps, shape_values, computed = self.steps, self.shape_values, None
        if shape_values is not None and outer is None:
            known = shape_values.lookup(feeds)
            if known is not None:  # start with the shape arithmetic's values, skip its steps
                local.update(known)
                steps = shape_values.kept_steps
                slots = slots if slots is None else tuple(slots[i] for i in shape_values.kept_index)
            else:
                computed = {}  # this run's values of it, kept for the next run of these shapes
        record = _recorder(local, seen, computed, shape_values) if seen is not None or computed is not None else None
        step = None
        try:
            for step, slot in zip(steps, self._no_slots if slots is None else slots):
                if profiler is not None:
                    start = time.perf_counter()
                if slot is None:
                    result = step.call(*[env[name] for name in step.inputs])
                else:  # the arena's region for this output (or NOTHING); what views it unplanned is copied
                    arm(slot)
                    result = arenas.owned(step.call(*[env[name] for name in step.inputs]), taken())
                if step.single and type(result) is np.ndarray:
                    local[step.outputs[0]] = result
                else:
                    _store(step, result, local)
                if record is not None:
                    record(step.outputs)
                if profiler is not None:
                    try:
                        profiler(step.node, step.kernel, start, time.perf_counter())
                    except Exception as e:  # noqa: BLE001 - the hook's own failure, not the node's
                        raise _HookFailed(e) from e
                for name in step.free_after:
                    local.pop(name, None)
        except _HookFailed as e:
            raise e.error
        except Exception as e:  # noqa: BLE001 - name the node that failed (free while none does)
            if step is None:
                raise
            _reraise_for_step(step, env, e)
        finally:
            if slots is not None:
                arm(None)
                arenas.release(close_workspace())
        if learn:
            arenas.learn_shapes(feeds, seen)
        if computed is not None:
            shape_values.keep(feeds, computed)
        del local[""]
        try:
            return [env[n] for n in output_names or self._output_names]
        except KeyError:
            missing = [n for n in output_names or self._output_names if n not in env]
            raise InputError(f"outputs {missing} were not produced by graph {self.graph.name!r}") from None

    def value_shapes(self, feeds: Mapping[str, Any]) -> ValueShapes:
        """The shape and dtype of every array a run on ``feeds`` produces (a run made for it)."""
        seen: ValueShapes = {}
        self.execute(feeds, seen=seen)
        return seen

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


def _recorder(local: dict, seen: ValueShapes | None, computed: dict | None,
              shape_values: Any) -> Callable[[tuple[str, ...]], None]:
    """A function of a step's output names, called once the step stored them in ``local``, that
    notes each array's shape and dtype in ``seen`` and the values of ``shape_values``' steps in
    ``computed`` (either may be None). A call of its own, not a profiler hook as it was: the hook
    read the clock twice a step for nothing (a KV-cache decoder relearning the shapes of cache
    lengths that came back after their plan was dropped: 0.49 -> 0.47 ms a step, small)."""
    names = shape_values.names if computed is not None else frozenset()

    def record(outputs: tuple[str, ...]) -> None:
        for name in outputs:
            value = local.get(name)
            if type(value) is np.ndarray:
                if seen is not None:
                    seen[name] = (value.shape, value.dtype)
                if name in names:
                    computed[name] = value

    return record


class _HookFailed(Exception):
    """The profiler hook raised ``error``: the run passes it on as it is, not as the node's."""

    def __init__(self, error: Exception):
        super().__init__(error)
        self.error = error


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


def bind_kernel(entry: KernelEntry, node: Node, ctx: KernelContext | None) -> Callable[..., Any]:
    """``entry.fn`` with the node's attributes (and ``ctx``) bound: a callable of the inputs only.

    The kernel's own ``bind`` when it has one (it resolves attributes once, see the registry);
    otherwise a partial. A binder's errors (a bad attribute) surface when the node runs, as before.
    """
    kwargs = dict(node.attrs)
    if entry.wants_ctx:
        kwargs["ctx"] = ctx
    if entry.bind is not None:
        try:
            return entry.bind(**kwargs)
        except EdgelearnError:  # e.g. an unknown activation: the kernel itself reports it, naming the node
            pass
    return functools.partial(entry.fn, **kwargs) if kwargs else entry.fn


def _as_value(v: Any) -> Any:
    return np.asarray(v) if isinstance(v, (np.generic, int, float, bool)) else v


def _store(step: Step, result: Any, local: dict[str, Any]) -> None:
    """Bind a kernel's result (one value or a tuple, one per node output) to the step's named outputs."""
    if not isinstance(result, tuple):
        result = (result,)
    for i, name in zip(step.out_index, step.outputs):
        if i < len(result):
            local[name] = _as_value(result[i])


def _reraise_for_step(step: Step, env: Mapping[str, Any], e: Exception) -> None:
    """Raise ``e`` again naming the step's node: a missing input, or the kernel's failure."""
    node = step.node
    missing = [n for n in step.inputs if n not in env]
    if isinstance(e, KeyError) and missing:
        raise InputError(f"node {node.label()} ({node.op_type}) needs {missing[0]!r}, which was not "
                         "fed or computed") from None
    err = _kernel_error(node, step.opset, [env[n] for n in step.inputs if n in env], e)
    if err is e:
        raise e
    raise err from e


def _kernel_error(node: Node, opset: int, args: list, e: Exception) -> Exception:
    """The error to raise for ``e`` escaping the kernel of ``node``: located, cause kept by the caller."""
    if isinstance(e, (KernelError, ShapeInferenceError)):  # a kernel's own check: add where it happened
        return type(e)(f"node {node.label()} ({node.domain or 'ai.onnx'}::{node.op_type}): {e}")
    if isinstance(e, EdgelearnError):
        return e
    shapes = ", ".join(_describe(a) for a in args)
    return KernelError(f"node {node.label()} ({node.domain or 'ai.onnx'}::{node.op_type}, opset "
                       f"{opset}) failed on inputs ({shapes}): {type(e).__name__}: {e}")


def call_kernel(entry: KernelEntry, node: Node, args: list, ctx: KernelContext | None, opset: int) -> tuple:
    """Call one kernel; errors name the node and its inputs. Returns one value per node output."""
    kwargs = dict(node.attrs)
    if entry.wants_ctx:
        kwargs["ctx"] = ctx if ctx is not None else KernelContext(node=node, opset=opset,
                                                                  num_outputs=len(node.outputs))
    try:
        result = entry.fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - name the node and its inputs, keep the cause
        err = _kernel_error(node, opset, args, e)
        if err is e:
            raise
        raise err from e
    if not isinstance(result, tuple):
        result = (result,)
    return tuple(_as_value(v) for v in result)
