"""One cache for what kernels derive from a weight array once: packed tiles, CSR forms, constants.

Why: a Predictor's session hands a kernel the same initializer object on every run, so work that
depends only on the weight (onnxruntime's pre-packing) is done on the first call and kept while
the array lives. Keyed by the array's identity, not its contents (hashing a weight costs as much
as the product at batch 1), so callers use it only for arrays that never change in place: the
kernel kinds a Predictor plans (``inference.session.CONSTANT_WEIGHT_KINDS``) or int8 weights.

A weight whose packing holds all of its values can then be *released* (:func:`release`): its
array is swapped for a placeholder of the same shape that takes no memory, and the packings move
to the placeholder. Why: the original and its panels had both stayed resident, ResNet-18 holding
its 47 MB of weights about twice. A packing wanted later (another batch picks another tile) is
built from the values restored out of the kept one (:func:`source`).
"""
from __future__ import annotations

import mmap
import weakref
from typing import Any, Callable, Hashable

import numpy as np

_KEPT: dict[tuple[int, Hashable], tuple[weakref.ref, Any]] = {}
#: id(placeholder) -> (a weak reference to it, what restores the released values)
_RELEASED: dict[int, tuple[weakref.ref, Callable[[], np.ndarray]]] = {}


def NO_REF() -> None:
    """A weak reference to nothing: what a kernel's memo of its last constant weight starts from."""
    return None


def prepacked(w: np.ndarray, tag: Hashable, build: Callable[[np.ndarray], Any]) -> Any:
    """``build(values)`` for weight ``w`` under ``tag`` (what is derived, and how), built on the first
    call and returned again while ``w`` lives; the entry goes with the array. ``build`` is handed
    ``w``'s values: ``w`` itself, or what a released ``w`` is restored from. An array that cannot
    be weakly referenced gets a fresh ``build`` every call."""
    key = (id(w), tag)
    hit = _KEPT.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    value = build(source(w))
    _keep(w, tag, value)
    return value


class LastWeights:
    """What one prepared call derived from its constant weights on its last call, kept while the
    very same arrays (or None in the same places) come back. Why: a Predictor passes the same
    initializers on every run, and deriving a block's panels, padded biases and flat views again
    (each a lookup in :func:`prepacked` or a reshape) cost ~2 us of Python per call, as much as a
    small layer's arithmetic. Held weakly: a released or replaced weight is derived again."""

    __slots__ = ("_refs", "_value")

    def __init__(self) -> None:
        self._refs: tuple = ()
        self._value: Any = None

    def get(self, arrays: tuple, derive: Callable[[], Any]) -> Any:
        """``derive()``, or its value from the last call when ``arrays`` are the same objects."""
        refs = self._refs
        if len(refs) == len(arrays):
            for ref, a in zip(refs, arrays):
                if ref() is not a:
                    break
            else:
                return self._value
        value = derive()
        try:
            self._refs = tuple(NO_REF if a is None else weakref.ref(a) for a in arrays)
        except TypeError:  # not weakly referable: derived on every call
            self._refs = ()
            return value
        self._value = value
        return value


def _keep(w: np.ndarray, tag: Hashable, value: Any) -> None:
    key = (id(w), tag)
    try:
        _KEPT[key] = (weakref.ref(w, lambda _r, k=key: _KEPT.pop(k, None)), value)
    except TypeError:
        pass


def packings(w: np.ndarray) -> dict[Hashable, Any]:
    """What is kept for ``w``, by tag. From a copy of the table: ``list(_KEPT.items())`` iterated
    it, and an entry's weak-reference callback (a collection while the list grew) or another
    thread's packing could change its size meanwhile (seen once in the suite: RuntimeError from a
    two-thread Predictor's first run); the copy is made in one C call under the GIL."""
    return {tag: v for (i, tag), (ref, v) in _KEPT.copy().items() if i == id(w) and ref() is w}


def _restore_of(w: Any) -> Callable[[], np.ndarray] | None:
    """What restores ``w``'s values when ``w`` is a released weight's placeholder, else None."""
    entry = _RELEASED.get(id(w))
    return entry[1] if entry is not None and entry[0]() is w else None


def source(w: np.ndarray) -> np.ndarray:
    """``w``'s values: ``w`` itself, or for a released weight a fresh array restored from its packing
    (for a kernel's path that reads the values rather than a packing)."""
    restore = _restore_of(w)
    return w if restore is None else restore()


def is_released(w: Any) -> bool:
    return _restore_of(w) is not None


def release(w: np.ndarray, restore: Callable[[], np.ndarray]) -> np.ndarray:
    """A placeholder for ``w`` that holds no memory, its packings moved to it; ``restore()`` gives
    ``w``'s values back, from a kept packing (the caller checks that it does). The placeholder has
    ``w``'s shape and dtype and reads as zeros (an anonymous read-only mapping: never resident), so
    a path that read it rather than :func:`source` would compute wrong numbers, not crash: callers
    release only weights whose kernels read them through :func:`prepacked` or :func:`source`."""
    buffer = mmap.mmap(-1, max(w.nbytes, 1), prot=mmap.PROT_READ)
    placeholder = np.frombuffer(buffer, dtype=w.dtype, count=w.size).reshape(w.shape)
    for tag, value in packings(w).items():
        _keep(placeholder, tag, value)
    key = id(placeholder)
    _RELEASED[key] = (weakref.ref(placeholder, lambda _r, k=key: _RELEASED.pop(k, None)), restore)
    return placeholder


def constant_weight(graph: Any, name: str) -> np.ndarray | None:
    """``name``'s array when it is an initializer no feed can override (what may be prepacked at
    plan time), else None: the passes' test, imported on use (the passes import the kernels)."""
    from inference.passes._rewrite import constant_value

    return constant_value(graph, name)
