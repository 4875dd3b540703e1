"""Wire format of an update payload: fixed header, per-array metadata, then one body per array.

Layout (all integers little endian)::

    magic    4 bytes  b"ELUC"
    version  u8       FORMAT_VERSION
    scheme   u8       SchemeId
    bits     u8       quantization bits of the bodies (0 when the scheme does not quantize)
    flags    u8       FLAG_DEFLATE (0x02): the bodies below are one raw-deflate stream (deflate.py);
                      every other bit is reserved and must be 0
    bucket   u32      quantization bucket size (0 = one bucket per array)
    count    u32      number of arrays
    per array: dtype code u8, ndim u8, ndim x u32 dims
    the bodies, in array order (layout owned by the scheme)

The header carries everything a decoder needs, so a server can decode any client's payload without
knowing which codec produced it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

import numpy as np

from .errors import PayloadError

MAGIC = b"ELUC"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sBBBBII")
HEADER_SIZE = _HEAD.size
MAX_NDIM = 32
FLAG_DEFLATE = 0x02
KNOWN_FLAGS = FLAG_DEFLATE


class SchemeId(IntEnum):
    """Scheme byte of the header; values are part of the wire format and never reused."""

    FP32 = 1
    FP16 = 2
    QUANT = 3
    TOPK = 4
    SIGN = 5
    STC = 6
    TOPK_QUANT = 7


SCHEME_NAMES = {
    SchemeId.FP32: "fp32",
    SchemeId.FP16: "fp16",
    SchemeId.QUANT: "quant",
    SchemeId.TOPK: "topk",
    SchemeId.SIGN: "sign",
    SchemeId.STC: "stc",
    SchemeId.TOPK_QUANT: "topk+quant",
}

# dtype code -> numpy dtype of the decoded array (the dtype the client encoded).
DTYPE_CODES = {1: np.dtype(np.float16), 2: np.dtype(np.float32), 3: np.dtype(np.float64)}
CODE_OF_DTYPE = {dt: code for code, dt in DTYPE_CODES.items()}


@dataclass(frozen=True)
class ArrayMeta:
    """What the header says about one array."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    """Decoded header of a payload."""

    scheme: SchemeId
    bits: int
    bucket: int
    arrays: tuple[ArrayMeta, ...]
    flags: int = 0

    @property
    def scheme_name(self) -> str:
        return SCHEME_NAMES[self.scheme]


def write_header(out: list[bytes], scheme: SchemeId, bits: int, bucket: int,
                 metas: Sequence[ArrayMeta], flags: int = 0) -> None:
    """Append the header bytes for `metas` to `out`."""
    out.append(_HEAD.pack(MAGIC, FORMAT_VERSION, int(scheme), bits, flags, bucket, len(metas)))
    for m in metas:
        out.append(struct.pack(f"<BB{len(m.shape)}I", CODE_OF_DTYPE[m.dtype], len(m.shape), *m.shape))


class Reader:
    """Cursor over a payload; every read checks the length first and names the field it wanted."""

    def __init__(self, payload: bytes | bytearray | memoryview):
        self.buf = memoryview(payload).cast("B") if not isinstance(payload, bytes) else payload
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise PayloadError(
                f"truncated payload: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.remaining} left")

    def take(self, n: int, what: str) -> np.ndarray:
        """The next n bytes as a read-only uint8 array (no copy)."""
        self.need(n, what)
        arr = np.frombuffer(self.buf, dtype=np.uint8, count=n, offset=self.pos)
        self.pos += n
        return arr

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        self.need(st.size, what)
        vals = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return vals

    def u8(self, what: str) -> int:
        return self.unpack(_U8, what)[0]

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)[0]

    def floats(self, count: int, dtype: str, what: str) -> np.ndarray:
        """`count` little-endian floats of `dtype`; rejects NaN/Inf."""
        width = np.dtype(dtype).itemsize
        self.need(count * width, what)
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * width
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise PayloadError(f"{what} holds a non-finite value ({arr[bad]!r} at element {bad})")
        return arr

    def f32(self, what: str) -> float:
        return float(self.floats(1, "<f4", what)[0])


_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")

QUANT_SCHEMES = (SchemeId.QUANT, SchemeId.TOPK_QUANT)


def read_header(r: Reader, max_elements: int) -> Header:
    """Parse and validate the header; refuses anything a version-1 encoder cannot have written."""
    if r.remaining < HEADER_SIZE:
        if r.remaining >= 4 and bytes(r.buf[:4]) != MAGIC:
            raise PayloadError(f"wrong magic {bytes(r.buf[:4])!r}, expected {MAGIC!r}")
        raise PayloadError(
            f"truncated payload: {r.remaining} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, scheme, bits, flags, bucket, count = r.unpack(_HEAD, "header")
    if magic != MAGIC:
        raise PayloadError(f"wrong magic {magic!r}, expected {MAGIC!r}: not an edgelearn update payload")
    if version != FORMAT_VERSION:
        raise PayloadError(f"unknown payload version {version} (this decoder reads version {FORMAT_VERSION})")
    try:
        sid = SchemeId(scheme)
    except ValueError:
        known = ", ".join(f"{int(s)}={SCHEME_NAMES[s]}" for s in SchemeId)
        raise PayloadError(f"unknown scheme id {scheme} (known: {known})") from None
    if flags & ~KNOWN_FLAGS:
        raise PayloadError(f"reserved header flags are {flags & ~KNOWN_FLAGS:#04x}, must be 0")
    if sid in QUANT_SCHEMES:
        if not 1 <= bits <= 8:
            raise PayloadError(f"scheme {SCHEME_NAMES[sid]} needs 1..8 quantization bits, header says {bits}")
    elif bits != 0 or bucket != 0:
        raise PayloadError(
            f"scheme {SCHEME_NAMES[sid]} does not quantize but header has bits={bits}, bucket={bucket}")
    # Each array needs at least 2 metadata bytes: refuse absurd counts before looping.
    if count * 2 > r.remaining:
        raise PayloadError(f"truncated payload: header announces {count} arrays, "
                           f"only {r.remaining} bytes follow")
    metas = []
    total = 0
    for i in range(count):
        code = r.u8(f"dtype of array {i}")
        if code not in DTYPE_CODES:
            raise PayloadError(f"array {i} has unknown dtype code {code}")
        ndim = r.u8(f"ndim of array {i}")
        if ndim > MAX_NDIM:
            raise PayloadError(f"array {i} has ndim {ndim} > {MAX_NDIM}")
        shape = r.unpack(struct.Struct(f"<{ndim}I"), f"shape of array {i}") if ndim else ()
        meta = ArrayMeta(DTYPE_CODES[code], tuple(int(d) for d in shape))
        total += meta.size
        if total > max_elements:
            raise PayloadError(f"payload describes more than max_elements={max_elements} elements "
                               f"(array {i} has shape {meta.shape})")
        metas.append(meta)
    return Header(sid, bits, bucket, tuple(metas), flags)


def check_shapes(header: Header, expected: Sequence[Sequence[int]]) -> None:
    """Raise PayloadError unless the payload's shapes are exactly `expected`."""
    got = [m.shape for m in header.arrays]
    want = [tuple(int(d) for d in s) for s in expected]
    if len(got) != len(want):
        raise PayloadError(f"payload holds {len(got)} arrays, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise PayloadError(f"array {i} has shape {g}, expected {w}")
