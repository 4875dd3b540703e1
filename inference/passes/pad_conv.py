"""A zero constant Pad on spatial axes only, read by a Conv alone, becomes the Conv's own pads."""
from __future__ import annotations

import numpy as np

from inference.ir import Model
from inference.passes._rewrite import constant_value, single_reader


def fold_pad_into_conv(model: Model) -> bool:
    g, changed = model.graph, False
    for pad in list(g.nodes):
        if pad.op_type != "Pad" or pad.domain != "" or pad.attrs.get("mode", "constant") != "constant":
            continue
        conv = single_reader(g, pad.outputs[0])
        if conv is None or conv.op_type != "Conv" or conv.inputs[0] != pad.outputs[0]:
            continue
        if conv.attrs.get("auto_pad", "NOTSET") != "NOTSET":
            continue
        pads = _pads_of(g, pad)
        if pads is None:
            continue
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if any(begin[:2]) or any(end[:2]) or any(p < 0 for p in pads):
            continue  # batch/channel padding or cropping cannot move into Conv
        spatial = rank - 2
        old = conv.attrs.get("pads", [0] * (2 * spatial))
        conv.attrs["pads"] = [int(a + b) for a, b in zip(old, list(begin[2:]) + list(end[2:]))]
        conv.inputs[0] = pad.inputs[0]
        g.nodes.remove(pad)
        changed = True
    return changed


def _pads_of(g, pad) -> list[int] | None:
    if "pads" in pad.attrs:  # opset < 11
        pads, value = pad.attrs["pads"], pad.attrs.get("value", 0.0)
    else:
        arr = constant_value(g, pad.inputs[1]) if len(pad.inputs) > 1 else None
        if arr is None or (len(pad.inputs) > 3 and pad.inputs[3]):
            return None  # dynamic pads, or an axes input
        pads = [int(p) for p in arr]
        value_arr = constant_value(g, pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2] else np.zeros(1)
        if value_arr is None:
            return None
        value = float(np.asarray(value_arr).reshape(-1)[0]) if np.asarray(value_arr).size else 0.0
    return pads if value == 0.0 else None
