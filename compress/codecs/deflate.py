"""A lossless stage after any codec: raw-deflate the bodies when that makes the payload smaller.

    make_codec("q8+deflate")     # 8-bit codes, then deflate (zlib, no zlib/gzip framing)

Why: 8-bit codes are not uniformly used. Gradients of a loss w.r.t. embeddings are small for
most rows and large for a few, so on a per-bucket [min, max] grid most codes sit near the middle
(measured ~4.4 bits of entropy per 8-bit code on the digits split); Huffman coding of those bytes
removes the slack without changing a single decoded value, so accuracy is exactly the inner
codec's. The header (scheme, shapes) stays uncompressed and readable; header flag FLAG_DEFLATE says
the bodies after it are one raw-deflate stream. When deflate would not shrink a payload
(near-uniform codes, tiny messages) the inner payload goes out unchanged, so the stage never costs
bytes. Decoding inflates with a hard output bound derived from the header (no zip bombs) and then
parses the bodies as strictly as ever.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from .errors import CodecSpecError, PayloadError
from .schemes import DEFAULT_MAX_ELEMENTS, Codec, CodecState, Shapes
from .wire import FLAG_DEFLATE, Header, Reader, read_header, write_header

# Raw deflate (no zlib header / Adler-32: the bodies are parsed strictly anyway), best effort.
_WBITS, _LEVEL, _MEMLEVEL = -15, 9, 9
_STRATEGIES = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY)


def body_bound(h: Header) -> int:
    """Most body bytes any scheme writes for the header's arrays (fp32 4/elt, top-k <= 9/elt + 8)."""
    n = sum(m.size for m in h.arrays)
    return 16 * n + 16 * len(h.arrays) + 64


def deflate(data: bytes) -> bytes:
    """The smallest raw-deflate stream of `data` over the strategies tried (deterministic)."""
    best = b""
    for strategy in _STRATEGIES:
        c = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEMLEVEL, strategy)
        z = c.compress(data) + c.flush()
        if not best or len(z) < len(best):
            best = z
    return best


def inflate_bodies(r: Reader, h: Header) -> Reader:
    """A reader over the inflated bodies; consumes the rest of `r`. Raises PayloadError if corrupt."""
    stream = bytes(r.buf[r.pos:])
    r.pos = len(r.buf)
    bound = body_bound(h)
    d = zlib.decompressobj(_WBITS)
    try:
        out = d.decompress(stream, bound + 1)
    except zlib.error as e:
        raise PayloadError(f"deflated bodies are corrupt ({e}); {len(stream)} bytes after the header") from None
    if len(out) > bound:
        raise PayloadError(f"deflated bodies inflate beyond {bound} bytes, more than the header's "
                           f"{len(h.arrays)} arrays can hold")
    if not d.eof:
        raise PayloadError(f"truncated deflate stream: {len(stream)} bytes end before the stream does")
    if d.unused_data:
        raise PayloadError(f"{len(d.unused_data)} trailing bytes after the deflate stream")
    return Reader(out)


class DeflateCodec(Codec):
    """`inner`'s payload with its bodies deflated (when smaller); state, seed, spec come from `inner`."""

    def __init__(self, inner: Codec):  # noqa: D107 -- the state lives in `inner`
        if isinstance(inner, DeflateCodec):
            raise CodecSpecError(f"deflate twice ({inner.spec}+deflate): it is one final stage")
        self.inner = inner
        self.config = inner.config
        self.scheme_id = inner.scheme_id

    @property
    def state(self) -> CodecState:  # type: ignore[override]
        return self.inner.state

    @state.setter
    def state(self, value: CodecState) -> None:
        self.inner.state = value

    @property
    def spec(self) -> str:
        return f"{self.inner.spec}+deflate"

    def _header_params(self) -> tuple[int, int]:
        return self.inner._header_params()

    def _encode_flat(self, v: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
        return self.inner._encode_flat(v, rng)

    def encode(self, arrays: Sequence[np.ndarray], state: CodecState | None = None) -> bytes:
        """The inner codec's payload, bodies deflated if that saves bytes (decoded values identical)."""
        payload = self.inner.encode(arrays, state)
        r = Reader(payload)
        h = read_header(r, DEFAULT_MAX_ELEMENTS)
        packed = deflate(payload[r.pos:])
        if len(packed) >= len(payload) - r.pos:
            return payload
        head: list[bytes] = []
        write_header(head, h.scheme, h.bits, h.bucket, h.arrays, h.flags | FLAG_DEFLATE)
        return b"".join(head) + packed

    def decode(self, payload: bytes, expected_shapes: Shapes | None = None, *,
               max_elements: int = DEFAULT_MAX_ELEMENTS) -> list[np.ndarray]:
        return self.inner.decode(payload, expected_shapes, max_elements=max_elements)

    def __repr__(self) -> str:
        return f"DeflateCodec({self.inner!r})"
