"""NaN, +-inf, -0.0 and huge values through every kernel compiled with fast-math flags, against the
reference ops (the oracle), each called as the session calls it (a one-node session, the op's fast
entry or its binder), so that a helper is compiled the way the runtime compiles it; the threaded
kernels on one thread and two (their serial and parallel twins).

Why: numba compiles an ``njit`` helper that does not set ``fastmath`` with the flags of the kernel
that first calls it (``inherit_if_not_set``), an ``inline="always"`` helper always with its caller's
(its own option is ignored), and the on-disk cache keeps that machine code for every later caller.
Under ``nnan``/``ninf`` LLVM may fold ``v != v`` and make max/min of the NaN-keeping selects; under
``reassoc`` it may undo an evaluation order a helper relies on. The kernels with flags: the
depthwise convolutions (``conv``, ``channels_last``: ``fastmath=True``; their epilogue
``activations.activate_row``, the IR stencils' clamp) and the sparse products (``fastmath=True``);
Softmax over a middle axis, LogSoftmax, LayerNormalization, the vmath rows (erf, sigmoid, tanh) and
the recurrent cells (:data:`~inference.kernels.vmath.FAST_FINITE`); the reductions and global pools
(``reassoc``); the elementwise math (``contract``).
"""
from __future__ import annotations

import importlib
import pkgutil
import types

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import inference.kernels
from inference.builder import GraphBuilder
from inference.kernels import conv as fast_conv
from inference.kernels import sparse
from inference.kernels.fused import DOMAIN, fused_conv_reference, fused_matmul_reference
from inference.ops.registry import lookup
from inference.session import CONSTANT_WEIGHT_KINDS, Session


def _planted(shape: tuple, seed: int, every: int = 29, scale: float = 1.0) -> np.ndarray:
    """Normal values with NaN, +-inf, -0.0, +-1e30 and a subnormal every ``every`` elements, at
    offsets that put some in a vector loop's body and some in its remainder."""
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    flat = x.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, -0.0, 1e30, -1e30, 1e-40]
    for i, v in enumerate(specials):
        flat[i * 5 % every::every * len(specials)] = v
    return x


