"""A session's activations in one preallocated block, at the offsets of the memory plan.

Each step whose output the plan places gets its region as a *slot* (:mod:`inference.kernels.
arena_slot`): kernels that allocate their result through ``new_output`` write there, and their
scratch (padded copies, ring buffers) comes from a workspace through ``new_scratch``. A run then
allocates no activation memory and rewrites the same few megabytes every time: cache lines that
stay warm, and a footprint that stops growing after the first run of each batch size, as an edge
device wants. Why: with numpy allocating, each layer's output landed in memory gone cold since
it was last written (MobileNetV2's layers ran 1.2-1.3x their time repeated alone).

Everything else keeps numpy's allocation. What a step returns is checked (:meth:`Arenas.owned`):
a result that views the block where the plan did not expect a view (a kernel that returned its
input as is) or that views the workspace is copied out, so nothing reads a region after its
next tenant wrote it, and graph outputs never live in the block.

The block and the workspace are the session's, sized by the largest batch seen (grown by half
again, :func:`grown`); the plans (a few slots each) are kept per batch size. A run that finds them
in use by another thread allocates as before.

A graph whose symbolic dims are not all the batch (a transformer exported with a dynamic
sequence length; sizes computed at run time) cannot be planned from its inferred shapes: those
dims, taken as the batch, planned a 128-token BERT's activations at one token, so no step's
output fitted its region and every run allocated as without an arena. Its plans are kept per
input shapes instead, each made from the shapes of a run of them: the first run of new shapes
allocates and notes every array's shape (:meth:`Arenas.wants_shapes`), the next is planned.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from inference.ir import Graph, TensorType
from inference.kernels.arena_slot import NOTHING
from inference.memory_plan import ALIGN, MemoryPlan, plan_memory, value_layout
from inference.session import Session, ValueShapes
from inference.shape_values import feed_signature

#: plans kept, by batch size or (``sized_by_run``) input shapes (each a few hundred bytes per step;
#: planning one took 0.1-0.5 ms); as many runs' shapes are kept until planned. As many as kernel
#: replays kept (``kernel_replay.KEPT_REPLAYS``): with 16, a sequence length whose plan was dropped
#: before its third run had been captured without the arena (BERT with lengths drawn from 8-128:
#: ~1.6 MB of numpy arrays held per replay; a capture now waits for a plan)
KEPT_PLANS = 64


#: how much a block or workspace grows past what a larger plan needs: half again its old size, at most
#: this much more. Why: growing it replaces it, which drops every kernel replay recorded on it, and a
#: decoder's sequence grows a token a run: grown to fit, a GPT-style model's 60-token generation had
#: replaced its block 60 times, each then captured anew (3-4 runs' time) on its next use
GROWTH_CAP = 8 << 20


def grown(size: int, needed: int) -> int:
    """The new size of a block of ``size`` bytes that must hold ``needed``: exactly that the first
    time, then at least half again the old size (up to :data:`GROWTH_CAP` more)."""
    return needed if size == 0 else max(needed, size + min(size // 2, GROWTH_CAP))


def arenas_for(session: Session) -> "Arenas | None":
    """The arenas of ``session``, or None for a graph with control flow (its subgraphs run outside
    any plan) or one that keeps every value alive (``free_intermediates`` off)."""
    if not session.free_intermediates or any(n.has_subgraphs() for n in session.graph.nodes):
        return None
    return Arenas(session)


def sized_by_run(session: Session) -> bool:
    """Whether the inferred shapes cannot size ``session``'s arena: a step's output has a symbolic
    dim other than a feed's batch dim, so taking every symbolic dim as the batch would size it
    wrongly. (An output of no known shape is left to numpy either way.)"""
    graph = session.graph
    batch_dims = {v.type.shape[0] for v in graph.feed_inputs()
                  if isinstance(v.type, TensorType) and v.type.shape and not isinstance(v.type.shape[0], int)}
    for step in session.steps:
        for name in step.outputs:
            t = graph.type_of(name)
            if isinstance(t, TensorType) and t.shape is not None and any(
                    not isinstance(d, int) and d not in batch_dims for d in t.shape):
                return True
    return False


def _aligned(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64-byte aligned uint8 block of ``nbytes`` and the array owning it (what views' ``base`` is)."""
    owner = np.empty(nbytes + ALIGN, np.uint8)
    start = -owner.ctypes.data % ALIGN
    return owner[start:start + nbytes], owner


class BatchPlan:
    """The memory plan of one batch size (or of the shapes a run made, ``seen``), its regions as
    views of the block it was last laid on."""

    def __init__(self, session: Session, batch: int, seen: ValueShapes | None = None):
        self.plan: MemoryPlan = plan_memory(session, batch, seen=seen)
        self._parts = [_part(step.node.outputs, step.single, self.plan, session.graph, batch, seen)
                       for step in session.steps]
        self._laid_on: np.ndarray | None = None
        self.slots: tuple = ()

    def lay_on(self, block: np.ndarray) -> tuple:
        """Each step's part in ``block``: its slot (an ndarray shaped as its output), :data:`NOTHING`
        (its result is checked) or None (a view the plan placed in its input's block)."""
        if self._laid_on is not block:
            self.slots = tuple(p if not isinstance(p, tuple) else
                               block[p[0]:p[0] + p[1]].view(p[3]).reshape(p[2]) for p in self._parts)
            self._laid_on = block
        return self.slots


