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

from inference.kernels.activations import HARD_SWISH, NONE, SILU
from inference.kernels.vmath_ir import clamp_keeping_nan, hard_swish, sigmoid

LANES = 16
PREFETCH_STEPS = 16  # see :func:`_k_loop`
_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


def has_vnni() -> bool:
    """Whether numba compiles for a host with AVX512-VNNI (not when NUMBA_CPU_NAME asks for a
    portable build: then the generic tile is compiled)."""
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return False
    feats = llvm_binding.get_host_cpu_features()
    return bool(feats.get("avx512vnni")) and bool(feats.get("avx512f"))


def prefetch_line(builder, at) -> None:
    """Ask for the cache line at pointer ``at`` (a read, to be kept in every cache level)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [
        ir.IntType(8).as_pointer(), _I32, _I32, _I32]), "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(at, ir.IntType(8).as_pointer()), ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                      ir.Constant(_I32, 1)])


@intrinsic
def prefetch(typingctx, arr, index):
    """``prefetch(arr, i)`` in a numba kernel: :func:`prefetch_line` of ``arr[i]`` (no bounds check:
    a prefetch past the array faults nothing)."""
    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        prefetch_line(builder, builder.gep(a.data, [args[1]]))
        return context.get_dummy_value()

    return types.void(arr, index), codegen


def splat(builder, value, vty: ir.VectorType):
    """``value`` (a scalar of ``vty``'s element type) in every lane of a ``vty`` vector."""
    undef = ir.Constant(vty, ir.Undefined)
    lanes0 = ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count)
    return builder.shuffle_vector(builder.insert_element(undef, value, ir.Constant(_I32, 0)), undef, lanes0)


def fold_lanes(builder, op, vec, start):
    """``vec``'s lanes folded into a scalar with ``op(acc, lane)`` from ``start`` (once per reduction,
    after a vector loop: a row's max or sum, a run's range)."""
    acc = start
    for i in range(vec.type.count):
        acc = op(acc, builder.extract_element(vec, ir.Constant(_I32, i)))
    return acc


def unpack_masks(width: int, per_block: int) -> tuple[list, list]:
    """shufflevector masks of x86's in-lane unpack low/high for two ``width``-element vectors of
    ``per_block`` elements a 128-bit block: element i of each block's low (high) half, a then b."""
    half = per_block // 2
    lo = [x for blk in range(width // per_block) for i in range(half)
          for x in (blk * per_block + i, width + blk * per_block + i)]
    hi = [x for blk in range(width // per_block) for i in range(half, per_block)
          for x in (blk * per_block + i, width + blk * per_block + i)]
    return lo, hi


def carried_loop(builder, lo, hi, name: str, initial: list):
    """Open ``for i in range(lo, hi)`` (int64) whose body updates the values ``initial`` starts
    them at (phis: a tile's accumulators, a pool's running max): returns (i, the values in this
    iteration, close); ``close(updated)`` ends the body with the next iteration's values and leaves
    the builder after the loop, where the returned values are the final ones."""
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(_I64)
    i.add_incoming(lo, entry)
    values = []
    for v in initial:
        phi = builder.phi(v.type)
        phi.add_incoming(v, entry)
        values.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, hi), body, done)
    builder.position_at_end(body)

    def close(updated: list) -> None:
        if len(updated) != len(values):
            raise ValueError(f"carried_loop {name}: {len(updated)} values for {len(values)} carried")
        i.add_incoming(builder.add(i, ir.Constant(_I64, 1)), builder.block)
        for phi, v in zip(values, updated):
            phi.add_incoming(v, builder.block)
        builder.branch(head)
        builder.position_at_end(done)

    return i, values, close


