"""Shared machinery of RNN, GRU and LSTM: activations, layouts, directions and sequence lengths.

A cell is a function ``step(x_t, states, direction) -> states`` over one time step of a batch; the
driver here runs it forward or backward over time, freezes the states of sequences that already
ended (``sequence_lens``) and zeroes their outputs, and arranges outputs in the requested layout.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from inference.errors import KernelError

Activation = Callable[[np.ndarray], np.ndarray]

# name -> (function of (x, alpha, beta), default alpha, default beta)
_ACTIVATIONS: dict[str, tuple[Callable, float, float]] = {
    "relu": (lambda x, a, b: np.maximum(x, 0), 0.0, 0.0),
    "tanh": (lambda x, a, b: np.tanh(x), 0.0, 0.0),
    "sigmoid": (lambda x, a, b: 1 / (1 + np.exp(-x)), 0.0, 0.0),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x >= a, x, 0), 1.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)), 1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), 0.0, 0.0),
    "softplus": (lambda x, a, b: np.log1p(np.exp(x)), 0.0, 0.0),
}

DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def num_directions(op: str, direction: str) -> int:
    if direction not in DIRECTIONS:
        raise KernelError(f"{op}: direction must be forward, reverse or bidirectional, got {direction!r}")
    return DIRECTIONS[direction]


def make_activations(op: str, names: Sequence[str] | None, alphas: Sequence[float] | None,
                betas: Sequence[float] | None, defaults: Sequence[str], n_dirs: int) -> list[list[Activation]]:
    """Per direction, the cell's activation functions (alpha/beta consumed in list order)."""
    names = list(names) if names else list(defaults) * n_dirs
    per_dir = len(defaults)
    if len(names) != per_dir * n_dirs:
        raise KernelError(f"{op}: expected {per_dir * n_dirs} activations, got {len(names)}")
    alphas, betas = list(alphas or []), list(betas or [])
    funcs: list[Activation] = []
    for i, name in enumerate(names):
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise KernelError(f"{op}: unknown activation {name!r}")
        fn, da, db = _ACTIVATIONS[key]
        a = alphas[i] if i < len(alphas) else da
        b = betas[i] if i < len(betas) else db
        funcs.append(lambda x, fn=fn, a=a, b=b: fn(x, x.dtype.type(a), x.dtype.type(b)).astype(x.dtype))
    return [funcs[d * per_dir:(d + 1) * per_dir] for d in range(n_dirs)]


def clipper(clip: float | None) -> Activation:
    """The cell clip applied to activation inputs (identity when not set)."""
    if clip is None:
        return lambda x: x
    return lambda x: np.clip(x, -clip, clip)


def reverse_index(seq_len: int, lens: np.ndarray) -> np.ndarray:
    """(seq, batch) time indices reversing each sequence's valid prefix; padding stays in place."""
    t = np.arange(seq_len).reshape(-1, 1)
    return np.where(t < lens, lens - 1 - t, t)


def run_direction(x: np.ndarray, states: tuple[np.ndarray, ...], step: Callable, lens: np.ndarray,
                  reverse: bool) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Run ``step`` over time. x: (seq, batch, input); returns Y (seq, batch, hidden) and last states.

    The first state is the hidden state, written to Y. Past a sequence's length its states freeze
    and its output is zero.
    """
    seq_len, batch = x.shape[:2]
    cols = np.arange(batch)
    if reverse:
        x = x[reverse_index(seq_len, lens), cols]
    ys = []
    for t in range(seq_len):
        new = step(x[t], states)
        live = (t < lens).reshape(-1, 1)
        states = tuple(np.where(live, n, s) for n, s in zip(new, states))
        ys.append(np.where(live, new[0], 0).astype(x.dtype))
    y = np.stack(ys) if ys else np.zeros((0, batch, states[0].shape[-1]), x.dtype)
    if reverse:
        y = y[reverse_index(seq_len, lens), cols]
    return y, states


def run_rnn(op: str, X: np.ndarray, initial: Sequence[np.ndarray | None], sequence_lens, hidden_size: int,
            direction: str, layout: int, make_step: Callable[[int], Callable]):
    """Drive a cell over every direction; returns (Y, *final states) in the node's layout.

    ``initial`` holds the optional initial states (initial_h[, initial_c]); ``make_step(d)`` builds the
    step function of direction ``d``.
    """
    n_dirs = num_directions(op, direction)
    if X.ndim != 3:
        raise KernelError(f"{op}: X must be 3D, got rank {X.ndim}")
    if layout:
        X = np.swapaxes(X, 0, 1)
        initial = [None if s is None else np.swapaxes(s, 0, 1) for s in initial]
    seq_len, batch = X.shape[:2]
    lens = np.full(batch, seq_len) if sequence_lens is None else np.asarray(sequence_lens).astype(np.int64)
    lens = lens.reshape(1, -1)
    zeros = np.zeros((n_dirs, batch, hidden_size), X.dtype)
    initial = [zeros if s is None else s.astype(X.dtype) for s in initial]
    ys, finals = [], []
    for d in range(n_dirs):
        reverse = direction == "reverse" or d == 1
        y, states = run_direction(X, tuple(s[d] for s in initial), make_step(d), lens, reverse)
        ys.append(y)
        finals.append(states)
    Y = np.stack(ys, axis=1)  # (seq, dirs, batch, hidden)
    outs = [np.stack([f[i] for f in finals]) for i in range(len(initial))]  # (dirs, batch, hidden)
    if layout:
        Y = Y.transpose(2, 0, 1, 3)
        outs = [np.swapaxes(o, 0, 1) for o in outs]
    return (Y, *outs)
