"""RNN, GRU and LSTM (opset 1..22): the three ONNX recurrent cells over the shared driver.

Each kernel only defines its cell equations; directions, layouts, sequence lengths and activations
come from ``_rnn_common``. All opset versions share one kernel: later versions only add attributes
(``layout``, ``linear_before_reset``) or types whose defaults keep the older behaviour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from inference.errors import KernelError
from inference.ops._rnn_common import Activation, clipper, make_activations, num_directions, run_rnn
from inference.ops.registry import register


@dataclass
class _Setup:
    """What every cell needs besides its equations, checked and defaulted from the node."""

    n_dirs: int
    hidden: int
    acts: list[list[Activation]]  # per direction, the cell's activation functions
    wb: np.ndarray  # (dirs, gates * hidden) input bias
    rb: np.ndarray  # (dirs, gates * hidden) recurrence bias
    clip: Callable[[np.ndarray], np.ndarray]


def _setup(op: str, gates: int, default_acts: list[str], X, W, R, B, hidden_size, activations,
           activation_alpha, activation_beta, clip, direction) -> _Setup:
    n_dirs = num_directions(op, direction)
    hidden = hidden_size or R.shape[-1]
    rows = gates * hidden
    if W.shape[:2] != (n_dirs, rows) or R.shape[1:] != (rows, hidden):
        raise KernelError(f"{op}: W {W.shape} / R {R.shape} do not match {n_dirs} direction(s), "
                          f"{gates} gate(s) and hidden_size {hidden}")
    acts = make_activations(op, activations, activation_alpha, activation_beta, default_acts, n_dirs)
    if B is None:
        B = np.zeros((n_dirs, 2 * rows), X.dtype)
    return _Setup(n_dirs, hidden, acts, B[:, :rows], B[:, rows:], clipper(clip))


@register("RNN", since=1)
def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, hidden_size=None, activations=None,
        activation_alpha=None, activation_beta=None, clip=None, direction="forward", layout=0,
        output_sequence=0):
    """Ht = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Wbi + Rbi). (``output_sequence`` of opset 1 changes nothing here.)"""
    s = _setup("RNN", 1, ["Tanh"], X, W, R, B, hidden_size, activations, activation_alpha,
               activation_beta, clip, direction)

    def make_step(d):
        (f,) = s.acts[d]
        bias = s.wb[d] + s.rb[d]

        def step(x, states):
            (h,) = states
            return (f(s.clip(x @ W[d].T + h @ R[d].T + bias)),)
        return step

    return run_rnn("RNN", X, [initial_h], sequence_lens, s.hidden, direction, layout, make_step)


@register("GRU", since=1)
def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, hidden_size=None, activations=None,
        activation_alpha=None, activation_beta=None, clip=None, direction="forward", layout=0,
        linear_before_reset=0):
    """Gates z, r, h: Ht = (1 - z) . h + z . Ht-1, where h resets Ht-1 before (default) or after Rh."""
    s = _setup("GRU", 3, ["Sigmoid", "Tanh"], X, W, R, B, hidden_size, activations, activation_alpha,
               activation_beta, clip, direction)

    def make_step(d):
        f, g = s.acts[d]
        Wz, Wr, Wh = np.split(W[d], 3)
        Rz, Rr, Rh = np.split(R[d], 3)
        bz, br, _ = np.split(s.wb[d] + s.rb[d], 3)
        wbh, rbh = np.split(s.wb[d], 3)[2], np.split(s.rb[d], 3)[2]

        def step(x, states):
            (h,) = states
            z = f(s.clip(x @ Wz.T + h @ Rz.T + bz))
            r = f(s.clip(x @ Wr.T + h @ Rr.T + br))
            if linear_before_reset:
                cand = g(s.clip(x @ Wh.T + r * (h @ Rh.T + rbh) + wbh))
            else:
                cand = g(s.clip(x @ Wh.T + (r * h) @ Rh.T + rbh + wbh))
            return ((1 - z) * cand + z * h,)
        return step

    return run_rnn("GRU", X, [initial_h], sequence_lens, s.hidden, direction, layout, make_step)


@register("LSTM", since=1)
def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
         hidden_size=None, activations=None, activation_alpha=None, activation_beta=None, clip=None,
         direction="forward", input_forget=0, layout=0):
    """Gates i, o, f, c (in that order in W, R, B) with optional peepholes P (i, o, f)."""
    s = _setup("LSTM", 4, ["Sigmoid", "Tanh", "Tanh"], X, W, R, B, hidden_size, activations,
               activation_alpha, activation_beta, clip, direction)
    peep = np.zeros((s.n_dirs, 3 * s.hidden), X.dtype) if P is None else P

    def make_step(d):
        f, g, h_act = s.acts[d]
        pi, po, pf = np.split(peep[d], 3)
        bias = s.wb[d] + s.rb[d]

        def step(x, states):
            h, c = states
            gi, go, gf, gc = np.split(x @ W[d].T + h @ R[d].T + bias, 4, axis=-1)
            i = f(s.clip(gi + pi * c))
            forget = 1 - i if input_forget else f(s.clip(gf + pf * c))
            c_new = forget * c + i * g(s.clip(gc))
            o = f(s.clip(go + po * c_new))
            return o * h_act(c_new), c_new
        return step

    return run_rnn("LSTM", X, [initial_h, initial_c], sequence_lens, s.hidden, direction, layout, make_step)
