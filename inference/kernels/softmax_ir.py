"""One softmax row on LLVM float32 vectors of 16 lanes: max, exp and sum, scale, each a pass of
whole vectors and one masked vector for the row's tail.

Why IR: numba's loops left this row 3.3x onnxruntime's Softmax (attention's 4 x 128 rows of 128:
57 against 17.5 us, one thread). Its max reduction did not vectorise in any form tried (Python's
``max``, a select, with or without fast-math: ~16 us, 0.25 ns an element) and the exp with its sum
ran at half the speed of its parts alone (25 us against 9 + 2.5). Written as vectors, every pass is
vector instructions; the exp is :func:`~inference.kernels.vmath_ir.exp_nonpositive`, the register
tile's, so it is Cephes ``expf`` as in :mod:`~inference.kernels.vmath`.

NaN and inf: the max skips NaN lanes (ordered compares), but a NaN element's ``exp`` is NaN, so its
row's sum and every output are NaN; a +inf element makes ``inf - inf`` NaN, and a row of -inf
``-inf - -inf``: NaN rows, as the reference's ``exp(x - max) / sum`` gives.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from inference.kernels.memcpy_ir import flat_pointer
from inference.kernels.tile_ir import LANES, _masked_f32, fold_lanes, splat
from inference.kernels.vmath_ir import exp_nonpositive

_F32, _I64, _I32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
_VTY = ir.VectorType(_F32, LANES)


def _vector_at(builder, base, index):
    """The <16 x float>* at ``base[index]`` (a float*)."""
    return builder.bitcast(builder.gep(base, [index]), ir.PointerType(_VTY))


@intrinsic
def softmax_row(typingctx, x, x0, y, y0, n):
    """``y[y0:y0 + n] = softmax(x[x0:x0 + n])`` for C-contiguous float32 arrays, indexed flat; the
    caller keeps both ranges inside their arrays (``n`` >= 1)."""
    if not (isinstance(x, types.Array) and isinstance(y, types.Array) and x.dtype == types.float32
            and y.dtype == types.float32):
        return None
    sig = types.void(x, x0, y, y0, n)

    def codegen(context, builder, signature, args):
        px = flat_pointer(context, builder, signature, args, 0, 1)
        py = flat_pointer(context, builder, signature, args, 2, 3)
        nv = context.cast(builder, args[4], signature.args[4], types.int64)
        full = builder.and_(nv, ir.Constant(_I64, -LANES))
        rest = builder.trunc(builder.sub(nv, full), _I32)
        lane_ids = ir.Constant(ir.VectorType(_I32, LANES), list(range(LANES)))
        tail = builder.icmp_signed("<", lane_ids, splat(builder, rest, lane_ids.type))
        align = ir.Constant(_I32, 4)
        neg_inf = ir.Constant(_VTY, [float("-inf")] * LANES)
        zeros = ir.Constant(_VTY, [0.0] * LANES)

        def chunks(body):
            """``body(index, mask or None)`` per whole vector, then once for the tail if any."""
            with cgutils.for_range_slice(builder, ir.Constant(_I64, 0), full, ir.Constant(_I64, LANES),
                                         inc=True) as (i, _):
                body(i, None)
            with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(_I32, 0))):
                body(full, tail)

        def load(base, i, mask, passthru):
            ptr = _vector_at(builder, base, i)
            if mask is None:
                return builder.load(ptr, align=4)
            return _masked_f32(builder, "load", [ptr, align, mask, passthru])

        def store(value, base, i, mask):
            ptr = _vector_at(builder, base, i)
            if mask is None:
                builder.store(value, ptr, align=4)
            else:
                _masked_f32(builder, "store", [value, ptr, align, mask])

        top = cgutils.alloca_once_value(builder, neg_inf)

        def find_max(i, mask):
            v, m = load(px, i, mask, neg_inf), builder.load(top)
            builder.store(builder.select(builder.fcmp_ordered(">", v, m), v, m), top)

        chunks(find_max)
        m = fold_lanes(builder, lambda a, b: builder.select(builder.fcmp_ordered(">", b, a), b, a), builder.load(top),
                   ir.Constant(_F32, float("-inf")))
        shift = splat(builder, m, _VTY)
        total = cgutils.alloca_once_value(builder, zeros)

        def exponentiate(i, mask):
            e = exp_nonpositive(builder, builder.fsub(load(px, i, mask, neg_inf), shift))
            if mask is not None:
                e = builder.select(mask, e, zeros)
            store(e, py, i, mask)
            builder.store(builder.fadd(builder.load(total), e), total)

        chunks(exponentiate)
        s = fold_lanes(builder, builder.fadd, builder.load(total), ir.Constant(_F32, 0.0))
        inv = splat(builder, builder.fdiv(ir.Constant(_F32, 1.0), s), _VTY)

        def scale(i, mask):
            store(builder.fmul(load(py, i, mask, zeros), inv), py, i, mask)

        chunks(scale)
        return context.get_dummy_value()

    return sig, codegen
