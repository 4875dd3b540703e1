"""Op registry: kernels keyed by (domain, op type, since-version), as in onnx.reference.

A kernel is a plain function. Inputs arrive positionally as numpy arrays (``None`` for an
omitted optional input; sequences as Python lists), attributes as keyword arguments holding
only the attributes the node sets, so the function's own defaults are the schema defaults.
It returns one array or a tuple of arrays (one per node output). A kernel that needs more
(subgraphs, number of outputs, the opset) declares a keyword-only parameter ``ctx`` and gets a
:class:`KernelContext`.

Several kernels may serve one op: ``kind="reference"`` is the exact numpy oracle, other kinds
(``"fast"``) are picked by the session when their ``applies`` predicate accepts the node.

A kernel may also give a ``bind``: ``bind(**attrs)`` (with ``ctx`` if the kernel wants it) returns a
callable of the inputs alone that computes what ``fn(*inputs, **attrs)`` does. The session calls it
once per node when it plans, so a kernel resolves its attributes once (and may memoise what it
derives from the input shapes) instead of on every run: on batch-1 small models such fixed work
cost more than the arithmetic. Without one, the session binds the attributes with a partial.
"""
from __future__ import annotations

import bisect
import inspect
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

Kernel = Callable[..., Any]


@dataclass(frozen=True)
class KernelEntry:
    domain: str
    op_type: str
    since: int
    fn: Kernel
    kind: str = "reference"
    wants_ctx: bool = False
    applies: Callable[..., bool] | None = None
    bind: Callable[..., Callable[..., Any]] | None = None


@dataclass
class KernelContext:
    """What a kernel may ask of the session running it.

    ``outer``: the values of the run in progress that a subgraph may read, per thread: a session
    sets it at the start of each run, and concurrent runs of one session (a Predictor called from
    several threads) must each see their own (they had seen whichever run set it last)."""

    node: Any  # inference.ir.Node
    opset: int
    num_outputs: int
    run_graph: Callable[..., list] = field(repr=False, default=None)  # (graph, feeds: dict) -> list
    _scope: threading.local = field(repr=False, default_factory=threading.local, compare=False)

    @property
    def outer(self) -> Mapping[str, Any]:
        return getattr(self._scope, "env", _NOTHING)

    @outer.setter
    def outer(self, env: Mapping[str, Any]) -> None:
        self._scope.env = env


_NOTHING: Mapping[str, Any] = MappingProxyType({})


_REGISTRY: dict[tuple[str, str], dict[str, list[KernelEntry]]] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register(op_type: str, since: int = 1, domain: str = "", kind: str = "reference",
             applies: Callable[..., bool] | None = None,
             bind: Callable[[Kernel], Callable[..., Callable[..., Any]]] | None = None) -> Callable[[Kernel], Kernel]:
    """Decorator: register ``fn`` as the kernel of ``domain::op_type`` from opset ``since`` on.

    ``bind``, if given, is called with ``fn`` and returns the entry's plan-time binder (see above):
    the binder can fall back to ``fn`` itself for whatever it does not specialise.
    """

    def deco(fn: Kernel) -> Kernel:
        wants_ctx = "ctx" in inspect.signature(fn).parameters
        entry = KernelEntry(_norm_domain(domain), op_type, since, fn, kind, wants_ctx, applies,
                            bind(fn) if bind is not None else None)
        by_kind = _REGISTRY.setdefault((entry.domain, op_type), {})
        entries = by_kind.setdefault(kind, [])
        if any(e.since == since for e in entries):
            raise ValueError(f"kernel {domain}::{op_type} since {since} ({kind}) registered twice")
        bisect.insort(entries, entry, key=lambda e: e.since)
        return fn

    return deco


def lookup(op_type: str, domain: str, opset: int, kind: str = "reference") -> KernelEntry | None:
    """The kernel with the largest since-version not above ``opset``, or None."""
    entries = _REGISTRY.get((_norm_domain(domain), op_type), {}).get(kind, [])
    best = None
    for e in entries:
        if e.since <= opset:
            best = e
    return best


def registered_ops() -> list[tuple[str, str, int, str]]:
    """(domain, op_type, since, kind) of every registered kernel, for reports and tests."""
    return sorted((e.domain, e.op_type, e.since, e.kind)
                  for by_kind in _REGISTRY.values() for es in by_kind.values() for e in es)
