"""Activation memory planning: lifetimes from the static plan, best-fit offsets in one arena.

Every intermediate tensor gets an offset into a single arena such that tensors alive at the same
time never overlap. Elementwise ops may write over an input that dies at that node (in place).
Outputs of view ops take no room of their own but keep the block they view alive. The plan's
``peak_bytes`` is the arena size; ``no_reuse_bytes`` what one buffer per tensor costs. It is what
a Predictor's runs allocate from (:mod:`inference.arena`), what sizes the batch chunks of
:mod:`inference.chunked` and what ``edgelearn bench`` reports.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from inference.ir import Graph, Node
from inference.kernels.transpose import copies as transpose_copies
from inference.session import Session, ValueShapes

ALIGN = 64  # bytes: cache-line aligned offsets
IN_PLACE_OPS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Add", "Sub", "Mul", "Div", "Neg", "Exp",
                "Log", "Sqrt", "Abs", "Erf", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Gelu",
                "Identity", "Dropout", "BatchNormalization", "Sum", "Max", "Min", "PRelu",
                "SqueezeExciteNHWC"}  # ours: its means are taken before any output is written
#: ops whose kernels may return a view of their first input (a reshape, slice, split, broadcast):
#: their outputs live in that input's block
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose", "Slice",
                      "Split", "Expand", "Cast", "CastLike", "Optional", "OptionalGetElement"})


@dataclass
class Buffer:
    name: str
    size: int  # bytes
    first: int  # step that writes it
    last: int  # last step that reads it
    offset: int = -1
    shares_with: str | None = None  # in-place: the input whose memory it takes over
    view: bool = False  # a view of ``shares_with`` (no room of its own; see ``plan_memory``)


@dataclass
class MemoryPlan:
    buffers: dict[str, Buffer] = field(default_factory=dict)
    peak_bytes: int = 0
    no_reuse_bytes: int = 0
    unknown: list[str] = field(default_factory=list)  # values whose size is not static

    @property
    def saving(self) -> float:
        """Fraction of the no-reuse footprint the arena saves."""
        return 1.0 - self.peak_bytes / self.no_reuse_bytes if self.no_reuse_bytes else 0.0

    def report(self) -> str:
        return (f"planned activation memory {self.peak_bytes / 2**20:.2f} MiB vs "
                f"{self.no_reuse_bytes / 2**20:.2f} MiB without reuse ({self.saving:.0%} saved; "
                f"{len(self.buffers)} tensors, {sum(b.shares_with is not None for b in self.buffers.values())} "
                f"in place, {len(self.unknown)} of unknown size)")


def value_layout(graph: Graph, name: str, batch: int, seen: ValueShapes | None = None
                 ) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype ``name`` is planned at: as a run made it (``seen``, when given), else its
    inferred shape with every symbolic dim taken as ``batch``; None when not known."""
    if seen is not None:
        return seen.get(name)
    dims = graph.concrete_shape(name, batch)
    return None if dims is None else (dims, np.dtype(graph.type_of(name).dtype))


def views_input(graph: Graph, node: Node, batch: int = 1, seen: ValueShapes | None = None) -> bool:
    """Whether ``node``'s output is planned as a view of its first input (:data:`VIEW_OPS`), except
    a Transpose whose kernel writes a new array for the planned input (a block swap: attention's
    heads, a layout boundary), which gets a region of its own: planned as a view, its output was
    allocated by numpy on every run (and held by every kernel replay: 0.5 MB each for a BERT)."""
    if node.op_type not in VIEW_OPS or not node.inputs:
        return False
    if node.op_type != "Transpose":
        return True
    layout = value_layout(graph, node.inputs[0], batch, seen)
    return layout is None or not transpose_copies(layout[0], layout[1], node.attrs.get("perm"))


