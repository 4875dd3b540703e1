"""exp, erf and the logistic sigmoid over float32 rows as plain arithmetic that LLVM vectorises.

Why: with no vector math library installed, numba calls libm's scalar ``exp``/``erf`` once per
element (~8-13 ns each here): a transformer's Softmax ran 17x onnxruntime's, and the Gelu of its
feed-forward layers was most of their epilogue. These are the textbook float32 forms:

* exp: Cephes ``expf`` (Cody-Waite reduction by ln 2, a degree-6 polynomial, 2^n assembled in the
  exponent bits through an int32 scratch row); relative error < 1.2e-7 against float64 exp on
  [-87, 0] (compiled with :data:`FAST_FINITE`, as its callers compile it).
* sigmoid: ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|x|)`` (never overflows); SiLU is
  ``x * sigmoid(x)``. libm's scalar exp had made a standalone Sigmoid 3.4 ns per element: a
  YOLO-style CNN with SiLU activations spent 8.5 ms of its 23 there (onnxruntime: 3.5 ms in all).
* tanh: Cephes ``tanhf`` (an odd polynomial below 0.625, ``(1 - e) / (1 + e)`` with ``e = exp(-2|x|)``
  above); within 2 ulp of float64 tanh (the LSTM/GRU cells' and the standalone Tanh's).
* erf: Abramowitz & Stegun 7.1.26, ``1 - (a1 t + ... + a5 t^5) exp(-x^2)`` with ``t = 1/(1 + p x)``;
  absolute error < 1.5e-7 (their bound), so Gelu agrees with the erf form within 2e-7 relative.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_LOG2E = np.float32(1.4426950408889634)
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 in two parts (Cody-Waite)
#: Cephes expf's polynomial in the reduced argument, highest degree first (also the tile's, vmath_ir)
EXP_POLY = (np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3),
            np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1))
#: below it float32's exp leaves the normal range: arguments clamp here, sigmoid is 0 past its negative
EXP_FLOOR = np.float32(-87.0)
_SQRT_HALF = np.float32(1.0 / math.sqrt(2.0))
_P = np.float32(0.3275911)
_A1, _A2, _A3 = np.float32(0.254829592), np.float32(-0.284496736), np.float32(1.421413741)
_A4, _A5 = np.float32(-1.453152027), np.float32(1.061405429)
#: erf's Maclaurin coefficients, 2/sqrt(pi) (-1)^k / (k! (2k + 1)) for k = 0..5
_S0, _S1, _S2, _S3, _S4, _S5 = (np.float32(2.0 / math.sqrt(math.pi) * (-1) ** k / (math.factorial(k) * (2 * k + 1)))
                                for k in range(6))
#: fast-math without "no NaNs / no infinities": reductions may reassociate (so they vectorise), but a
#: NaN or infinite input still gives what numpy gives (a fully masked attention row is all NaN)
FAST_FINITE = {"reassoc", "contract", "arcp", "nsz", "afn"}


@intrinsic
def _minus_n_ln2(typingctx, x, t):
    """float32 ``(x - t LN2_HI) - t LN2_LO`` in instructions flagged ``contract`` alone. Why not in
    Python: :func:`exp_reduced` is inlined, so it compiles with its caller's flags, and under
    :data:`FAST_FINITE`'s ``reassoc`` LLVM folded the two products into ``t * ln 2`` (ln 2 rounded
    once): exp's relative error on [-87, 0] was 3.0e-7, 1.2e-7 with both parts (Sigmoid below -17
    and Softmax over a middle axis the same). numba's fast-math pass leaves an instruction that has
    flags as it is. The second product costs: the Sigmoid, Gelu and Erf rows ran 6-10% slower."""
    if x != types.float32 or t != types.float32:
        return None

    def codegen(context, builder, signature, args):
        xv, tv = args
        flags = ("contract",)
        hi = builder.fmul(tv, ir.Constant(ir.FloatType(), float(LN2_HI)), flags=flags)
        lo = builder.fmul(tv, ir.Constant(ir.FloatType(), float(LN2_LO)), flags=flags)
        return builder.fsub(builder.fsub(xv, hi, flags=flags), lo, flags=flags)

    return types.float32(types.float32, types.float32), codegen


@numba.njit(cache=True, error_model="numpy", inline="always")
def exp_reduced(x):
    """(n, e^r - 1) for ``x`` = n ln 2 + r, |r| <= ln 2 / 2: Cephes expf's range reduction (ln 2
    in two parts, :func:`_minus_n_ln2`) and polynomial, which every exp here builds on (the caller
    scales by 2^n)."""
    t = np.rint(x * _LOG2E)
    r = _minus_n_ln2(x, t)
    p = EXP_POLY[0]
    p = p * r + EXP_POLY[1]
    p = p * r + EXP_POLY[2]
    p = p * r + EXP_POLY[3]
    p = p * r + EXP_POLY[4]
    p = p * r + EXP_POLY[5]
    return t, p * r * r + r


@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=FAST_FINITE)
def exp_shifted(src, shift, dst, bits):
    """``dst[k] = exp(src[k] - shift)`` for arguments <= 0 (below -87 they clamp to exp(-87), a
    normal float32), returning the float64 sum; ``bits``: int32 scratch of the same length. NaN
    arguments (``-inf - -inf`` in a fully masked row) give NaN, as exp does."""
    for k in range(src.size):
        x = src[k] - shift
        x = EXP_FLOOR if x < EXP_FLOOR else x  # this order keeps a NaN
        t, q = exp_reduced(x)
        dst[k] = q + np.float32(1.0)
        bits[k] = (np.int32(t) + np.int32(127)) << np.int32(23)
    two_n = bits.view(np.float32)
    s = 0.0
    for k in range(src.size):
        v = dst[k] * two_n[k]
        dst[k] = v
        s += v
    return s


_TANH_SMALL = np.float32(0.625)  # below it Cephes tanhf's odd polynomial, above 1 - 2 / (exp(2x) + 1)
_T1, _T2, _T3, _T4, _T5 = (np.float32(-5.70498872745e-3), np.float32(2.06390887954e-2), np.float32(-5.37397155531e-2),
                           np.float32(1.33314422036e-1), np.float32(-3.33332819422e-1))


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always", fastmath=FAST_FINITE)
def tanh_row(row, e, bits):
    """``row = tanh(row)`` in place: Cephes ``tanhf`` (an odd polynomial below 0.625, where
    ``1 - 2 / (exp(2x) + 1)`` would cancel; that form above, from exp(-2|x|) so it never
    overflows), both sides computed on |x| and one selected, then x's sign copied (so tanh(-0) is
    -0), so that the loop vectorises; ``e``, ``bits``: float32 and int32 scratch of at least the
    row's length. Why not libm's: its scalar tanh took ~14 ns an element, several times an LSTM
    cell's product. A NaN stays NaN; tanh(+-inf) is +-1."""
    n = row.size
    ee, bb = e[:n], bits[:n]
    for k in range(n):
        ee[k] = np.float32(-2.0) * abs(row[k])
    exp_shifted(ee, np.float32(0.0), ee, bb)
    one = np.float32(1.0)
    for k in range(n):
        x = row[k]
        a = abs(x)
        s = a * a
        small = ((((_T1 * s + _T2) * s + _T3) * s + _T4) * s + _T5) * s * a + a
        big = (one - ee[k]) / (one + ee[k])
        row[k] = math.copysign(small if a < _TANH_SMALL else big, x)  # a NaN takes ``big``: NaN


