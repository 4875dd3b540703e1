"""Fused in-place optimizer updates: ops of domain ``edgelearn.train``, one node per parameter.

Each op reads the parameter, its gradient, the learning rate and the parameter's state buffers,
updates parameter and buffers *in place* in one numba loop (no temporaries the size of the
parameter), and returns the parameter array itself as its output.

Common inputs, by position: ``X, G, lr, counter, scale, acc`` then the optimizer's buffers.
``counter`` is int64[2] = (optimizer steps, micro-steps); ``scale`` (optional) multiplies the
gradient (global-norm clipping computes it in IR); ``acc`` (optional) accumulates ``accum``
micro-batch gradients, the update then uses their mean. The ``clip`` attribute clips the
gradient by value before accumulation. Adam's moments may be float16 (``fp16_state``): they are
widened chunk by chunk, and ``sqrt(v)`` rather than ``v`` is stored, as ``g**2`` underflows fp16.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from inference.errors import KernelError
from inference.ir import Node
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.protocols import TRAIN_DOMAIN

_COMMON = ("X", "G", "lr", "counter", "scale", "acc")
_OPTIONAL = {"scale", "acc"}
_CHUNK = 1 << 16


def _same_as_param(node: Node, types: list) -> list:
    return [types[0] if types else None]


def _schema(op: str, buffers: tuple[str, ...], attrs: dict) -> None:
    ins = tuple(FormalParam(n.rstrip("?"), optional=n in _OPTIONAL or n.endswith("?")) for n in _COMMON + buffers)
    register_schema(OpSchema(op, TRAIN_DOMAIN, 1, ins, (FormalParam("X_out"),),
                             {"clip": 0.0, "accum": 1, **attrs}, _same_as_param))


# -- numba loops --------------------------------------------------------------------------------
# Scalars arrive already cast to the parameter's dtype and folded into coefficients, and the
# loops hold no data-dependent branches, so float32 updates stay float32 and vectorize;
# error_model="numpy" drops the per-division zero check that would stop vectorization (3x on Adam).
@njit(cache=True, error_model="numpy")
def _prep(g, gscale, clip):
    """The effective gradient of one element: scaled, then clipped by value (clip = inf: off)."""
    return min(max(g * gscale, -clip), clip)


@njit(cache=True, error_model="numpy")
def _accumulate(acc, g, gscale, clip):
    for i in range(acc.size):
        acc[i] += _prep(g[i], gscale, clip)


@njit(cache=True, error_model="numpy")
def _sgd(p, g, lr, wd, gscale, clip):
    for i in range(p.size):
        p[i] -= lr * (_prep(g[i], gscale, clip) + wd * p[i])


@njit(cache=True, error_model="numpy")
def _sgd_momentum(p, g, buf, lr, wd, keep, take, na, nb, gscale, clip):
    """``buf = keep * buf + take * d``; ``p -= lr * (na * d + nb * buf)``: the first step, dampening
    and Nesterov are all coefficients, so the loop has no branch."""
    for i in range(p.size):
        d = _prep(g[i], gscale, clip) + wd * p[i]
        b = keep * buf[i] + take * d
        buf[i] = b
        p[i] -= lr * (na * d + nb * b)


@njit(cache=True, error_model="numpy")
def _adam_elem(pi, d, mi, vi, b1, c1, b2, c2, eps, l2, decay, step, sqrt_bc2):
    """One element of Adam(W): returns (p, m, v). ``l2``: coupled decay, ``decay``: decoupled factor."""
    d = d + l2 * pi
    mi = b1 * mi + c1 * d
    vi = b2 * vi + c2 * d * d
    return pi * decay - step * mi / (math.sqrt(vi) / sqrt_bc2 + eps), mi, vi


@njit(cache=True, error_model="numpy")
def _adam(p, g, m, v, b1, c1, b2, c2, eps, l2, decay, step, sqrt_bc2, gscale, clip):
    for i in range(p.size):
        p[i], m[i], v[i] = _adam_elem(p[i], _prep(g[i], gscale, clip), m[i], v[i], b1, c1, b2, c2, eps, l2,
                                      decay, step, sqrt_bc2)


@njit(cache=True, error_model="numpy")
def _adam_sqrt_v(p, g, m, r, b1, c1, b2, c2, eps, l2, decay, step, sqrt_bc2, gscale, clip):
    """Adam keeping ``r = sqrt(v)`` (the fp16-state layout: r does not underflow where v would)."""
    for i in range(p.size):
        p[i], m[i], vi = _adam_elem(p[i], _prep(g[i], gscale, clip), m[i], r[i] * r[i], b1, c1, b2, c2, eps, l2,
                                    decay, step, sqrt_bc2)
        r[i] = math.sqrt(vi)


@njit(cache=True, error_model="numpy")
def _rmsprop(p, g, sq, buf, gavg, lr, alpha, c_alpha, eps, wd, momentum, centered, gscale, clip):
    for i in range(p.size):
        d = _prep(g[i], gscale, clip) + wd * p[i]
        s = alpha * sq[i] + c_alpha * d * d
        sq[i] = s
        if centered:
            a = alpha * gavg[i] + c_alpha * d
            gavg[i] = a
            s = s - a * a
        denom = math.sqrt(s) + eps
        if momentum > 0:
            b = momentum * buf[i] + d / denom
            buf[i] = b
            p[i] -= lr * b
        else:
            p[i] -= lr * d / denom


@njit(cache=True, error_model="numpy")
def _adagrad(p, g, acc_sq, clr, eps, wd, gscale, clip):
    for i in range(p.size):
        d = _prep(g[i], gscale, clip) + wd * p[i]
        s = acc_sq[i] + d * d
        acc_sq[i] = s
        p[i] -= clr * d / (math.sqrt(s) + eps)


# -- the shared step logic ------------------------------------------------------------------------
def _flat(a: np.ndarray, what: str) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise KernelError(f"{what} must be a C-contiguous array to be updated in place")
    return a.reshape(-1)


def _begin(p, g, counter, scale, acc, accum, clip):
    """Count the micro-step; return (gradient, gscale, clip) in ``p``'s dtype to apply now, or None
    when this micro-step only accumulates."""
    if g.shape != p.shape:
        raise KernelError(f"gradient shape {g.shape} differs from parameter shape {p.shape}")
    dt = p.dtype.type
    gscale = dt(1.0 if scale is None else float(np.asarray(scale)))
    clip = dt(clip) if clip and clip > 0 else dt(np.inf)
    grad = _flat(np.ascontiguousarray(g, dtype=p.dtype), "G")
    counter[1] += 1
    if accum > 1:
        if acc is None:
            raise KernelError("accum > 1 needs the 'acc' buffer input")
        _accumulate(_flat(acc, "acc"), grad, gscale, clip)
        if counter[1] % accum:
            return None
        counter[0] += 1
        return _flat(acc, "acc"), dt(1.0 / accum), dt(np.inf)
    counter[0] += 1
    return grad, gscale, clip


def _end(acc, accum) -> None:
    if accum > 1:
        acc[...] = 0


def _lr(lr) -> float:
    return float(np.asarray(lr))


# -- the ops ------------------------------------------------------------------------------------
_schema("SGDUpdate", ("momentum_buf?",), {"momentum": 0.0, "dampening": 0.0, "nesterov": 0, "weight_decay": 0.0})


@register("SGDUpdate", 1, domain=TRAIN_DOMAIN)
def sgd_update(x, g, lr, counter, scale=None, acc=None, buf=None, *, momentum=0.0, dampening=0.0,
               nesterov=0, weight_decay=0.0, clip=0.0, accum=1):
    got = _begin(x, g, counter, scale, acc, accum, clip)
    if got is None:
        return x
    grad, gscale, clip_now = got
    if momentum != 0.0 and buf is None:
        raise KernelError("SGDUpdate with momentum needs the momentum buffer input")
    dt, rate = x.dtype.type, _lr(lr)
    if momentum == 0.0:
        _sgd(_flat(x, "X"), grad, dt(rate), dt(weight_decay), gscale, clip_now)
    else:
        first = counter[0] == 1  # the buffer starts as the first gradient, undamped
        keep, take = (0.0, 1.0) if first else (momentum, 1.0 - dampening)
        na, nb = (1.0, momentum) if nesterov else (0.0, 1.0)
        _sgd_momentum(_flat(x, "X"), grad, _flat(buf, "momentum_buf"), dt(rate), dt(weight_decay), dt(keep), dt(take),
                      dt(na), dt(nb), gscale, clip_now)
    _end(acc, accum)
    return x


_schema("AdamUpdate", ("m", "v"), {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0,
                                   "decoupled": 0})


@register("AdamUpdate", 1, domain=TRAIN_DOMAIN)
def adam_update(x, g, lr, counter, scale=None, acc=None, m=None, v=None, *, beta1=0.9, beta2=0.999,
                epsilon=1e-8, weight_decay=0.0, decoupled=0, clip=0.0, accum=1):
    got = _begin(x, g, counter, scale, acc, accum, clip)
    if got is None:
        return x
    grad, gscale, clip_now = got
    t, rate, dt = int(counter[0]), _lr(lr), x.dtype.type
    l2, decay = (0.0, 1.0 - rate * weight_decay) if decoupled else (weight_decay, 1.0)
    coef = tuple(dt(c) for c in (beta1, 1.0 - beta1, beta2, 1.0 - beta2, epsilon, l2, decay,
                                 rate / (1.0 - beta1 ** t), np.sqrt(1.0 - beta2 ** t)))
    pf, mf, vf = _flat(x, "X"), _flat(m, "m"), _flat(v, "v")
    if m.dtype == np.float16:
        for s in range(0, pf.size, _CHUNK):  # widen a chunk, update, store back narrowed
            e = min(s + _CHUNK, pf.size)
            m32, r32 = mf[s:e].astype(x.dtype), vf[s:e].astype(x.dtype)
            _adam_sqrt_v(pf[s:e], grad[s:e], m32, r32, *coef, gscale, clip_now)
            mf[s:e], vf[s:e] = m32, r32
    else:
        _adam(pf, grad, mf, vf, *coef, gscale, clip_now)
    _end(acc, accum)
    return x


_schema("RMSpropUpdate", ("square_avg", "momentum_buf?", "grad_avg?"),
        {"alpha": 0.99, "epsilon": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": 0})


@register("RMSpropUpdate", 1, domain=TRAIN_DOMAIN)
def rmsprop_update(x, g, lr, counter, scale=None, acc=None, sq=None, buf=None, gavg=None, *, alpha=0.99,
                   epsilon=1e-8, weight_decay=0.0, momentum=0.0, centered=0, clip=0.0, accum=1):
    got = _begin(x, g, counter, scale, acc, accum, clip)
    if got is None:
        return x
    grad, gscale, clip_now = got
    dt, empty = x.dtype.type, np.empty(0, x.dtype)
    _rmsprop(_flat(x, "X"), grad, _flat(sq, "square_avg"), empty if buf is None else _flat(buf, "momentum_buf"),
             empty if gavg is None else _flat(gavg, "grad_avg"), dt(_lr(lr)), dt(alpha), dt(1.0 - alpha),
             dt(epsilon), dt(weight_decay), dt(momentum), bool(centered), gscale, clip_now)
    _end(acc, accum)
    return x


_schema("AdagradUpdate", ("sum",), {"lr_decay": 0.0, "epsilon": 1e-10, "weight_decay": 0.0})


@register("AdagradUpdate", 1, domain=TRAIN_DOMAIN)
def adagrad_update(x, g, lr, counter, scale=None, acc=None, sq=None, *, lr_decay=0.0, epsilon=1e-10,
                   weight_decay=0.0, clip=0.0, accum=1):
    got = _begin(x, g, counter, scale, acc, accum, clip)
    if got is None:
        return x
    grad, gscale, clip_now = got
    dt = x.dtype.type
    clr = dt(_lr(lr) / (1.0 + (int(counter[0]) - 1) * lr_decay))
    _adagrad(_flat(x, "X"), grad, _flat(sq, "sum"), clr, dt(epsilon), dt(weight_decay), gscale, clip_now)
    _end(acc, accum)
    return x
