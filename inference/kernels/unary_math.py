"""Fast float32 elementwise math: Tanh, Exp, Log, Softplus, Elu, Selu, Celu, Sqrt, Abs, Neg,
Reciprocal, Softsign, Floor, Ceil, Round, and Pow by a one-element exponent.

Why: the reference runs these as numpy ufuncs, fast per call but invisible to kernel replay
(:mod:`inference.kernel_replay` repeats numba calls only): one such step in a model kept the
whole model step by step, ~3-6 us of Python a step (a model of 14 small ops ran 6.6x
onnxruntime's time). Here each is one numba call writing the arena's slot
(:func:`~inference.kernels.arena_slot.new_output`), in place when the plan gives the output the
dying input's memory, in chunks of :data:`_CHUNK` elements that two threads split, and within a
chunk in blocks of :data:`_BLOCK` (scratch rows that stay in L1).

The transcendental ones do not call libm per element (numba's scalar ``expf``/``logf`` do not
vectorise: several times numpy's SIMD ufuncs); they are plain float32 arithmetic that LLVM
vectorises, with exact ONNX/IEEE special values (signed zeros, infinities, NaN, subnormals):

* exp (Exp; Softplus, Elu, Selu, Celu): Cephes ``expf`` (as :func:`~inference.kernels.vmath.
  exp_shifted`) over the whole float32 range: 2^n applied as two factors 2^(n/2), so results
  run into the subnormals and to 0 and inf where float32's exp does. ``expm1`` (Elu family) takes
  the polynomial's ``e^r - 1`` itself where n = 0 (|x| < ln2/2), so it keeps its relative
  accuracy near 0 where ``exp(x) - 1`` would cancel.
* log (Log; Softplus): Cephes ``logf``: exponent and mantissa apart through the bits (subnormals
  scaled by 2^23 first), mantissa in [sqrt(1/2), sqrt 2), a degree-9 polynomial, n ln 2 added in
  two parts. Softplus's ``log1p(u)`` is ``log(1 + u) - ((1 + u) - 1 - u) / (1 + u)`` (the rounding
  of 1 + u corrected), u = exp(-|x|).
* tanh: :func:`~inference.kernels.vmath.tanh_row` (Cephes ``tanhf``, shared with the LSTM/GRU cells).

Measured against float64 numpy on 6M values (2M log-uniform over the float32 range, both
signs; 2M N(0, 3); specials), relative error where the result is a normal float32: exp 8.3e-8
(numpy's float32 exp 2.0e-7), log 8.0e-8 (numpy 2.4e-7), tanh 1.5e-7 (numpy 1.1e-7), Elu's
expm1 1.3e-7, softplus 1.7e-7, celu 1.4e-7, pow(x, 3) 1.2e-7 (two float32 products);
subnormal results within one subnormal step. Sqrt, Abs, Neg, Reciprocal, Softsign, Floor, Ceil,
Round and Pow by 2, 1, 0, -1, 0.5 are bitwise numpy's (``tests/test_unary_math.py``).

Speed against numpy's ufuncs (``benchmarks/unary_math.py --threads 1``, a quiet machine, median
us at 64K / 1M elements, each call with its Python): Exp 33 / 503 vs 28 / 491 (onnxruntime's
exp is faster still: 20 / 231), Softplus 87 / 1674 vs 108 / 1653 (numpy's four ufuncs), Elu 39 /
791 vs 223 / 4257 (``np.where`` + expm1), Sqrt 15 / 201 vs 23 / 366, Abs 9.1 / 114 vs 5.2 / 89
(into a fresh array; in place, the plan's usual case for it, 3.7 / 72 against numpy's 5.1 / 86,
measured by the kernel's author under load). At 1K elements every op is ~3-4 us a call against
numpy's 0.5-0.8: the call's Python, which a replay removes. Tanh and Log stay behind numpy's
AVX-512 ufuncs per element (~1.7x and ~1.9x), so above :data:`NUMPY_ABOVE` elements per thread
those two run numpy's ufunc into the arena's slot (Tanh 27 / 388 vs 24 / 381; such a model is not
replayed, and at that size a step's Python is a sliver of it); below, a replay saves more than
the kernel loses. Abs, Neg, Floor, Ceil, Round are kept for the replay they enable.

Pow: only an exponent of one element (any numeric dtype) that leaves the output shape to x; the
exponent 2 is x * x, 3 x * x * x, 1 a copy, 0 ones, -1 a reciprocal, 0.5 a square root (as
numpy's power, the reference, computes it: sqrt(-0) = -0 and sqrt(-inf) = NaN where C's pow gives
+0 and inf); other exponents and broadcasting exponents
stay with the reference (a general exp(y log x) in float32 loses |y log x| ulps near overflow).
Every op falls back to the reference for inputs other than float32.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import kernel_threads, threaded_kernel
from inference.kernels.arena_slot import OVER_FIRST, new_output, new_scratch, overwritten
from inference.kernels.vmath import LN2_HI, LN2_LO, exp_reduced, tanh_row
from inference.ops.activation import SELU_ALPHA, SELU_GAMMA
from inference.ops.registry import lookup, register

_CHUNK = 1 << 14  # elements per parallel work item
_BLOCK = 2048  # elements per pass through the scratch rows (they stay in L1)

#: the ops' codes: the exact ones (bitwise numpy's) first, then those through exp/log
(ABS, NEG, SQRT, RECIPROCAL, SOFTSIGN, FLOOR, CEIL, ROUND, SQUARE, CUBE, COPY, ONES,
 TANH, EXP, LOG, SOFTPLUS, ELU, SELU, CELU) = range(19)
_FIRST_SCRATCH = TANH  # codes from here on use the scratch rows

#: the polynomial loops may fuse a multiply and an add (FMA), nothing else: signed zeros,
#: infinities and NaN keep their IEEE meaning
_FMA = {"contract"}
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)
_NAN = np.float32(np.nan)
#: exp's argument clamped here: below, exp rounds to 0 (2^-150); above, to inf; n stays in [-150, 128]
_EXP_LO, _EXP_HI = np.float32(-104.0), np.float32(89.0)
_MIN_NORMAL = np.float32(1.17549435e-38)
_TWO_23 = np.float32(8388608.0)
_SQRT_HALF = np.float32(0.70710678118654752440)
#: Cephes logf's polynomial, highest degree first
_LOG_POLY = (np.float32(7.0376836292e-2), np.float32(-1.1514610310e-1), np.float32(1.1676998740e-1),
             np.float32(-1.2420140846e-1), np.float32(1.4249322787e-1), np.float32(-1.6668057665e-1),
             np.float32(2.0000714765e-1), np.float32(-2.4999993993e-1), np.float32(3.3333331174e-1))


# -- exp and log over a block ---------------------------------------------------------------------

@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=_FMA)
def _exp_parts(arg, q, b1, b2):
    """For each ``arg[k]`` = n ln2 + r (|r| <= ln2/2): ``q[k]`` = e^r - 1 (Cephes expf's polynomial)
    and 2^n as two float32 factors' bits ``b1[k]``, ``b2[k]`` (2^(n//2), 2^(n - n//2): both normal
    for n in [-150, 128]). ``q`` may be ``arg``. A NaN gives a NaN ``q``."""
    for k in range(arg.size):
        x = arg[k]
        x = _EXP_LO if x < _EXP_LO else x  # this order keeps a NaN
        x = _EXP_HI if x > _EXP_HI else x
        t, e_r = exp_reduced(x)
        q[k] = e_r
        n = np.int32(t)
        half = n >> np.int32(1)
        b1[k] = (half + np.int32(127)) << np.int32(23)
        b2[k] = (n - half + np.int32(127)) << np.int32(23)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _exp_of(q, s1, s2):
    """exp from :func:`_exp_parts`: (e^r) 2^n, the second factor last (one rounding into the subnormals)."""
    return (q + _ONE) * s1 * s2


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _expm1_of(x, q, s1, s2):
    """expm1 of ``x`` from :func:`_exp_parts`: the polynomial's e^r - 1 itself where n = 0 (no
    cancellation near 0; x's sign so that expm1(-0) is -0), else exp - 1."""
    small = s1 * s2 == _ONE
    return math.copysign(q, x) if small else (q + _ONE) * s1 * s2 - _ONE


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=_FMA)
def _log_parts(src, m, ex):
    """For each ``src[k]`` = f 2^e (f in [0.5, 1), subnormals scaled by 2^23 first): ``m[k]`` = f,
    ``ex[k]`` = e; garbage for zero, negative, inf and NaN (:func:`_log_of` sets those)."""
    mi = m.view(np.int32)
    for k in range(src.size):
        x = src[k]
        m[k] = x * _TWO_23 if x < _MIN_NORMAL else x
    for k in range(src.size):
        b = mi[k]
        ex[k] = ((b >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
        mi[k] = (b & np.int32(0x007FFFFF)) | np.int32(0x3F000000)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _log_of(x, f, e):
    """log ``x`` given its mantissa ``f`` and exponent ``e`` (:func:`_log_parts`): Cephes logf."""
    ef = np.float32(e - (np.int32(23) if x < _MIN_NORMAL else np.int32(0)))
    low = f < _SQRT_HALF
    ef = ef - _ONE if low else ef
    f = (f + f - _ONE) if low else (f - _ONE)
    z = f * f
    p = _LOG_POLY[0]
    p = p * f + _LOG_POLY[1]
    p = p * f + _LOG_POLY[2]
    p = p * f + _LOG_POLY[3]
    p = p * f + _LOG_POLY[4]
    p = p * f + _LOG_POLY[5]
    p = p * f + _LOG_POLY[6]
    p = p * f + _LOG_POLY[7]
    p = p * f + _LOG_POLY[8]
    y = p * f * z + ef * LN2_LO - np.float32(0.5) * z
    r = f + y + ef * LN2_HI
    special = -_INF if x == _ZERO else (_INF if x == _INF else _NAN)  # 0, inf; negative or NaN
    return r if (x > _ZERO and x < _INF) else special


# -- one block per op ----------------------------------------------------------------------------

@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _exact_block(src, dst, code):
    """``dst = op(src)`` for an op numpy computes exactly (one IEEE operation or two); one loop per
    code so each vectorises. Inlined, so that a call with one array as both (in place) shows
    LLVM one pointer: passed apart, their overlap check would send that loop to its scalar copy."""
    n = dst.size
    if code == ABS:
        for k in range(n):
            dst[k] = abs(src[k])
    elif code == NEG:
        for k in range(n):
            dst[k] = -src[k]
    elif code == SQRT:  # a negative gives NaN
        for k in range(n):
            dst[k] = np.sqrt(src[k])
    elif code == RECIPROCAL:
        for k in range(n):
            dst[k] = _ONE / src[k]
    elif code == SOFTSIGN:  # as the reference: inf / inf is NaN
        for k in range(n):
            x = src[k]
            dst[k] = x / (_ONE + abs(x))
    elif code == FLOOR:
        for k in range(n):
            dst[k] = np.floor(src[k])
    elif code == CEIL:
        for k in range(n):
            dst[k] = np.ceil(src[k])
    elif code == ROUND:  # half to even
        for k in range(n):
            dst[k] = np.rint(src[k])
    elif code == SQUARE:
        for k in range(n):
            x = src[k]
            dst[k] = x * x
    elif code == CUBE:
        for k in range(n):
            x = src[k]
            dst[k] = x * x * x
    elif code == ONES:  # pow(x, 0) is 1, a NaN's too
        for k in range(n):
            dst[k] = _ONE
    else:  # COPY
        for k in range(n):
            dst[k] = src[k]


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _math_block(src, dst, code, alpha, gamma, e, e2, e3, b1, b2):
    """``dst = op(src)`` for a transcendental op (inlined as :func:`_exact_block`); ``e``, ``e2``,
    ``e3``, ``b1``, ``b2``: float32 x 3, int32 x 2 scratch of the block's length. Elu: alpha;
    Selu: alpha, gamma; Celu: alpha (non-zero)."""
    n = dst.size
    s1, s2 = b1.view(np.float32), b2.view(np.float32)
    if code == TANH:
        for k in range(n):
            e3[k] = src[k]
        tanh_row(e3, e, b1)
        for k in range(n):
            dst[k] = e3[k]
    elif code == EXP:
        _exp_parts(src, e, b1, b2)
        for k in range(n):
            dst[k] = _exp_of(e[k], s1[k], s2[k])
    elif code == LOG:
        _log_parts(src, e, b1)
        for k in range(n):
            dst[k] = _log_of(src[k], e[k], b1[k])
    elif code == SOFTPLUS:  # log1p(exp(-|x|)) + max(x, 0), as the reference
        for k in range(n):
            e2[k] = -abs(src[k])
        _exp_parts(e2, e, b1, b2)  # apart: one array as both would take the scalar loop
        for k in range(n):
            u = _exp_of(e[k], s1[k], s2[k])
            e[k] = u
            e2[k] = _ONE + u
        _log_parts(e2, e3, b1)  # w = 1 + u: its mantissa in e3, its exponent in b1
        for k in range(n):
            x, u, w = src[k], e[k], e2[k]
            log1p = _log_of(w, e3[k], b1[k]) - ((w - _ONE) - u) / w  # the rounding of 1 + u taken out
            dst[k] = log1p + (x if x > _ZERO else _ZERO)
    elif code == ELU or code == SELU:
        _exp_parts(src, e, b1, b2)
        a, g = np.float32(alpha), np.float32(gamma)
        if code == ELU:
            for k in range(n):
                x = src[k]
                dst[k] = x if x > _ZERO else a * _expm1_of(x, e[k], s1[k], s2[k])
        else:
            for k in range(n):
                x = src[k]
                dst[k] = g * (x if x > _ZERO else a * _expm1_of(x, e[k], s1[k], s2[k]))
    elif code == CELU:  # max(x, 0) + min(0, alpha expm1(x / alpha)), as the reference
        a = np.float32(alpha)
        for k in range(n):
            e2[k] = src[k] / a
        _exp_parts(e2, e, b1, b2)
        for k in range(n):
            x = src[k]
            v = a * _expm1_of(e2[k], e[k], s1[k], s2[k])
            dst[k] = (x if x > _ZERO else _ZERO) + (_ZERO if v > _ZERO else v)  # a NaN stays


@threaded_kernel(fastmath=_FMA)
def unary_flat(x, y, code, alpha, gamma, in_place, scratch):
    """``y = op(x)`` over flat float32 arrays, in chunks of :data:`_CHUNK` elements (two threads
    split large tensors), each in blocks of :data:`_BLOCK` (its scratch stays in L1); ``in_place``:
    ``y`` is ``x`` (see ``arena_slot.overwritten``), passed as one array. ``scratch`` (chunks, 5,
    rows): each chunk's three float32 and two int32 rows (:func:`_scratch`)."""
    n = x.size
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        sc = scratch[c]
        e, e2, e3 = sc[0], sc[1], sc[2]
        b1, b2 = sc[3].view(np.int32), sc[4].view(np.int32)
        hi = min(n, (c + 1) * _CHUNK)
        for lo in range(c * _CHUNK, hi, _BLOCK):
            m = min(_BLOCK, hi - lo)
            out = y[lo:lo + m]
            if code < _FIRST_SCRATCH:
                if in_place:
                    _exact_block(out, out, code)
                else:
                    _exact_block(x[lo:lo + m], out, code)
            elif in_place:
                _math_block(out, out, code, alpha, gamma, e[:m], e2[:m], e3[:m], b1[:m], b2[:m])
            else:
                _math_block(x[lo:lo + m], out, code, alpha, gamma, e[:m], e2[:m], e3[:m], b1[:m], b2[:m])


#: numpy's SIMD ufuncs of the ops whose vectorised form here is slower per element (Tanh ~1.7x,
#: Log ~1.9x numpy's on 64K+ elements): numpy runs them (into the arena's slot) on tensors of more
#: than :data:`NUMPY_ABOVE` elements per kernel thread, where its speed outweighs the step's
#: Python that a replay would save (~3-6 us); below, these kernels, which a replay repeats
_NUMPY_UFUNC = {TANH: np.tanh, LOG: np.log}
NUMPY_ABOVE = 1 << 14


def run(x: np.ndarray, code: int, alpha: float = 0.0, gamma: float = 0.0) -> np.ndarray:
    """``x`` (float32) through op ``code``, into the step's arena slot (in place when it is ``x``)."""
    y = new_output(x.shape)
    if code in _NUMPY_UFUNC and x.size > NUMPY_ABOVE * kernel_threads():
        with np.errstate(all="ignore"):
            return _NUMPY_UFUNC[code](x, out=y)
    xf, yf = np.ascontiguousarray(x).reshape(-1), y.reshape(-1)
    unary_flat(xf, yf, code, alpha, gamma, overwritten(yf, xf) == OVER_FIRST, _scratch(x.size, code))
    return y


def _scratch(n: int, code: int) -> np.ndarray:
    """:func:`unary_flat`'s rows from the step's workspace (an arena's run allocates nothing; numba's
    ``np.empty`` per chunk had taken ~40 KB of heap a call)."""
    return new_scratch(((n + _CHUNK - 1) // _CHUNK, 5, _BLOCK if code >= _FIRST_SCRATCH else 0))


# -- registration --------------------------------------------------------------------------------

def _fast_or_reference(op: str, since: int, code: int):
    ref = lookup(op, "", since).fn

    def kernel(x):
        return run(x, code) if x.dtype == np.float32 else ref(x)

    kernel.__name__ = kernel.__qualname__ = f"fast_{op.lower()}"
    register(op, since=since, kind="fast", applies=float32_input)(kernel)


for _op, _since, _code in (("Abs", 6, ABS), ("Neg", 6, NEG), ("Sqrt", 6, SQRT), ("Reciprocal", 6, RECIPROCAL),
                           ("Softsign", 1, SOFTSIGN), ("Floor", 6, FLOOR), ("Ceil", 6, CEIL), ("Round", 11, ROUND),
                           ("Tanh", 6, TANH), ("Exp", 6, EXP), ("Log", 6, LOG), ("Softplus", 1, SOFTPLUS)):
    _fast_or_reference(_op, _since, _code)


@register("Elu", since=6, kind="fast", applies=float32_input)
def elu(x, *, alpha=1.0):
    return run(x, ELU, float(alpha)) if x.dtype == np.float32 else lookup("Elu", "", 6).fn(x, alpha=alpha)


@register("Selu", since=6, kind="fast", applies=float32_input)
def selu(x, *, alpha=SELU_ALPHA, gamma=SELU_GAMMA):
    if x.dtype != np.float32:
        return lookup("Selu", "", 6).fn(x, alpha=alpha, gamma=gamma)
    return run(x, SELU, float(alpha), float(gamma))


@register("Celu", since=12, kind="fast", applies=float32_input)
def celu(x, *, alpha=1.0):
    if x.dtype != np.float32 or alpha == 0:  # the reference names alpha = 0 as an error
        return lookup("Celu", "", 12).fn(x, alpha=alpha)
    return run(x, CELU, float(alpha))


#: Pow's exponents with a fast form, by value
_POW_CODES = {2.0: SQUARE, 3.0: CUBE, 1.0: COPY, 0.0: ONES, -1.0: RECIPROCAL, 0.5: SQRT}


@register("Pow", since=7, kind="fast", applies=float32_input)
def pow_(x, y):
    """x ** y for float32 ``x`` by a one-element ``y`` of a value in :data:`_POW_CODES` that does
    not change x's shape; the reference otherwise (broadcasting exponents, other values)."""
    if x.dtype == np.float32 and y.size == 1 and y.ndim <= x.ndim and y.dtype.kind in "fiu":
        code = _POW_CODES.get(float(y.reshape(-1)[0]))
        if code is not None:
            return run(x, code)
    return lookup("Pow", "", 7).fn(x, y)