GELU_CHUNK = 2048  # elements per pass: the scratch rows stay in L1


@numba.njit(cache=True, error_model="numpy", fastmath=FAST_FINITE)
def erf_row(row, gelu):
    """``row = erf(x)`` in place, or with ``gelu`` ``0.5 x (1 + erf(x / sqrt 2))`` (the erf form of
    Gelu), :data:`GELU_CHUNK` elements at a time through two small scratch rows: whole-row
    scratch, fresh from the allocator on every call, cost its page faults (same process: 2.1 ns
    per element on 1M elements and 6.3 on 4M, against 1.4 in chunks). erf(+-inf) is +-1, a NaN
    stays NaN."""
    n = row.size
    scale = _SQRT_HALF if gelu else np.float32(1.0)
    e_all = np.empty(GELU_CHUNK, np.float32)
    bits_all = np.empty(GELU_CHUNK, np.int32)
    for k0 in range(0, n, GELU_CHUNK):
        m = min(GELU_CHUNK, n - k0)
        seg, e, bits = row[k0:k0 + m], e_all[:m], bits_all[:m]
        for k in range(m):
            z = seg[k] * scale
            e[k] = -(z * z)
        exp_shifted(e, np.float32(0.0), e, bits)
        if gelu:  # a loop per form: a branch inside would keep it scalar
            for k in range(m):  # 1 + erf: erf's relative accuracy near 0 does not matter here
                x = seg[k]
                seg[k] = np.float32(0.5) * x * (np.float32(1.0) + _erf_as(x * scale, e[k]))
        else:
            for k in range(m):
                z = seg[k]
                seg[k] = _erf_series(z) if abs(z) < np.float32(0.5) else _erf_as(z, e[k])


