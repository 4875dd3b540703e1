"""One contiguous run of array elements copied by LLVM's ``memcpy`` inside a numba kernel, and the
flat element pointer such intrinsics start from.

Why: numba compiles ``dst[a:b] = src[c:d]`` and the equivalent element loop into a loop that LLVM
guards against the two views overlapping and vectorises poorly: padding an RGB stem's 3x224x224
planes row by row took 46 us that way, against numpy's 16 (whole-array slice assignments) and
14 as ``memcpy`` runs here (one thread, alone).
"""
from __future__ import annotations

from numba.core import cgutils, types
from numba.extending import intrinsic


def flat_pointer(context, builder, signature, args, array_at: int, index_at: int):
    """In an intrinsic's codegen: the pointer to element ``args[index_at]`` (any integer) of the
    C-contiguous array ``args[array_at]``, indexed flat."""
    data = context.make_array(signature.args[array_at])(context, builder, args[array_at]).data
    index = context.cast(builder, args[index_at], signature.args[index_at], types.int64)
    return builder.gep(data, [index])


@intrinsic
def copy_run(typingctx, dst, d0, src, s0, count):
    """``dst[d0:d0 + count] = src[s0:s0 + count]`` for C-contiguous arrays of one dtype that do not
    overlap there, indexed flat; the caller keeps the ranges inside both."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype):
        return None
    sig = types.void(dst, d0, src, s0, count)

    def codegen(context, builder, signature, args):
        n = context.cast(builder, args[4], signature.args[4], types.int64)
        itemsize = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        cgutils.raw_memcpy(builder, flat_pointer(context, builder, signature, args, 0, 1),
                           flat_pointer(context, builder, signature, args, 2, 3), n, itemsize)
        return context.get_dummy_value()

    return sig, codegen
