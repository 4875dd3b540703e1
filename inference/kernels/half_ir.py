"""float16 <-> float32 conversion of one value inside a numba kernel, as LLVM's ``fpext`` /
``fptrunc`` on a ``half``: numba has no float16 type, so the kernels read and write half values
as their uint16 bits.

Why: numpy converts float16 element by element in C (a 224x224 RGB image 245 us to float32, and
float32 to float16 in milliseconds once values overflow); in a loop LLVM turns these into the
F16C instructions, 16 lanes at a time (22 and 33 us). Rounding is IEEE's, to nearest even, with
overflow to infinity and NaN kept: bit for bit numpy's, checked on every half and on random
float32 bit patterns in the tests.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def half_bits_to_float(typingctx, bits):
    """The float32 value of the float16 whose bits are the uint16 ``bits`` (exact)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def float_to_half_bits(typingctx, x):
    """The uint16 bits of float32 ``x`` rounded to float16."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(x), codegen
