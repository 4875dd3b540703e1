"""The register tile of our implicit-GEMM kernels, written in LLVM IR: int8 (VNNI) and float32 (FMA).

Why IR: LLVM keeps a tile's accumulators in registers only if they are SSA values; from numba
loops over arrays it spills them, or (int8) never emits ``vpdpbusd``. One generator serves both
element types, so both kernels share one loop skeleton: ``mr`` broadcast weights times ``nv``
16-lane vectors per step, the vectors found through a per-step offset table. The table is what
lets one tile read packed columns, a padded image in place (direct convolution: no im2col) or the
rows of a matrix.
"""
from __future__ import annotations

import os

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

LANES = 16
_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


def has_vnni() -> bool:
    """Whether numba compiles for a host with AVX512-VNNI (not when NUMBA_CPU_NAME asks for a
    portable build: then the generic tile is compiled)."""
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return False
    feats = llvm_binding.get_host_cpu_features()
    return bool(feats.get("avx512vnni")) and bool(feats.get("avx512f"))


def _dot4_generic(builder, acc, a, b):
    """acc + sum over groups of 4 bytes of zext(a) * sext(b): vpdpbusd's meaning, any target."""
    bytes64, wide = ir.VectorType(ir.IntType(8), 64), ir.VectorType(_I32, 64)
    prod = builder.mul(builder.zext(builder.bitcast(a, bytes64), wide), builder.sext(builder.bitcast(b, bytes64), wide))
    for j in range(4):
        acc = builder.add(acc, builder.shuffle_vector(prod, prod, ir.Constant(
            ir.VectorType(_I32, LANES), [4 * i + j for i in range(LANES)])))
    return acc


def _step(builder, kind: str, vnni: bool):
    """``acc, broadcast, vector -> acc'`` for one tile step of ``kind``."""
    if kind == "f32":
        vty = ir.VectorType(_F32, LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), "llvm.fma.v16f32")
        return lambda acc, bc, col: builder.call(fma, [bc, col, acc])
    vty = ir.VectorType(_I32, LANES)
    if vnni:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                            "llvm.x86.avx512.vpdpbusd.512")
        dot4 = lambda acc, a, b: builder.call(fn, [acc, a, b])  # noqa: E731
    else:
        dot4 = lambda acc, a, b: _dot4_generic(builder, acc, a, b)  # noqa: E731
    if kind == "s8u8":  # broadcasts unsigned (matrix products: activations broadcast)
        return lambda acc, bc, col: dot4(acc, bc, col)
    return lambda acc, bc, col: dot4(acc, col, bc)


def make_tile(mr: int, nv: int, kind: str = "u8s8", vnni: bool | None = None):
    """An intrinsic ``tile(wp, w_off, cp, c_off, koff, steps, out)``: ``out[mr*nv*16]`` = sums over
    ``steps`` steps k of ``mr`` broadcast scalars at ``wp[w_off + k*mr:]`` times ``nv`` 16-lane
    vectors at ``cp[c_off + koff[k]:]``; accumulator (r, v) is stored at ``out[(r*nv + v)*16:]``.

    ``kind``: ``"f32"`` (float32 FMA), ``"u8s8"`` (int32 scalars holding 4 int8 weights, vectors of
    uint8 pixels in fours: ``vpdpbusd``) or ``"s8u8"`` (the same with the signs swapped)."""
    use_vnni = has_vnni() if vnni is None else vnni
    elem = _F32 if kind == "f32" else _I32
    vty = ir.VectorType(elem, LANES)

    @intrinsic
    def tile(typingctx, wp, w_off, cp, c_off, koff, steps, out):
        sig = types.void(wp, w_off, cp, c_off, koff, steps, out)

        def codegen(context, builder, signature, args):
            const = lambda v: ir.Constant(_I64, v)  # noqa: E731
            wpa = context.make_array(signature.args[0])(context, builder, args[0])
            cpa = context.make_array(signature.args[2])(context, builder, args[2])
            koa = context.make_array(signature.args[4])(context, builder, args[4])
            outa = context.make_array(signature.args[6])(context, builder, args[6])
            w_base, c_base = builder.gep(wpa.data, [args[1]]), builder.gep(cpa.data, [args[3]])
            step = _step(builder, kind, use_vnni)
            init = [ir.Constant(vty, None)] * (mr * nv)
            entry = builder.block
            header = builder.append_basic_block("tile.header")
            body = builder.append_basic_block("tile.body")
            done = builder.append_basic_block("tile.exit")
            builder.branch(header)
            builder.position_at_end(header)
            k = builder.phi(_I64)
            k.add_incoming(const(0), entry)
            accs = []
            for i in range(mr * nv):
                acc = builder.phi(vty)
                acc.add_incoming(init[i], entry)
                accs.append(acc)
            builder.cbranch(builder.icmp_signed("<", k, args[5]), body, done)
            builder.position_at_end(body)
            kbase = builder.load(builder.gep(koa.data, [k]))  # koff is int64
            cols = [builder.load(builder.bitcast(builder.gep(c_base, [builder.add(kbase, const(v * LANES))]),
                                                 vty.as_pointer()), align=4) for v in range(nv)]
            undef = ir.Constant(vty, ir.Undefined)
            splat = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
            new = []
            for r in range(mr):
                wv = builder.load(builder.gep(w_base, [builder.add(builder.mul(k, const(mr)), const(r))]))
                bc = builder.shuffle_vector(builder.insert_element(undef, wv, ir.Constant(_I32, 0)), undef, splat)
                new.extend(step(accs[r * nv + v], bc, cols[v]) for v in range(nv))
            k.add_incoming(builder.add(k, const(1)), builder.block)
            for acc, n in zip(accs, new):
                acc.add_incoming(n, builder.block)
            builder.branch(header)
            builder.position_at_end(done)
            for i, acc in enumerate(accs):
                builder.store(acc, builder.bitcast(builder.gep(outa.data, [const(i * LANES)]), vty.as_pointer()),
                              align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile
