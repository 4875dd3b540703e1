"""Where a kernel replay's recorded calls read its feeds and write its outputs, so that a run can
hand them the caller's arrays and new output arrays instead of copying through buffers of its own.

Why: a replay (:mod:`inference.kernel_replay`) copied every feed into the buffers its record reads
and every output out of the arrays its record writes. For a KV-cache decoder those are its whole
cache twice a step: at 1000 cached tokens (6 layers, 512 wide) 24 MB in and 24 MB out, 6.7 ms of
a 13.9 ms replayed step, where onnxruntime reads the feeds where they are and allocates its outputs.

A recorded argument is bound to a source (a feed's buffer or an output array) when it views that
source's memory (its chain of bases ends where the source's does) and lies within it: the source
itself or a view of it (a reshape, a slice), made again on the stand-in at the same byte offset,
shape and strides. (An alias the chain of bases does not show reads the recorded buffer: the
capture's check then sees the probe's result differ, and the shape runs step by step.) A source
that some argument reaches in another way (inside a tuple, as a keyword, partly) or that shares
memory with another source is *refused*: never stood in for, copied as before. After the run
every argument is put back, so the replay holds no caller's array between runs.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Hashable, Iterable

import numpy as np


@dataclass(frozen=True)
class Binding:
    """One recorded argument inside a source: the call's argument list, the position in it, and the
    view to make of a stand-in (``whole``: the stand-in itself)."""

    args: list
    index: int
    offset: int  # bytes from the source's first byte to the view's first element
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    whole: bool
    readonly: bool


#: (argument list, position, recorded value) of each argument a run replaced
Patched = list[tuple[list, int, object]]


class Bindings:
    """Every recorded argument that lies in one of ``sources`` (key -> array), by source key."""

    def __init__(self, calls: Iterable[tuple], sources: dict[Hashable, np.ndarray]):
        self.found: dict[Hashable, list[Binding]] = {}
        spans = sorted((*_bounds(a), key) for key, a in sources.items() if type(a) is np.ndarray and a.size)
        self.refused: set[Hashable] = {k for i, (_, end, key) in enumerate(spans) for start, _, other in spans[i + 1:]
                                       if start < end for k in (key, other)}  # sources sharing memory
        self._spans, self._starts = spans, [s for s, _, _ in spans]
        starts = {key: a.__array_interface__["data"][0] for key, a in sources.items() if type(a) is np.ndarray}
        # an argument whose memory no source's owner holds is none of theirs (the arena's, a weight's):
        # found by its owner alone (~0.3 us), not its address (~1.5 us; a capture of a decoder has 700)
        self._owners = {id(_owner(a)) for a in sources.values() if type(a) is np.ndarray}
        for _, args, kwargs in calls:
            for i, a in enumerate(args):
                if type(a) is np.ndarray:
                    key = self._source(a) if id(_owner(a)) in self._owners else None
                    if key is not None:
                        self.found.setdefault(key, []).append(_binding(args, i, a, sources[key], starts[key]))
                elif isinstance(a, (tuple, list)):
                    self._refuse(a)
            self._refuse(kwargs.values())

    def reaches(self, key: Hashable) -> bool:
        """Whether a stand-in can take ``key``'s place: some argument lies in it, none reaches it otherwise."""
        return key in self.found and key not in self.refused

    def bind(self, key: Hashable, stand_in: np.ndarray, patched: Patched) -> None:
        """Every argument in ``key`` made of ``stand_in`` (shaped as the source), noted in ``patched``."""
        for b in self.found[key]:
            patched.append((b.args, b.index, b.args[b.index]))
            view = stand_in if b.whole else np.ndarray(b.shape, b.dtype, stand_in, b.offset, b.strides)
            if b.readonly:
                view = view.view()
                view.flags.writeable = False
            b.args[b.index] = view

    def _source(self, a: np.ndarray) -> Hashable | None:
        """The source ``a`` lies in (a source it only overlaps is refused); None if none."""
        if not a.size:
            return None
        low, high = _bounds(a)
        i = bisect.bisect_right(self._starts, low) - 1
        if i >= 0 and low < self._spans[i][1]:
            key = self._spans[i][2]
            if high <= self._spans[i][1]:
                return key
            self.refused.add(key)
        for start, end, key in self._spans[i + 1:]:  # a wider array over later sources
            if start >= high:
                break
            self.refused.add(key)
        return None

    def _refuse(self, values: Iterable) -> None:
        """Refuse the sources that arrays among ``values`` (a tuple argument, keywords) reach."""
        for v in values:
            if type(v) is np.ndarray and id(_owner(v)) in self._owners:
                key = self._source(v)
                if key is not None:
                    self.refused.add(key)


def restore(patched: Patched) -> None:
    """Put back what :meth:`Bindings.bind` replaced."""
    for args, index, recorded in reversed(patched):
        args[index] = recorded


def borrowable(given: object, buffer: np.ndarray) -> bool:
    """Whether the caller's ``given`` can be read where the record reads ``buffer``: an array of its
    dtype and shape, C-contiguous, aligned and writeable (the compiled calls were typed so)."""
    if type(given) is not np.ndarray or given.dtype != buffer.dtype or given.shape != buffer.shape:
        return False
    flags = given.flags
    return flags.c_contiguous and flags.aligned and flags.writeable


def _owner(a: np.ndarray) -> np.ndarray:
    """The array at the end of ``a``'s chain of bases: the one whose memory it views (itself if none)."""
    while type(a.base) is np.ndarray:
        a = a.base
    return a


def _bounds(a: np.ndarray) -> tuple[int, int]:
    """The first and one-past-last byte addresses ``a`` reads (strides of either sign)."""
    start = a.__array_interface__["data"][0]
    low = high = start
    for n, s in zip(a.shape, a.strides):
        if s < 0:
            low += (n - 1) * s
        else:
            high += (n - 1) * s
    return low, high + a.itemsize


def _binding(args: list, index: int, a: np.ndarray, source: np.ndarray, start: int) -> Binding:
    offset = a.__array_interface__["data"][0] - start
    whole = offset == 0 and a.shape == source.shape and a.strides == source.strides and a.dtype == source.dtype
    return Binding(args, index, offset, a.shape, a.strides, a.dtype, whole, not a.flags.writeable)