def _same(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4, atol=1e-5, signed_zeros: bool = False) -> None:
    """NaN, +inf and -inf exactly where the reference has them, finite values close; ``atol`` may
    be an array like ``want`` (the rounding of a sum that cancels 1e30 terms)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    g, w = got[finite].astype(np.float64), want[finite].astype(np.float64)
    off = np.abs(g - w) > np.broadcast_to(atol, want.shape)[finite] + rtol * np.abs(w)
    assert not off.any(), f"{off.sum()} of {off.size} finite values off: got {g[off][:5]}, want {w[off][:5]}"
    if signed_zeros:
        zero = want == 0
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


def _one_node(op: str, x: np.ndarray, *consts, kinds=("fast", "reference"), opset: int = 17, **attrs):
    """(fast, reference) outputs of ``op`` over input ``x`` and constant inputs ``consts`` in a
    one-node session; the session must have picked the kernel of ``kinds[0]``."""
    b = GraphBuilder("one", opset=opset)
    b.input("x", x.dtype, list(x.shape))
    b.op(op, "x", *[b.const(c) for c in consts], outputs=["y"], **attrs)
    b.output("y", x.dtype)
    model = b.build()
    session = Session(model, kinds=kinds)
    assert session.steps[0].kernel.kind == kinds[0]
    with np.errstate(all="ignore"):
        want = Session(model, kinds=("reference",)).run({"x": x})[0]
    return session.run({"x": x})[0], want


# -- depthwise convolutions (fastmath=True) and the epilogue they share ---------------------------
ACTIVATIONS = {"": (0.0, 0.0), "Relu": (0.0, 0.0), "Clip": (-1.0, 2.0), "LeakyRelu": (0.1, 0.0),
               "HardSigmoid": (0.2, 0.5), "HardSwish": (0.0, 0.0), "Sigmoid": (0.0, 0.0), "Silu": (0.0, 0.0),
               "Gelu": (0.0, 0.0), "GeluTanh": (0.0, 0.0)}
#: (h, w, stride, k) for each kernel ``conv.depthwise_kernel`` picks: flat NCHW planes, strided rows,
#: the channels-last IR stencils (short and wide rows) and the channels-last loop of other windows
DEPTHWISE = {"flat": (24, 24, 1, 3), "rows": (64, 64, 2, 3), "stencil3": (10, 10, 1, 3), "stencil5": (10, 10, 1, 5),
             "stencil7-strided": (13, 13, 2, 7), "stencil3-wide": (3, 60, 1, 3), "any-window": (10, 10, 1, 4)}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("route", list(DEPTHWISE))
def test_depthwise_conv_and_its_epilogue(route, activation, threads):
    h, w, s, k = DEPTHWISE[route]
    c = 20  # a 16-lane block and a masked one
    x = _planted((1, c, h, w), seed=k + s, every=31)
    rng = np.random.default_rng(5)
    wt = (rng.standard_normal((c, 1, k, k)) * 0.3).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    alpha, beta = ACTIVATIONS[activation]
    attrs = dict(group=c, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[s, s], activation=activation,
                 alpha=alpha, beta=beta)
    with np.errstate(all="ignore"):
        want = fused_conv_reference(x, wt, bias, **attrs)
    got = fast_conv.fused_conv(x, wt, bias, **attrs)
    assert np.isnan(want).any() and np.isfinite(want).any()
    _same(got, want)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_matmul_epilogue_without_fast_math(activation):
    """``activate_row`` also finishes kernels compiled without fast-math (FusedMatMul's epilogue
    here), which had run whatever code the first of its callers compiled."""
    x = _planted((16, 48), seed=17, every=11)
    rng = np.random.default_rng(3)
    w, bias = (rng.standard_normal((48, 24)) * 0.2).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    alpha, beta = ACTIVATIONS[activation]
    attrs = dict(activation=activation, alpha=alpha, beta=beta)
    with np.errstate(all="ignore"):  # BLAS's product meets the NaNs: numpy warns
        want = fused_matmul_reference(x, w, bias, **attrs)
        got = lookup("FusedMatMul", DOMAIN, 1, "fast").bind(**attrs)(x, w, bias)
    assert np.isnan(want).any() and np.isfinite(want).any()
    _same(got, want)


def _kernel_dispatchers() -> dict:
    """Every numba dispatcher a module of ``inference.kernels`` defines (both twins of a threaded kernel)."""
    found = {}
    for info in pkgutil.iter_modules(inference.kernels.__path__):
        module = importlib.import_module(f"{inference.kernels.__name__}.{info.name}")
        for value in vars(module).values():
            for d in (value, getattr(value, "serial", None), getattr(value, "parallel", None)):
                if isinstance(d, CPUDispatcher) and d.py_func.__module__ == module.__name__:
                    found[d] = f"{info.name}.{d.py_func.__name__}"
    return found


def _callees(d: CPUDispatcher) -> set:
    names, codes = set(), [d.py_func.__code__]
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return {v for v in map(d.py_func.__globals__.get, names) if isinstance(v, CPUDispatcher)}


def test_no_helper_takes_its_flags_from_whichever_kernel_compiled_it_first():
    """A helper without its own ``fastmath`` (or inlined, whose own is ignored) compiles with the
    flags of the function it is called from; called from functions of different flags, its code is
    that of whichever compiled it first in the process, kept by the on-disk cache. ``activate_row``
    was so: the depthwise kernels (``fastmath=True``) and the epilogues (none) share it."""
    names = _kernel_dispatchers()
    callers: dict = {}
    for d in names:
        for c in _callees(d):
            callers.setdefault(c, set()).add(d)

    def inherits(d) -> bool:
        return d.targetoptions.get("inline") == "always" or "fastmath" not in d.targetoptions

    def flags(d, seen=()) -> set:
        """The flag sets ``d`` may be compiled with: its own, or those of the functions calling it."""
        if not inherits(d) or not callers.get(d):
            option = d.targetoptions.get("fastmath")
            return {frozenset(("fast",) if option is True else option or ())}
        return set().union(*(flags(c, seen + (d,)) for c in callers[d] if c not in seen))

    mixed = {names.get(d, d): sorted(map(sorted, flags(d))) for d in callers
             if d.targetoptions.get("inline") != "always" and "fastmath" not in d.targetoptions and len(flags(d)) > 1}
    assert not mixed


# -- sparse products (fastmath=True) --------------------------------------------------------------
def _sparse_weight(shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < 0.92] = 0
    return w


def _over_nonzeros(x2: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``x2 (R, K) @ w2 (K, N)`` in float64 with the products of zero weights left out."""
    with np.errstate(all="ignore"):
        terms = x2.astype(np.float64)[:, :, None] * w2.astype(np.float64)[None]
        return np.where(w2[None] != 0, terms, 0.0).sum(axis=1)