def plan_memory(session: Session, batch: int = 1, in_place: bool = True, seen: ValueShapes | None = None
                ) -> MemoryPlan:
    """Plan the arena of ``session``'s intermediates, symbolic dims taken as ``batch``, or at the
    shapes a run made (``seen``: :meth:`Session.value_shapes`; for graphs whose symbolic dims are
    not all the batch, a sequence length or a size computed at run time).

    The outputs of :data:`VIEW_OPS` take no room of their own but keep their first input's block
    alive as long as they are read (a view of a freed block would read what the next tenant
    wrote); a block one of whose views is a graph output is left out of the arena."""
    graph = session.graph
    keep = set(graph.output_names) | set(graph.initializers) | set(graph.input_names)
    plan = MemoryPlan()
    escaping: set[str] = set()  # blocks a graph output views
    for i, step in enumerate(session.steps):
        node = step.node
        base = node.inputs[0] if views_input(graph, node, batch, seen) else ""
        for name in node.outputs:
            if base in plan.buffers:
                if name in keep:
                    escaping.add(_root(plan, base).name)
                elif name:
                    plan.buffers[name] = Buffer(name, 0, i, i, shares_with=base, view=True)
                continue
            if not name or name in keep:
                continue
            layout = value_layout(graph, name, batch, seen)
            if layout is None:
                plan.unknown.append(name)
                continue
            plan.buffers[name] = Buffer(name, int(math.prod(layout[0])) * layout[1].itemsize, i, i)
        for name in node.inputs:
            if name in plan.buffers:
                plan.buffers[name].last = i
    if escaping:
        plan.buffers = {n: b for n, b in plan.buffers.items() if _root(plan, n).name not in escaping}
    if in_place:
        _mark_in_place(session, plan)
    _assign_offsets(plan)
    plan.no_reuse_bytes = sum(b.size for b in plan.buffers.values())
    return plan


def _mark_in_place(session: Session, plan: MemoryPlan) -> None:
    shared = {b.shares_with for b in plan.buffers.values() if b.shares_with is not None}  # kept as marked:
    for i, step in enumerate(session.steps):  # a scan of every buffer per candidate was 0.2 ms a plan
        node = step.node
        if node.op_type not in IN_PLACE_OPS or not node.outputs or node.outputs[0] not in plan.buffers \
                or plan.buffers[node.outputs[0]].view:
            continue
        out = plan.buffers[node.outputs[0]]
        for name in node.inputs:
            src = plan.buffers.get(name)
            if src is not None and src.last == i and src.size == out.size and not src.view and name not in shared:
                out.shares_with = name
                shared.add(name)
                break


def _root(plan: MemoryPlan, name: str) -> Buffer:
    b = plan.buffers[name]
    while b.shares_with is not None:
        b = plan.buffers[b.shares_with]
    return b


def _assign_offsets(plan: MemoryPlan) -> None:
    """Greedy best fit, largest first: each block goes in the smallest gap that holds it."""
    # in-place chains act as one block living from the first write to the last read
    blocks: dict[str, tuple[int, int, int]] = {}
    for b in plan.buffers.values():
        root = _root(plan, b.name)
        size, first, last = blocks.get(root.name, (root.size, root.first, root.last))
        blocks[root.name] = (max(size, b.size), min(first, b.first), max(last, b.last))
    placed: list[tuple[int, int, int, int]] = []  # offset, aligned end, first, last; by offset
    offsets: dict[str, int] = {}
    for name, (size, first, last) in sorted(blocks.items(), key=lambda kv: (-kv[1][0], kv[1][1])):
        best, best_gap, cursor = None, None, 0
        # those alive with this block, in offset order (``placed`` is kept so: no sort per block);
        # filtered in one comprehension, as a loop's per-block test it was half a plan's time
        for o, end in [(o, end) for o, end, f, l in placed if f <= last and l >= first]:
            gap = o - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            if end > cursor:
                cursor = end
        offset = best if best is not None else cursor
        bisect.insort(placed, (offset, _align(offset + size), first, last))
        offsets[name] = offset
        plan.peak_bytes = max(plan.peak_bytes, offset + size)
    for b in plan.buffers.values():
        b.offset = offsets[_root(plan, b.name).name]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
