"""If, Loop, Scan and SequenceMap: ops whose bodies are subgraphs run by the session."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


@register("If", since=1)
def if_(cond, *, then_branch, else_branch, ctx):
    branch = then_branch if bool(np.asarray(cond).reshape(-1)[0]) else else_branch
    return tuple(ctx.run_graph(branch, {}, ctx.outer))


@register("Loop", since=1)
def loop(max_trip=None, cond=None, *carried, body, ctx):
    n_carried = len(carried)
    trips = None if max_trip is None else int(np.asarray(max_trip).reshape(-1)[0])
    keep_going = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
    n_scan = len(body.outputs) - 1 - n_carried
    scans: list[list] = [[] for _ in range(n_scan)]
    state = list(carried)
    i = 0
    while keep_going and (trips is None or i < trips):
        feeds = [np.array(i, dtype=np.int64), np.array(keep_going)] + state
        out = ctx.run_graph(body, feeds, ctx.outer)
        keep_going = bool(np.asarray(out[0]).reshape(-1)[0])
        state = list(out[1:1 + n_carried])
        for k in range(n_scan):
            scans[k].append(out[1 + n_carried + k])
        i += 1
    results = state + [_scan_result(parts, body.outputs[1 + n_carried + k], ctx) for k, parts in enumerate(scans)]
    return tuple(results)


def _scan_result(parts: list, value, ctx):
    if parts:
        if isinstance(parts[0], list):  # sequence scan outputs are concatenated sequences
            return [t for p in parts for t in p]
        return np.stack(parts)
    t = value.type
    dtype = t.dtype if t is not None and hasattr(t, "dtype") else np.float32
    return np.zeros((0,), dtype=dtype)


@register("Scan", since=9)
def scan(*args, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None, ctx):
    n_state = len(args) - num_scan_inputs
    states, xs = list(args[:n_state]), list(args[n_state:])
    in_axes = scan_input_axes or [0] * num_scan_inputs
    in_dirs = scan_input_directions or [0] * num_scan_inputs
    xs = [np.moveaxis(x, ax % x.ndim, 0) for x, ax in zip(xs, in_axes)]
    xs = [x[::-1] if d else x for x, d in zip(xs, in_dirs)]
    lengths = {x.shape[0] for x in xs}
    if len(lengths) > 1:
        raise KernelError(f"Scan inputs have different sequence lengths {sorted(lengths)}")
    steps = lengths.pop() if lengths else 0
    n_out = len(body.outputs) - n_state
    collected: list[list] = [[] for _ in range(n_out)]
    for t in range(steps):
        out = ctx.run_graph(body, states + [x[t] for x in xs], ctx.outer)
        states = list(out[:n_state])
        for k in range(n_out):
            collected[k].append(out[n_state + k])
    out_axes = scan_output_axes or [0] * n_out
    out_dirs = scan_output_directions or [0] * n_out
    ys = []
    for parts, ax, d in zip(collected, out_axes, out_dirs):
        y = np.stack(parts[::-1] if d else parts)
        ys.append(np.moveaxis(y, 0, ax % y.ndim))
    return tuple(states + ys)


@register("Scan", since=8)
def scan_v8(sequence_lens, *args, body, num_scan_inputs, directions=None, ctx):
    """Opset 8 Scan: a leading batch axis and optional per-batch sequence lengths."""
    n_state = len(args) - num_scan_inputs
    batch = args[0].shape[0] if args else 0
    per_batch = []
    for b in range(batch):
        sub = [a[b] for a in args]
        if sequence_lens is not None:
            n = int(sequence_lens[b])
            sub = sub[:n_state] + [x[:n] for x in sub[n_state:]]
        per_batch.append(scan(*sub, body=body, num_scan_inputs=num_scan_inputs,
                              scan_input_directions=directions, ctx=ctx))
    return tuple(np.stack([r[k] for r in per_batch]) for k in range(len(per_batch[0])))


@register("SequenceMap", since=17)
def sequence_map(seq, *extra, body, ctx):
    n = len(seq)
    results: list[list] = [[] for _ in body.outputs]
    for i in range(n):
        feeds = [seq[i]] + [e[i] if isinstance(e, list) else e for e in extra]
        for k, v in enumerate(ctx.run_graph(body, feeds, ctx.outer)):
            results[k].append(v)
    return tuple(results)
