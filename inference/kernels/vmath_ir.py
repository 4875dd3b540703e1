"""exp, the logistic sigmoid, HardSwish and a NaN-keeping clamp on LLVM float32 vectors: the
register tile's epilogue activations (:mod:`~inference.kernels.vmath`'s forms for the smooth ones).

Why: a SiLU or Sigmoid after a convolution ran as a second pass over the whole output
(``activate_row``), which at large maps meant reading and writing it again from L2 or L3: a
YOLO-style stem's 160x160x16 output took 106 us in that pass against ~280 us for the product. In
the epilogue the values are still in registers. The arithmetic is vmath's, operation for operation
(Cephes ``expf``, sigmoid from ``exp(-|x|)``), so fused and unfused results agree to rounding.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba.core import cgutils

from inference.kernels import vmath

_F32, _I32 = ir.FloatType(), ir.IntType(32)
_EXP_FLOOR = float(vmath.EXP_FLOOR)
_EXP_ZERO = -127 * math.log(2.0)  # rounds to t = -127: the power of two's exponent bits are 0
_SIXTH = float(np.float32(1.0 / 6.0))  # HardSwish's slope as activate's float32 constant


def _vec_const(vty: ir.VectorType, value: float):
    return ir.Constant(vty, [float(value)] * vty.count)


def _intrinsic(builder, name: str, vty: ir.VectorType, nargs: int):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * nargs),
                                          f"llvm.{name}.v{vty.count}f32")


def clamp_keeping_nan(builder, v, lo, hi):
    """``min(max(v, lo), hi)`` lane by lane with a NaN lane left NaN, as the reference's Relu and
    Clip (numpy) and onnxruntime's fused convolutions give: ordered compares, which a NaN fails.
    ``llvm.maxnum``/``minnum`` return the other operand for a NaN, so a NaN sum came out as ``lo``
    (0 after a Relu, -inf with no activation). On x86 each select is one max or min instruction."""
    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
    return builder.select(builder.fcmp_ordered(">", v, hi), hi, v)


def hard_swish(builder, x):
    """``x * clamp(x / 6 + 1/2, 0, 1)`` in float32 as :func:`~inference.kernels.activations.activate`
    computes it (a multiply, then an add: no fused multiply-add), NaN kept; -inf gives NaN (-inf * 0),
    as the reference's does."""
    vty = x.type
    t = builder.fadd(builder.fmul(x, _vec_const(vty, _SIXTH)), _vec_const(vty, 0.5))
    return builder.fmul(x, clamp_keeping_nan(builder, t, ir.Constant(vty, None), _vec_const(vty, 1.0)))


def exp_nonpositive(builder, x):
    """exp(``x``) lane by lane for ``x`` <= 0, 0 below the floor (-87, near where float32 turns
    subnormal); a NaN lane stays NaN.

    Why 0 there rather than exp(floor): a softmax row masked with -1e38 or -inf (attention
    padding) had its masked lanes at ~1.6e-38, which its scaling by 1/sum then made subnormal,
    and subnormal products cost the CPU microcode assists: 512 rows of 128 with 28 masked ran 33
    us against 20 unmasked. Such a lane is set to -127 ln 2, whose power of two 2^-127 is built
    with exponent bits 0, i.e. 0.0: no instruction more than the clamp (a select after the
    product cost ~8%)."""
    vty = x.type
    c = lambda v: _vec_const(vty, v)  # noqa: E731
    fma = _intrinsic(builder, "fma", vty, 3)
    x = builder.select(builder.fcmp_ordered("<", x, c(_EXP_FLOOR)), c(_EXP_ZERO), x)  # ordered: a NaN keeps
    t = builder.call(_intrinsic(builder, "rint", vty, 1), [builder.fmul(x, c(vmath._LOG2E))])
    r = builder.call(fma, [builder.fneg(t), c(vmath.LN2_HI), x])  # x - t ln2, in two parts
    r = builder.call(fma, [builder.fneg(t), c(vmath.LN2_LO), r])
    p = c(vmath.EXP_POLY[0])
    for coef in vmath.EXP_POLY[1:]:
        p = builder.call(fma, [p, r, c(coef)])
    e = builder.fadd(builder.call(fma, [builder.fmul(p, r), r, r]), c(1.0))  # p r^2 + r + 1
    ity = ir.VectorType(_I32, vty.count)
    n = builder.add(builder.fptosi(t, ity), ir.Constant(ity, [127] * vty.count))
    two_n = builder.bitcast(builder.shl(n, ir.Constant(ity, [23] * vty.count)), vty)
    return builder.fmul(e, two_n)


def sigmoid(builder, x, times_x):
    """``sigmoid(x)``, or ``x * sigmoid(x)`` (SiLU) where the i1 ``times_x`` holds, as
    :func:`vmath.sigmoid_row` computes it: sigmoid(-inf) = 0, SiLU(-inf) = NaN, a NaN stays NaN."""
    vty = x.type
    one = _vec_const(vty, 1.0)
    fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), f"llvm.fabs.v{vty.count}f32")
    ax = builder.call(fabs, [x])
    e = exp_nonpositive(builder, builder.fneg(ax))
    s = builder.fdiv(builder.select(builder.fcmp_ordered(">=", x, ir.Constant(vty, None)), one, e),
                     builder.fadd(one, e))
    return builder.select(times_x, builder.fmul(x, s), s)
