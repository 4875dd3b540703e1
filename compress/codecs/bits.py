"""Bit-level coding shared by the schemes: b-bit code packing, LEB128 varints, sparse index sets.

All numpy-vectorized. Varints are coded without a Python loop per value (a loop of at most 10
passes over the whole array), which keeps 10^4..10^5 indices well under a millisecond, so numba
buys nothing here.
"""
from __future__ import annotations

import struct

import numpy as np

from .errors import PayloadError
from .wire import Reader

# ---------------------------------------------------------------------------------------------
# b-bit codes


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack uint8 codes < 2**bits into ceil(len*bits/8) bytes, low bits first."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if bits == 8:
        return codes.tobytes()
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-codes.size) % per
        if pad:
            codes = np.concatenate([codes, np.zeros(pad, np.uint8)])
        lanes = codes.reshape(-1, per)
        out = lanes[:, 0].copy()
        for j in range(1, per):
            out |= lanes[:, j] << np.uint8(j * bits)
        return out.tobytes()
    # Odd widths (3, 5, 6, 7): spell every code out as bits, then let packbits do the work.
    bitmat = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & np.uint8(1)
    return np.packbits(bitmat.ravel(), bitorder="little").tobytes()


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def unpack_codes(raw: np.ndarray, count: int, bits: int, what: str) -> np.ndarray:
    """Inverse of pack_codes; rejects non-zero padding bits (they mean corruption)."""
    if bits == 8:
        return raw[:count]
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        lanes = (raw[:, None] >> (np.arange(per, dtype=np.uint8) * np.uint8(bits))) & mask
        flat = lanes.ravel()
    else:
        allbits = np.unpackbits(raw, bitorder="little")
        used = allbits[: count * bits].reshape(count, bits)
        if allbits[count * bits:].any():
            raise PayloadError(f"{what}: non-zero padding bits after the last code")
        return (used << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)
    if flat[count:].any():
        raise PayloadError(f"{what}: non-zero padding bits after the last code")
    return flat[:count]


def read_codes(r: Reader, count: int, bits: int, what: str) -> np.ndarray:
    return unpack_codes(r.take(packed_size(count, bits), what), count, bits, what)


def pack_bools(flags: np.ndarray) -> bytes:
    return np.packbits(flags, bitorder="little").tobytes()


def read_bools(r: Reader, count: int, what: str) -> np.ndarray:
    """`count` packed booleans; padding bits must be zero."""
    raw = r.take((count + 7) // 8, what)
    allbits = np.unpackbits(raw, bitorder="little")
    if allbits[count:].any():
        raise PayloadError(f"{what}: non-zero padding bits after the last element")
    return allbits[:count].astype(bool)


# ---------------------------------------------------------------------------------------------
# LEB128 varints

_MAX_VARINT_BYTES = 5  # enough for any uint32; longer means corruption


def varint_encode(values: np.ndarray) -> np.ndarray:
    """Unsigned LEB128 of each value (7 bits per byte, high bit = more bytes follow)."""
    v = np.ascontiguousarray(values, dtype=np.uint64)
    if v.size == 0:
        return np.zeros(0, np.uint8)
    nbytes = np.ones(v.size, np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        nbytes += rest > 0
        rest >>= np.uint64(7)
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    owner = np.repeat(np.arange(v.size), nbytes)
    j = np.arange(int(ends[-1])) - starts[owner]
    chunk = (v[owner] >> (np.uint64(7) * j.astype(np.uint64))) & np.uint64(0x7F)
    more = (j < nbytes[owner] - 1).astype(np.uint64) << np.uint64(7)
    return (chunk | more).astype(np.uint8)


def varint_decode(raw: np.ndarray, count: int, what: str) -> np.ndarray:
    """Decode exactly `count` canonical varints filling all of `raw`, as uint64."""
    if raw.size == 0:
        if count:
            raise PayloadError(f"{what}: expected {count} varints, got no bytes")
        return np.zeros(0, np.uint64)
    last = raw < 0x80
    if not last[-1]:
        raise PayloadError(f"{what}: truncated varint (final byte has its continuation bit set)")
    ends = np.flatnonzero(last)
    if ends.size != count:
        raise PayloadError(f"{what}: expected {count} varints, found {ends.size}")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > _MAX_VARINT_BYTES:
        raise PayloadError(f"{what}: varint longer than {_MAX_VARINT_BYTES} bytes")
    if ((lengths > 1) & (raw[ends] == 0)).any():
        raise PayloadError(f"{what}: non-canonical varint (zero final byte)")
    owner = np.repeat(np.arange(count), lengths)
    j = np.arange(raw.size) - starts[owner]
    parts = (raw & np.uint8(0x7F)).astype(np.uint64) << (np.uint64(7) * j.astype(np.uint64))
    return np.add.reduceat(parts, starts)


# ---------------------------------------------------------------------------------------------
# sparse index sets

INDEX_VARINT = 0
INDEX_BITMAP = 1
_IDX_HEAD = struct.Struct("<BI")


def encode_indices(idx: np.ndarray, n: int) -> bytes:
    """Code sorted unique indices into [0, n) as gap varints or a bitmap, whichever is smaller.

    Layout: method u8, byte length u32, bytes. Gaps are idx[i] - idx[i-1] - 1 (first: idx[0]),
    so dense runs cost one byte per index; the bitmap wins once more than ~1/8 are kept.
    """
    gaps = np.diff(idx, prepend=-1) - 1
    var = varint_encode(gaps)
    bitmap_len = (n + 7) // 8
    if var.size <= bitmap_len:
        return _IDX_HEAD.pack(INDEX_VARINT, var.size) + var.tobytes()
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return _IDX_HEAD.pack(INDEX_BITMAP, bitmap_len) + pack_bools(mask)


def read_indices(r: Reader, k: int, n: int, what: str) -> np.ndarray:
    """Inverse of encode_indices: k strictly increasing int64 indices, all < n."""
    method, nbytes = r.unpack(_IDX_HEAD, f"{what} index header")
    if method == INDEX_VARINT:
        gaps = varint_decode(r.take(nbytes, f"{what} indices"), k, f"{what} indices")
        if k and int(gaps.max()) >= n:
            raise PayloadError(f"{what}: index out of range (gap {int(gaps.max())} in an array of {n})")
        idx = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if k and idx[-1] >= n:
            raise PayloadError(f"{what}: index out of range ({int(idx[-1])} >= size {n})")
        return idx
    if method == INDEX_BITMAP:
        if nbytes != (n + 7) // 8:
            raise PayloadError(f"{what}: bitmap of {nbytes} bytes for an array of {n} elements "
                               f"(expected {(n + 7) // 8})")
        raw = r.take(nbytes, f"{what} bitmap")
        allbits = np.unpackbits(raw, bitorder="little")
        if allbits[n:].any():
            raise PayloadError(f"{what}: index out of range (bitmap bit set beyond size {n})")
        idx = np.flatnonzero(allbits[:n])
        if idx.size != k:
            raise PayloadError(f"{what}: bitmap marks {idx.size} indices, header says {k}")
        return idx
    raise PayloadError(f"{what}: unknown index coding {method}")