def _columns(x: np.ndarray, k: int) -> np.ndarray:
    """im2col of ``x`` (1, C, H, W), stride 1, pads k // 2: (H*W, C*k*k), finite zeros in the pads."""
    c, h, w = x.shape[1:]
    p = np.pad(x[0], ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    taps = [p[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]  # each (C, H, W)
    return np.stack(taps, axis=1).reshape(c * k * k, h * w).T


SPARSE = {"matmul-gather": ("MatMul", 2, 1), "matmul-transposed": ("MatMul", 12, 1), "conv1x1": ("Conv", 0, 1),
          "conv3x3": ("Conv", 0, 3)}


def _sparse_case(case: str):
    op, rows, k = SPARSE[case]
    if op == "MatMul":
        x, w = _planted((rows, 64), seed=rows), _sparse_weight((64, 40), seed=1)
        got, want = _one_node("MatMul", x, w, kinds=CONSTANT_WEIGHT_KINDS)
        nonzero = _over_nonzeros(x, w)
    else:
        x, w = _planted((1, 16, 9, 9), seed=k), _sparse_weight((24, 16, k, k), seed=k)
        got, want = _one_node("Conv", x, w, kernel_shape=[k, k], pads=[k // 2] * 4, kinds=CONSTANT_WEIGHT_KINDS)
        nonzero = _over_nonzeros(_columns(x, k), w.reshape(24, -1).T).T.reshape(want.shape)
    return got, want, nonzero.astype(np.float32)


@pytest.mark.parametrize("case", list(SPARSE))
def test_sparse_products_carry_nan_and_inf_through_their_nonzeros(case, monkeypatch):
    """Under fastmath=True the products of nonzero weights keep NaN and inf as IEEE arithmetic does
    (the loops alone: the zero weights' NaNs switched off)."""
    for name in ("zero_weight_nans", "zero_weight_nans_gather"):
        monkeypatch.setattr(sparse, name, lambda *args: None)
    got, _, nonzero = _sparse_case(case)
    assert np.isnan(nonzero).any() and np.isinf(nonzero).any() and np.isfinite(nonzero).any()
    _same(got, nonzero)


@pytest.mark.parametrize("case", list(SPARSE))
def test_sparse_products_as_the_reference(case):
    """The reference (and onnxruntime's dense product) multiplies zero weights too: a NaN or inf input
    makes NaN every output it meets through a zero weight. The loops skip zero weights, so
    ``sparse.zero_weight_nans`` adds those NaNs after them."""
    got, want, _ = _sparse_case(case)
    _same(got, want)


# -- softmax, log-softmax, normalizations (FAST_FINITE) -------------------------------------------
def _special_rows(shape: tuple, seed: int) -> np.ndarray:
    """Row 0 all -inf, row 1 one -inf, row 2 a NaN, row 3 a +inf, row 4 +-1e30, the rest planted."""
    x = _planted(shape, seed)
    x[0] = -np.inf
    x[1] = np.random.default_rng(seed).standard_normal(shape[1:])
    x[1].reshape(-1)[0] = -np.inf
    x[2].reshape(-1)[-1] = np.nan
    x[3].reshape(-1)[1] = np.inf
    x[4] = np.float32(1e30) * np.sign(x[4])
    return x


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1], ids=["rows", "columns"])
def test_softmax_and_log_softmax(op, axis, threads):
    x = _special_rows((6, 37, 5), seed=3)
    if axis == 1:  # the special rows along the reduced axis: softmax_columns
        x = np.ascontiguousarray(np.moveaxis(x, 0, 1))
    got, want = _one_node(op, x, axis=axis, opset=13)
    _same(got, want, rtol=1e-5, atol=1e-6)


def test_layer_norm(threads):
    """``stash_type`` double: the kernel's statistics are float64 at any stash type; in float32 the
    reference's variance of +-1e30 overflows."""
    x = np.concatenate([_special_rows((6, 33), seed=4), _planted((4, 33), seed=5, every=7)])
    rng = np.random.default_rng(1)
    scale, bias = rng.standard_normal(33).astype(np.float32), rng.standard_normal(33).astype(np.float32)
    got, want = _one_node("LayerNormalization", x, scale, bias, axis=-1, stash_type=11)
    assert np.isnan(want).any() and np.isfinite(want).any()
    _same(got, want, rtol=1e-4, atol=1e-4)


def test_instance_norm():
    x = _special_rows((6, 4, 9), seed=6).reshape(2, 3, 4, 9)
    rng = np.random.default_rng(2)
    scale, bias = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    got, want = _one_node("InstanceNormalization", x, scale, bias)
    assert np.isnan(want).any() and np.isfinite(want).any()
    _same(got, want, rtol=1e-4, atol=1e-4)


# -- reductions and global pools ({"reassoc", "contract"}, {"reassoc"}) ----------------------------
def _sum_rounding(x: np.ndarray, axes: tuple) -> np.ndarray:
    """What the order of a float sum may change: 1e-6 of the finite magnitudes summed (1e30 - 1e30
    leaves the rest of a sum to rounding)."""
    return 1e-6 * np.abs(np.where(np.isfinite(x), x, 0)).sum(axis=axes, keepdims=True).astype(np.float32) + 1e-5


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes", [(1,), (2,), (0, 1)])
def test_reductions(op, axes):
    x = _planted((5, 40, 33), seed=len(axes), every=37)
    x[2, :, 4] = -np.inf
    x[3, 7, :] = np.inf
    got, want = _one_node(op, x, np.array(axes, np.int64), opset=18)
    bound = _sum_rounding(x, axes) / (np.prod([x.shape[a] for a in axes]) if op == "ReduceMean" else 1)
    _same(got, want, rtol=1e-5, atol=bound)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
def test_global_pools(op):
    x = _planted((2, 12, 7, 9), seed=9, every=53)
    x[1, 3] = -np.inf
    x[1, 4, 2] = np.inf
    got, want = _one_node(op, x)
    _same(got, want, rtol=1e-5, atol=_sum_rounding(x, (2, 3)) / 63)


# -- elementwise math ({"contract"}; tanh_row inlined into it) ------------------------------------
UNARY = {"Exp": {}, "Log": {}, "Tanh": {}, "Softplus": {}, "Elu": {"alpha": 0.7}, "Selu": {}, "Celu": {"alpha": 1.3},
         "Sqrt": {}, "Reciprocal": {}, "Softsign": {}, "Abs": {}, "Neg": {}, "Floor": {}, "Round": {}}


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_math(op):
    """Signed zeros too: these kernels give IEEE's (``unary_math``'s docstring)."""
    x = _planted((3, 1000), seed=11, every=13, scale=30.0)
    x[0, :8] = [3e38, -3e38, 88.7, 89.0, -104.0, -87.5, 1e-45, -1e-45]
    got, want = _one_node(op, x, **UNARY[op])
    _same(got, want, rtol=2e-6, atol=1e-37, signed_zeros=True)


# -- exp's range reduction under its callers' flags -----------------------------------------------
def test_exp_keeps_its_two_part_ln2_under_reassociation():
    """``vmath.exp_reduced`` is inlined into FAST_FINITE callers, whose ``reassoc`` had folded
    Cody-Waite's ``x - n LN2_HI - n LN2_LO`` into ``x - n ln2`` (ln 2 rounded to float32 once): exp's
    relative error grew with |x|, 2.9e-7 below -17 against 1.2e-7. Seen where 1 + e^x rounds to 1,
    so that the output is exp(x) itself: Sigmoid below -17 and Softmax over a middle axis of the
    classes [0, x] (the columns kernel)."""
    x = np.linspace(-87, -17, 1 << 16).astype(np.float32)
    e = np.exp(x.astype(np.float64))
    got, _ = _one_node("Sigmoid", x[None])
    assert np.abs(got[0] / e - 1).max() < 1.5e-7
    got, _ = _one_node("Softmax", np.stack([np.zeros_like(x), x])[None], axis=1, opset=13)
    assert np.abs(got[0, 1] / e - 1).max() < 1.5e-7


# -- recurrent cells (FAST_FINITE; _recurrent inherits it) ----------------------------------------
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent(op):
    gates, hidden, seq, batch, k = {"LSTM": 4, "GRU": 3, "RNN": 1}[op], 8, 5, 4, 6
    rng = np.random.default_rng(13)
    x = rng.standard_normal((seq, batch, k)).astype(np.float32)
    x[1, 0, 2] = np.nan  # sequence 0: NaN from step 1 on
    x[0, 1, 3] = np.inf  # sequences 1 and 2: saturated gates
    x[2, 2, 0] = -np.inf
    x[3, 3] = np.float32(1e30) * np.sign(x[3, 3])
    w = (rng.standard_normal((1, gates * hidden, k)) * 0.5).astype(np.float32)
    r = (rng.standard_normal((1, gates * hidden, hidden)) * 0.5).astype(np.float32)
    attrs = {"hidden_size": hidden}
    with np.errstate(all="ignore"):
        want = lookup(op, "", 17).fn(x, w, r, **attrs)
    got = lookup(op, "", 17, "fast").bind(**attrs)(x, w, r)
    assert np.isnan(want[0]).any() and np.isfinite(want[0]).any()
    for g, wv in zip(got, want):
        _same(g, wv, rtol=1e-4, atol=1e-5)