def counted_loop(builder, lo, hi, name: str):
    """Open ``for i in range(lo, hi)`` (int64): returns (i, close); ``close()`` ends the body and
    leaves the builder after the loop."""
    i, _, close = carried_loop(builder, lo, hi, name, [])
    return i, lambda: close([])


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
            accs = _k_loop(context, builder, signature, args, mr, nv, vty, _step(builder, kind, use_vnni))
            outa = context.make_array(signature.args[6])(context, builder, args[6])
            for i, acc in enumerate(accs):
                builder.store(acc, builder.bitcast(builder.gep(outa.data, [ir.Constant(_I64, i * LANES)]),
                                                   vty.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _k_loop(context, builder, signature, args, mr: int, nv: int, vty: ir.VectorType, step,
            rows_major: bool = False, row_offsets: int | None = None, row_limit: int | None = None) -> list:
    """The tile's loop over its K steps (args 0-5: wp, w_off, cp, c_off, koff, steps); leaves the
    builder after the loop and returns the ``mr * nv`` accumulators (row-major: (r, v) at r*nv + v).

    Step k's vectors are at ``cp[c_off + koff[k]:]`` and its broadcast for row r is
    ``wp[w_off + k*mr + r]`` (packed), or with ``rows_major`` ``wp[w_off + r*steps + k]`` (row r
    of a row-major (rows, steps) matrix, read unpacked). Gathered (``row_offsets``: the index of
    an int64 arg ``roff``): the broadcast is ``wp[w_off + roff[r] + koff[k]]`` and the vectors are
    at ``cp[c_off + k*nv*16:]``; the two tables address any rows (pixels) and steps (taps x
    channels) of an unpacked input, e.g. the patches of a padded channels-last image in place (an
    implicit-GEMM convolution). It keeps ``mr`` row pointers live: 6 rows run at the matrix form's
    speed, 12 rows ran 1.3-1.9x slower. With ``row_limit`` (the index of an int64 arg ``rows``)
    ``rows_major`` rows r >= rows read row ``rows - 1``: a last, partial tile stays inside ``wp``.

    In both channels-along-lanes forms each step prefetches the weight panel
    :data:`PREFETCH_STEPS` steps ahead. Why: a panel is streamed once from L3 for the first tile of
    its channel block, and where few tiles follow (ResNet-18's 512-channel layers: 9 tiles of
    6 pixels over 1.2 MB of weights) that first pass set the pace: with the prefetch those layers
    went from 1.44-1.58x onnxruntime's time to 1.12-1.30x, ResNet-18's convolutions in all from
    1.20-1.22x to 1.06-1.08x (``benchmarks/conv_layouts.py``, 8 and 16 steps ahead about equal,
    32 no better)."""
    const = lambda v: ir.Constant(_I64, v)  # noqa: E731
    wpa = context.make_array(signature.args[0])(context, builder, args[0])
    cpa = context.make_array(signature.args[2])(context, builder, args[2])
    koa = context.make_array(signature.args[4])(context, builder, args[4])
    w_base, c_base = builder.gep(wpa.data, [args[1]]), builder.gep(cpa.data, [args[3]])
    row_bases = []
    if row_offsets is not None:
        roa = context.make_array(signature.args[row_offsets])(context, builder, args[row_offsets])
        row_bases = [builder.gep(w_base, [builder.load(builder.gep(roa.data, [const(r)]))]) for r in range(mr)]
    row_starts = [const(r) for r in range(mr)]
    if rows_major and row_limit is not None:
        last, rows = builder.sub(args[row_limit], const(1)), args[row_limit]
        row_starts = [builder.select(builder.icmp_signed("<", const(r), rows), const(r), last) for r in range(mr)]
    k, accs, close = carried_loop(builder, const(0), args[5], "tile", [ir.Constant(vty, None)] * (mr * nv))
    kbase = builder.load(builder.gep(koa.data, [k]))  # koff is int64
    vbase = builder.mul(k, const(nv * LANES)) if row_bases else kbase
    cols = [builder.load(builder.bitcast(builder.gep(c_base, [builder.add(vbase, const(v * LANES))]),
                                         vty.as_pointer()), align=4) for v in range(nv)]
    if row_bases or rows_major:  # weight panels: fetch PREFETCH_STEPS steps ahead
        for v in range(nv):
            ahead = builder.add(vbase, const(PREFETCH_STEPS * nv * LANES + v * LANES))
            prefetch_line(builder, builder.gep(c_base, [ahead]))
    new = []
    for r in range(mr):
        if row_bases:
            at, base = kbase, row_bases[r]
        elif rows_major:
            at, base = builder.add(builder.mul(row_starts[r], args[5]), k), w_base
        else:
            at, base = builder.add(builder.mul(k, const(mr)), const(r)), w_base
        wv = builder.load(builder.gep(base, [at]))
        bc = splat(builder, wv, vty)
        new.extend(step(accs[r * nv + v], bc, cols[v]) for v in range(nv))
    close(new)
    return accs


def masked(builder, name: str, vty: ir.VectorType, args: list):
    """``llvm.masked.load`` (args: pointer, alignment, mask, passthrough) or ``llvm.masked.store``
    (value, pointer, alignment, mask) of a ``vty`` vector (i8, i32 or f32 lanes, any count): lanes
    outside the mask touch no memory."""
    mty = ir.VectorType(ir.IntType(1), vty.count)
    sig = {"store": (ir.VoidType(), [vty, vty.as_pointer(), _I32, mty]),
           "load": (vty, [vty.as_pointer(), _I32, mty, vty])}[name]
    elem = {8: "i8", 32: "i32"}[vty.element.width] if isinstance(vty.element, ir.IntType) else "f32"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(sig[0], sig[1]),
                                        f"llvm.masked.{name}.v{vty.count}{elem}.p0")
    return builder.call(fn, args)


def _masked_f32(builder, name: str, args: list):
    """:func:`masked` of a 16-lane float32 vector (the float kernels' width)."""
    return masked(builder, name, ir.VectorType(_F32, LANES), args)


def make_out_tile(mr: int, nv: int, residual: bool, lanes: str = "pixels", gathered: bool = False):
    """A float32 tile that finishes its own outputs: an intrinsic
    ``tile(wp, w_off, cp, c_off, koff, steps, bias, b_off, rows, amin, amax, z, y, y_off, sm, seg, ns,
    act)``.

    The sums are those of ``make_tile(mr, nv, "f32")``; then, still in registers, row r (< ``rows``)
    gets ``+ bias[b_off + r]`` (``+ z`` at the same place as its output when ``residual``), goes
    through the activation ``act`` and is stored straight to ``y``: for each of the ``ns`` segments
    ``seg[i] = (first lane, output offset, length)``, lanes [first, first + length) go to
    ``y[y_off + r*sm + offset + lane - first]`` as masked vector stores. ``act`` (an activation
    code of :mod:`~inference.kernels.activations`): NONE clamps to [amin, amax] (Relu, Clip or no
    activation); HARD_SWISH computes x * clamp(x / 6 + 1/2, 0, 1), SILU x * sigmoid(x) and any other
    code sigmoid(x), the bounds unused (:mod:`~inference.kernels.vmath_ir`; callers pass only these
    four, see
    :func:`~inference.kernels.tile_lanes.tile_epilogue`). Why in the tile: a separate epilogue
    through a scratch tile cost ~120 cycles per 32 lanes, as much as the GEMM itself for short-K
    convolutions (an RGB stem has K = 27), and a SiLU in a pass of its own read and wrote the
    whole output again.

    ``lanes="channels"`` is the channels-last variant: tile rows are pixels, read unpacked as rows
    of the (pixels, K) input (``rows_major`` steps of :func:`_k_loop`), lanes are output channels,
    and lane j of vector v gets ``+ bias[b_off + v*16 + j]`` (``bias`` readable that far: padded to
    whole tiles). With ``gathered`` it takes a 19th argument ``roff`` (int64, ``mr`` entries) and
    gathers its rows through ``roff`` and ``koff`` (see :func:`_k_loop`); ``cp`` then holds the
    weights as (steps, nv*16) panels. Rows past ``rows`` are computed but not stored: their
    ``roff`` need only point inside ``wp``."""
    if lanes not in ("pixels", "channels") or (gathered and lanes != "channels"):
        raise ValueError(f"make_out_tile: lanes must be 'pixels' or 'channels' (gathered: channels only), "
                         f"not {lanes!r}")
    channels = lanes == "channels"
    vty = ir.VectorType(_F32, LANES)
    i1v = ir.VectorType(ir.IntType(1), LANES)
    i64v = ir.VectorType(_I64, LANES)

    def codegen(context, builder, signature, args):
        const = lambda v: ir.Constant(_I64, v)  # noqa: E731
        arr = lambda i: context.make_array(signature.args[i])(context, builder, args[i])  # noqa: E731
        ba, za, ya, sga = arr(6), arr(11), arr(12), arr(15)
        f32 = lambda i: context.cast(builder, args[i], signature.args[i], types.float32)  # noqa: E731
        i64 = lambda i: context.cast(builder, args[i], signature.args[i], types.int64)  # noqa: E731
        accs = _k_loop(context, builder, signature, args, mr, nv, vty, _step(builder, "f32", False), channels,
                       18 if gathered else None)

        # -- epilogue, registers to memory -------------------------------------------------
        lo, hi = splat(builder, f32(9), vty), splat(builder, f32(10), vty)
        rows, b_off, y_off, sm, act = i64(8), i64(7), i64(13), i64(14), i64(17)
        vals, row_ok = [], []
        for r in range(mr):
            ok = builder.icmp_signed("<", const(r), rows)
            row_ok.append(splat(builder, ok, i1v))
            if channels:
                bvs = [builder.load(builder.bitcast(builder.gep(ba.data, [builder.add(b_off, const(v * LANES))]),
                                                    vty.as_pointer()), align=4) for v in range(nv)]
            else:
                bidx = builder.select(ok, builder.add(b_off, const(r)), b_off)  # rows past ``rows``: a valid bias
                bvs = [splat(builder, builder.load(builder.gep(ba.data, [bidx])), vty)] * nv
            vals.extend(builder.fadd(accs[r * nv + v], bvs[v]) for v in range(nv))
        times_x = splat(builder, builder.icmp_signed("==", act, const(SILU)), i1v)

        def store(activate) -> None:
            """The segment loop storing every value through ``activate`` (after the residual)."""
            done = vals if residual else [activate(v) for v in vals]
            i, close_segments = counted_loop(builder, const(0), i64(16), "seg")
            q0 = builder.load(builder.gep(sga.data, [builder.mul(i, const(3))]))
            off = builder.load(builder.gep(sga.data, [builder.add(builder.mul(i, const(3)), const(1))]))
            cnt = builder.load(builder.gep(sga.data, [builder.add(builder.mul(i, const(3)), const(2))]))
            q0v, endv = splat(builder, q0, i64v), splat(builder, builder.add(q0, cnt), i64v)
            shift = builder.sub(off, q0)  # output offset of lane 0 of the tile row
            for v in range(nv):
                lanes = ir.Constant(i64v, [v * LANES + j for j in range(LANES)])
                mask = builder.and_(builder.icmp_signed(">=", lanes, q0v), builder.icmp_signed("<", lanes, endv))
                for r in range(mr):
                    m = builder.and_(mask, row_ok[r])
                    row_at = builder.add(y_off, builder.mul(const(r), sm))
                    at = builder.add(row_at, builder.add(shift, const(v * LANES)))
                    val = done[r * nv + v]
                    if residual:
                        zp = builder.bitcast(builder.gep(za.data, [at]), vty.as_pointer())
                        val = activate(builder.fadd(val, masked(builder, "load", vty, [
                            zp, ir.Constant(_I32, 4), m, ir.Constant(vty, None)])))
                    yp = builder.bitcast(builder.gep(ya.data, [at]), vty.as_pointer())
                    masked(builder, "store", vty, [val, yp, ir.Constant(_I32, 4), m])
            close_segments()

        with builder.if_else(builder.icmp_signed("==", act, const(NONE))) as (clamped, computed):
            with clamped:
                store(lambda v: clamp_keeping_nan(builder, v, lo, hi))
            with computed:
                with builder.if_else(builder.icmp_signed("==", act, const(HARD_SWISH))) as (hard, smooth):
                    with hard:
                        store(lambda v: hard_swish(builder, v))
                    with smooth:
                        store(lambda v: sigmoid(builder, v, times_x))
        return context.get_dummy_value()

    if gathered:
        @intrinsic
        def tile(typingctx, wp, w_off, cp, c_off, koff, steps, bias, b_off, rows, amin, amax, z, y, y_off, sm, seg,
                 ns, act, roff):
            return types.void(wp, w_off, cp, c_off, koff, steps, bias, b_off, rows, amin, amax, z, y, y_off, sm,
                              seg, ns, act, roff), codegen
    else:
        @intrinsic
        def tile(typingctx, wp, w_off, cp, c_off, koff, steps, bias, b_off, rows, amin, amax, z, y, y_off, sm, seg,
                 ns, act):
            return types.void(wp, w_off, cp, c_off, koff, steps, bias, b_off, rows, amin, amax, z, y, y_off, sm,
                              seg, ns, act), codegen

    return tile