@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=FAST_FINITE)
def _erf_as(z, exp_minus_z2):
    """erf(``z``) given exp(-z^2): Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), whose
    ``1 - ...`` cancels near 0 (erf(1e-4) a thousandth off relative)."""
    t = np.float32(1.0) / (np.float32(1.0) + _P * abs(z))
    poly = ((((_A5 * t + _A4) * t + _A3) * t + _A2) * t + _A1) * t
    erf_abs = np.float32(1.0) - poly * exp_minus_z2
    return erf_abs if z >= 0 else -erf_abs


@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=FAST_FINITE)
def _erf_series(z):
    """erf(``z``) for |z| < 1/2 by its Maclaurin series to z^11 (the next term ~3e-8 relative
    there); keeps erf(-0) = -0."""
    z2 = z * z
    return z * (_S0 + z2 * (_S1 + z2 * (_S2 + z2 * (_S3 + z2 * (_S4 + z2 * _S5)))))


_TWO_ROOT_2_OVER_PI = np.float32(2.0 * math.sqrt(2.0 / math.pi))
_CUBIC = np.float32(0.044715)


@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=FAST_FINITE)
def _sigmoid_argument(x, gelu_tanh):
    """``x``, or for GELU's tanh approximation 2u, u = sqrt(2/pi) (x + 0.044715 x^3): 0.5 (1 + tanh u)
    is sigmoid(2u), so that GELU is ``x * sigmoid(2u)``."""
    return _TWO_ROOT_2_OVER_PI * (x + _CUBIC * x * x * x) if gelu_tanh else x


@numba.njit(cache=True, error_model="numpy", fastmath=FAST_FINITE)
def sigmoid_row(row, times_x, gelu_tanh=False):
    """``row = sigmoid(x)``, or with ``times_x`` ``x * sigmoid(x)`` (SiLU), or with ``gelu_tanh``
    too GELU's tanh approximation ``x * sigmoid(2u)`` (see :func:`_sigmoid_argument`), in place, in
    chunks as :func:`erf_row`. Below -87 (where float32's exp leaves the normal range) sigmoid is 0,
    so sigmoid(-inf) is 0 and SiLU(-inf) NaN, as the Sigmoid and Mul they replace give; a NaN stays
    NaN. Why GELU here: libm's scalar tanh per element had taken ~14 ns (GPT-2's 128 x 1024
    activations: 1.8 ms of a 2.1 ms layer)."""
    n = row.size
    e_all = np.empty(GELU_CHUNK, np.float32)
    bits_all = np.empty(GELU_CHUNK, np.int32)
    for k0 in range(0, n, GELU_CHUNK):
        m = min(GELU_CHUNK, n - k0)
        sigmoid_segment(row[k0:k0 + m], e_all[:m], bits_all[:m], times_x, gelu_tanh)


@numba.njit(cache=True, error_model="numpy", inline="always", fastmath=FAST_FINITE)
def sigmoid_segment(seg, e, bits, times_x=False, gelu_tanh=False):
    """:func:`sigmoid_row` of one segment in place, ``e`` and ``bits`` its float32 and int32 scratch
    of the segment's length (a caller with scratch of its own, the recurrent cells' gates, calls
    this directly: no allocation per call)."""
    one = np.float32(1.0)
    for k in range(seg.size):
        e[k] = -abs(_sigmoid_argument(seg[k], gelu_tanh))
    exp_shifted(e, np.float32(0.0), e, bits)
    for k in range(seg.size):
        x = seg[k]
        u = _sigmoid_argument(x, gelu_tanh)
        ek = np.float32(0.0) if abs(u) > -EXP_FLOOR else e[k]  # this order keeps a NaN
        s = (one if u >= 0 else ek) / (one + ek)
        seg[k] = x * s if times_x else s
