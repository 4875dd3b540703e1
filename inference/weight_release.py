"""Let a Predictor hold each packed weight once: the original array goes, its panels stay.

Why: the packed kernels copy a constant weight into the panel layout of their tile on the first
run (:mod:`inference.kernels.rows_gemm`) and keep the copy, while the graph kept the original:
every weight of a CNN was resident twice (ResNet-18: 37 of its 47 MB, MobileNetV2 13.6 of 14).
onnxruntime likewise drops an initializer once it is pre-packed. The panels hold every value (the
padding is zeros), so the original comes back from them exactly when something needs it: a packing
for another tile (another batch size), a reference path, an export (:func:`values`).

The Predictor calls :func:`release_packed_weights` after a session's first run, when the packings
exist; ``Config.release_weights`` switches it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable

import numpy as np

from inference.ir import outer_names
from inference.kernels import fused, inverted_residual, nhwc
from inference.kernels._prepack import is_released, packings, release, source
from inference.kernels.conv import PACKED
from inference.kernels.rows_gemm import unpacked_panels
from inference.session import Session

#: op -> the inputs its packed kernel reads only through their panels (or, off its fast path,
#: through :func:`values`): the weights of its products, not a depthwise stage's
PANEL_INPUTS: dict[tuple[str, str], tuple[int, ...]] = {
    (fused.DOMAIN, nhwc.OP): (1,),
    (fused.DOMAIN, "FusedMatMul"): (1,),
    (fused.DOMAIN, inverted_residual.OP): (1, 5),  # W1 and W2; Wd is read as it is
}
#: smaller weights stay: each placeholder is a mapping of its own, and they save next to nothing
MIN_BYTES = 16 * 1024

values = source  # a weight's values, restored when it was released (the public name)


def release_packed_weights(session: Session) -> int:
    """Swap every initializer of ``session``'s graph that only packed kernels read, through their
    panels, and that has panels kept, for a placeholder of no memory (``inference.kernels._prepack``);
    returns the bytes let go."""
    graph = session.graph
    readers: dict[str, list[bool]] = {}
    for step in session.steps:
        node = step.node
        panel_inputs = PANEL_INPUTS.get((node.domain, node.op_type), ()) if step.kernel.kind == PACKED else ()
        for i, name in enumerate(node.inputs):
            if name in graph.initializers:
                readers.setdefault(name, []).append(i in panel_inputs)
        for name in outer_names(node):  # read inside an If/Loop body: as it is
            if name in graph.initializers:
                readers.setdefault(name, []).append(False)
    released = 0
    for name, through_panels in readers.items():
        w = graph.initializers[name]
        if not all(through_panels) or w.nbytes < MIN_BYTES or is_released(w):
            continue
        restore = _restorer(w)
        if restore is not None:
            graph.initializers[name] = release(w, restore)
            released += w.nbytes
    return released


def _restorer(w: np.ndarray) -> Callable[[], np.ndarray] | None:
    """What gives ``w``'s values back from its kept panels, checked against ``w`` once; None when
    none are kept (a Winograd transform alone cannot give the values back exactly)."""
    shape, m = w.shape, w.shape[-1]
    k = w.size // m if m else 0
    for tag, value in packings(w).items():
        if isinstance(tag, tuple) and tag[0] == "rows_gemm":
            _, nl, groups = tag

            def restore(panels=value[0], nl=nl, groups=groups) -> np.ndarray:
                return unpacked_panels(panels, k, m, nl, groups).reshape(shape)

            if np.array_equal(restore(), w):
                return restore
    return None


def return_free_memory() -> None:
    """Hand the freed originals' pages back to the system (glibc's ``malloc_trim``; elsewhere a no-op).
    Why: most weights are allocated on the heap, and freeing them there leaves the pages resident
    for the next allocation to reuse: the process's RSS would not show the release."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
