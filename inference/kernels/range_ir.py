"""The range of a float32 run including zero, ``(min(x, 0), max(x, 0))``, on 16-lane vectors.

Why IR: DynamicQuantizeLinear needs this range before it can quantize, and inside numba so a
dynamically quantized model's run stays one list of compiled calls (:mod:`inference.kernel_replay`).
numba's own min/max loops do not vectorise (the reductions stay scalar; see
:mod:`inference.kernels.softmax_ir`), which left the pass at ~0.5 ns an element against numpy's SIMD
reductions' ~0.08. Here each 16 elements cost one compare-and-select for each bound and one
unordered compare: a NaN anywhere makes both bounds NaN, as numpy's ``min``/``max`` (and so the
specification's formula) give.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from inference.kernels.memcpy_ir import flat_pointer
from inference.kernels.tile_ir import LANES, _masked_f32, fold_lanes, splat

_F32, _I64, _I32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
_VTY = ir.VectorType(_F32, LANES)
_MTY = ir.VectorType(ir.IntType(1), LANES)


@intrinsic
def range_with_zero(typingctx, x, x0, n):
    """``(min(0, x[x0:x0+n]), max(0, x[x0:x0+n]))`` as float32 for a C-contiguous float32 array
    indexed flat (the caller keeps the run inside it); (NaN, NaN) if the run holds a NaN."""
    if not (isinstance(x, types.Array) and x.dtype == types.float32):
        return None
    sig = types.UniTuple(types.float32, 2)(x, x0, n)

    def codegen(context, builder, signature, args):
        px = flat_pointer(context, builder, signature, args, 0, 1)
        nv = context.cast(builder, args[2], signature.args[2], types.int64)
        full = builder.and_(nv, ir.Constant(_I64, -LANES))
        rest = builder.trunc(builder.sub(nv, full), _I32)
        lane_ids = ir.Constant(ir.VectorType(_I32, LANES), list(range(LANES)))
        zeros = ir.Constant(_VTY, [0.0] * LANES)
        lo = cgutils.alloca_once_value(builder, zeros)
        hi = cgutils.alloca_once_value(builder, zeros)
        nan = cgutils.alloca_once_value(builder, ir.Constant(_MTY, [0] * LANES))

        def take(v):
            a, b = builder.load(lo), builder.load(hi)
            builder.store(builder.select(builder.fcmp_ordered("<", v, a), v, a), lo)
            builder.store(builder.select(builder.fcmp_ordered(">", v, b), v, b), hi)
            builder.store(builder.or_(builder.load(nan), builder.fcmp_unordered("uno", v, v)), nan)

        with cgutils.for_range_slice(builder, ir.Constant(_I64, 0), full, ir.Constant(_I64, LANES),
                                     inc=True) as (i, _):
            ptr = builder.bitcast(builder.gep(px, [i]), _VTY.as_pointer())
            take(builder.load(ptr, align=4))
        with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(_I32, 0))):
            tail = builder.icmp_signed("<", lane_ids, splat(builder, rest, lane_ids.type))
            ptr = builder.bitcast(builder.gep(px, [full]), _VTY.as_pointer())
            take(_masked_f32(builder, "load", [ptr, ir.Constant(_I32, 4), tail, zeros]))

        zero = ir.Constant(_F32, 0.0)  # the bounds include zero already: a start that changes neither
        smallest = fold_lanes(builder, lambda a, b: builder.select(builder.fcmp_ordered("<", b, a), b, a),
                              builder.load(lo), zero)
        largest = fold_lanes(builder, lambda a, b: builder.select(builder.fcmp_ordered(">", b, a), b, a),
                             builder.load(hi), zero)
        any_nan = fold_lanes(builder, builder.or_, builder.load(nan), ir.Constant(ir.IntType(1), 0))
        qnan = ir.Constant(_F32, float("nan"))
        smallest = builder.select(any_nan, qnan, smallest)
        largest = builder.select(any_nan, qnan, largest)
        return context.make_tuple(builder, signature.return_type, [smallest, largest])

    return sig, codegen
