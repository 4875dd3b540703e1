"""A 16 x 16 block of bytes transposed in registers: what an int8 model's NCHW -> NHWC boundary moves.

Why: the float transpose (:func:`inference.kernels.transpose.swap_last_two`) gathers 16 rows per
output vector; for bytes LLVM has no gather, so each byte was a load and a store of its own: an int8
MobileNetV2's stem output (32 x 112 x 112 uint8) took 64 us to go channels-last, onnxruntime ~20.
Here 16 rows of 16 bytes are loaded as vectors and interleaved four times (each row pair's low and
high halves, byte by byte: after log2(16) such perfect shuffles the rows are the columns), then
stored as 16 rows: 64 byte shuffles and 32 vector memory operations per 256 bytes.
"""
from __future__ import annotations

import numba
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from inference.kernels._jit import threaded_kernel
from inference.kernels.memcpy_ir import flat_pointer
from inference.kernels.tile_ir import unpack_masks

SIDE = 16
_I32 = ir.IntType(32)
_V = ir.VectorType(ir.IntType(8), SIDE)
_LO, _HI = (ir.Constant(ir.VectorType(_I32, SIDE), m) for m in unpack_masks(SIDE, SIDE))


@intrinsic
def transpose_block(typingctx, x, x0, xs, y, y0, ys):
    """``y[y0 + j * ys + i] = x[x0 + i * xs + j]`` for i, j < 16 (1-byte C-contiguous arrays indexed
    flat; the caller keeps both blocks inside them)."""
    if not (isinstance(x, types.Array) and isinstance(y, types.Array) and x.dtype == y.dtype
            and x.dtype in (types.uint8, types.int8)):
        return None
    sig = types.void(x, x0, xs, y, y0, ys)

    def codegen(context, builder, signature, args):
        px = flat_pointer(context, builder, signature, args, 0, 1)
        py = flat_pointer(context, builder, signature, args, 3, 4)
        xs_ = context.cast(builder, args[2], signature.args[2], types.int64)
        ys_ = context.cast(builder, args[5], signature.args[5], types.int64)
        at = lambda base, stride, i: builder.bitcast(  # noqa: E731
            builder.gep(base, [builder.mul(stride, ir.Constant(ir.IntType(64), i))]), _V.as_pointer())
        rows = [builder.load(at(px, xs_, i), align=1) for i in range(SIDE)]
        for _ in range(4):  # log2(16) perfect shuffles
            half = SIDE // 2
            rows = [builder.shuffle_vector(rows[j], rows[j + half], mask) for j in range(half) for mask in (_LO, _HI)]
        for j, row in enumerate(rows):
            builder.store(row, at(py, ys_, j), align=1)
        return context.get_dummy_value()

    return sig, codegen


#: rows and columns of ``x`` per parallel task (of this swap and the float one): a task writes rows of
#: ``y`` (columns of ``x``) no other task writes, but for tile boundaries. Why not row blocks of ``x``
#: alone, as before: a stem's 32 channels made two tasks each writing 16 bytes of every 32-byte
#: output pixel, both threads on the same cache lines (the int8 MobileNetV2's boundary 43 us on one
#: thread, 66 on two)
TILE = 256


@threaded_kernel()
def swap_last_two_bytes(x, y):
    """``y (n, b, a)[i, q, p] = x (n, a, b)[i, p, q]`` for 1-byte ``x`` and ``y``: 16 x 16 blocks in
    registers, the edges element by element; parallel over :data:`TILE` x :data:`TILE` tiles."""
    n, a, b = x.shape
    xf, yf = x.reshape(-1), y.reshape(-1)
    row_tiles, col_tiles = -(-a // TILE), -(-b // TILE)
    for t in numba.prange(n * row_tiles * col_tiles):
        i, rest = t // (row_tiles * col_tiles), t % (row_tiles * col_tiles)
        p_lo, q_lo = (rest // col_tiles) * TILE, (rest % col_tiles) * TILE
        p_hi, q_hi = min(p_lo + TILE, a), min(q_lo + TILE, b)
        base = i * a * b  # of image i in both
        p0 = p_lo
        while p0 + SIDE <= p_hi:
            q = q_lo
            while q + SIDE <= q_hi:
                transpose_block(xf, base + p0 * b + q, b, yf, base + q * a + p0, a)
                q += SIDE
            for qq in range(q, q_hi):
                for p in range(p0, p0 + SIDE):
                    yf[base + qq * a + p] = xf[base + p * b + qq]
            p0 += SIDE
        for q in range(q_lo, q_hi):
            for p in range(p0, p_hi):
                yf[base + q * a + p] = xf[base + p * b + q]