def _part(outputs: list[str], single: bool, plan: MemoryPlan, graph: Graph, batch: int,
          seen: ValueShapes | None) -> Any:
    """A step's part: (offset, bytes, shape, dtype) of its region, :data:`NOTHING` or None (see ``lay_on``).
    An elementwise step the plan runs in place gets its dying input's region: its kernels read and
    write each element at the same place (``kernels.elementwise``, ``kernels.row_copies``)."""
    buffer = plan.buffers.get(outputs[0]) if outputs else None
    if buffer is not None and buffer.view:
        return None
    if buffer is None or not single:
        return NOTHING
    shape, dtype = value_layout(graph, buffer.name, batch, seen)
    return buffer.offset, buffer.size, shape, dtype


class Arenas:
    """One session's block, workspace and plans; a run takes them with :meth:`acquire` and gives
    them back with :meth:`release`."""

    def __init__(self, session: Session):
        self._session = session
        self._batched = [v.name for v in session.graph.feed_inputs()
                         if getattr(v.type, "shape", None) and isinstance(v.type.shape[0], str)]
        self._sized_by_run = sized_by_run(session)
        self._seen: OrderedDict[tuple, ValueShapes] = OrderedDict()  # a run's shapes, until planned
        self._plans: OrderedDict[Any, BatchPlan] = OrderedDict()
        self.block, self._owner = _aligned(0)
        self.workspace, self._scratch_owner = _aligned(0)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """What the arena holds now: the block and the workspace."""
        return self.block.size + self.workspace.size

    def acquire(self, feeds: Mapping[str, Any]) -> tuple | None:
        """The slots of each step for these feeds (see :meth:`BatchPlan.lay_on`), the arena held
        for this run until :meth:`release`; None when another thread's run holds it."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            batch = self._batch(feeds)
            key = feed_signature(feeds) if self._sized_by_run else batch
            plan = self._plans.pop(key, None)
            if plan is None:
                seen = self._seen.pop(key, None) if self._sized_by_run else None
                if self._sized_by_run and seen is None:  # no run of these shapes yet (or feeds not arrays)
                    self._lock.release()
                    return None
                plan = BatchPlan(self._session, batch, seen)
            self._plans[key] = plan
            while len(self._plans) > KEPT_PLANS:
                self._plans.popitem(last=False)
            if plan.plan.peak_bytes > self.block.size:
                self.block, self._owner = _aligned(grown(self.block.size, plan.plan.peak_bytes))
            return plan.lay_on(self.block)
        except BaseException:
            self._lock.release()
            raise

    def wants_shapes(self, feeds: Mapping[str, Any]) -> bool:
        """Whether a run of ``feeds`` should note its arrays' shapes for :meth:`learn_shapes`: the
        graph is planned from a run's shapes and these feeds' have no plan yet."""
        key = feed_signature(feeds) if self._sized_by_run else None
        return key is not None and key not in self._plans and key not in self._seen

    def learn_shapes(self, feeds: Mapping[str, Any], seen: ValueShapes) -> None:
        """Keep the shapes a run of ``feeds`` made, to plan their next run."""
        with self._lock:
            self._seen[feed_signature(feeds)] = seen
            while len(self._seen) > KEPT_PLANS:
                self._seen.popitem(last=False)

    def release(self, scratch_wanted: int) -> None:
        """End the run; the workspace grows to what its largest step asked for."""
        if scratch_wanted > self.workspace.size:
            self.workspace, self._scratch_owner = _aligned(grown(self.workspace.size, scratch_wanted))
        self._lock.release()

    def hold(self) -> bool:
        """Take the block and workspace for a run that lays out no plan (a kernel replay, whose
        calls hold their regions already); False when another run holds them."""
        return self._lock.acquire(blocking=False)

    def let_go(self) -> None:
        """End a :meth:`hold`."""
        self._lock.release()

    def owned(self, result: Any, took_slot: bool) -> Any:
        """``result``, copied where it views the workspace, or the block without having taken the
        step's slot (a region the plan gave another value)."""
        if type(result) is np.ndarray:
            base = result.base
            if base is not None and (base is self._scratch_owner or (base is self._owner and not took_slot)):
                return result.copy()
            return result
        if isinstance(result, (tuple, list)):
            return type(result)(self.owned(r, False) for r in result)
        return result

    def _batch(self, feeds: Mapping[str, Any]) -> int:
        for name in self._batched:
            value = feeds.get(name)
            if isinstance(value, np.ndarray) and value.ndim:
                return value.shape[0]
        return 1
