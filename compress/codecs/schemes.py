"""The codec classes: one typed config and one class per scheme, plus the generic decoder.

Every codec encodes a list of float arrays into one self-describing payload (see wire.py) and
keeps a `CodecState` per client: a round counter (so each round draws fresh, yet reproducible,
randomness) and, when error feedback is on, one residual per array. Error feedback compresses
x + residual and carries what the payload failed to say into the next round, which is what keeps
biased compressors (top-k, sign, STC) converging.
"""
from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .bits import encode_indices, pack_bools, read_bools, read_indices
from .errors import CodecError, CodecInputError, CodecSpecError, PayloadError
from .quant import dequantize, quantize, quantized_bytes, read_quantized
from .wire import (
    CODE_OF_DTYPE, FLAG_DEFLATE, MAX_NDIM, SCHEME_NAMES, ArrayMeta, Header, Reader, SchemeId,
    check_shapes, read_header, write_header,
)

DEFAULT_MAX_ELEMENTS = 1 << 26  # 67M elements; pass max_elements= for bigger models
_FP16_MAX = float(np.finfo(np.float16).max)
_U32 = struct.Struct("<I")

Shapes = Sequence[Sequence[int]]


# ---------------------------------------------------------------------------------------------
# state


@dataclass
class CodecState:
    """Per-client codec state: the round counter and the error-feedback residuals.

    `to_dict()` gives plain numpy arrays (keys "step", "residual.0", ...) so a Flower client can
    keep it in `context.state` (e.g. as an ArrayRecord) and rebuild it with `from_dict()`.
    """

    step: int = 0
    residuals: list[np.ndarray] | None = None

    def to_dict(self) -> dict[str, np.ndarray]:
        out = {"step": np.array([self.step], dtype=np.int64)}
        for i, r in enumerate(self.residuals or []):
            out[f"residual.{i}"] = r.copy()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, np.ndarray]) -> "CodecState":
        if "step" not in d:
            raise CodecError("codec state dict has no 'step' entry")
        step = int(np.asarray(d["step"]).reshape(-1)[0])
        n = sum(1 for k in d if k.startswith("residual."))
        missing = [i for i in range(n) if f"residual.{i}" not in d]
        if missing:
            raise CodecError(f"codec state dict lacks residual.{missing[0]} (has {n} residual keys)")
        res = [np.array(d[f"residual.{i}"], copy=True) for i in range(n)]
        return cls(step=step, residuals=res or None)

    def to_arrays(self) -> list[np.ndarray]:
        """Flat list form: [step, residual 0, residual 1, ...]."""
        return [np.array([self.step], dtype=np.int64)] + [r.copy() for r in self.residuals or []]

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> "CodecState":
        if not arrays:
            raise CodecError("codec state list is empty (needs at least the step counter)")
        res = [np.array(a, copy=True) for a in arrays[1:]]
        return cls(step=int(np.asarray(arrays[0]).reshape(-1)[0]), residuals=res or None)


# ---------------------------------------------------------------------------------------------
# configs


@dataclass(frozen=True)
class Fp32Config:
    """Raw float32: the baseline every ratio is measured against."""


@dataclass(frozen=True)
class Fp16Config:
    """Half precision with a power-of-two scale per array (see Fp16Codec)."""


@dataclass(frozen=True)
class QuantConfig:
    """Unbiased stochastic quantization to `bits` bits per element.

    bucket_size: values sharing one [min, max] grid; 0 = one grid per array. Smaller buckets
    mean smaller error and more overhead (8 bytes per bucket).
    """

    bits: int = 8
    bucket_size: int = 512
    error_feedback: bool = False
    seed: int = 0


@dataclass(frozen=True)
class TopKConfig:
    """Keep the `fraction` largest-magnitude entries of each array.

    value_bits: None sends kept values as float32; 1..8 quantizes them stochastically (the
    "topk:F+qB" composition), with `bucket_size` as in QuantConfig.
    """

    fraction: float = 0.01
    value_bits: int | None = None
    bucket_size: int = 512
    error_feedback: bool = True
    seed: int = 0


@dataclass(frozen=True)
class SignConfig:
    """One bit per element: sign(x) * mean|x| per array (scaled signSGD)."""

    error_feedback: bool = True


@dataclass(frozen=True)
class STCConfig:
    """Sparse ternary compression: top-k, then every kept value becomes +-mean|kept|."""

    fraction: float = 0.01
    error_feedback: bool = True


# ---------------------------------------------------------------------------------------------
# helpers


def _prepare(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate encoder inputs: float arrays, finite, shapes the wire format can carry."""
    if isinstance(arrays, np.ndarray):
        raise CodecInputError("encode() takes a list of arrays, not a single array (wrap it: [a])")
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype not in CODE_OF_DTYPE:
            raise CodecInputError(f"array {i} has dtype {a.dtype}; codecs take float16/32/64 arrays")
        if a.ndim > MAX_NDIM or any(d >= 2**32 for d in a.shape):
            raise CodecInputError(f"array {i} has shape {a.shape}, beyond what a payload can describe")
        if not np.isfinite(a).all():
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise CodecInputError(f"array {i} (shape {a.shape}) contains {bad} NaN/Inf values")
        out.append(a)
    return out


def _k_of(fraction: float, n: int) -> int:
    if n == 0:
        return 0
    return min(n, max(1, int(round(fraction * n))))


def _top_indices(v: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k largest |v| (argpartition: O(n), no full sort)."""
    n = v.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.zeros(0, np.int64)
    idx = np.argpartition(np.abs(v), n - k)[n - k:]
    idx.sort()
    return idx.astype(np.int64, copy=False)


def _scatter(n: int, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
    out = np.zeros(n, np.float64)
    out[idx] = vals
    return out


def _read_k(r: Reader, n: int, what: str) -> int:
    k = r.u32(f"{what} kept count")
    if k > n:
        raise PayloadError(f"{what}: kept count {k} exceeds array size {n}")
    return k


# Body coders: encode (flat float64 values, header params, rng) -> (bytes, decoded values);
# decode (reader, n, header, label) -> flat float array, cast to the array's dtype at the end. Keeping both next to each other keeps the
# encoder's idea of "what the server will see" identical to the decoder's.
_Decoder = Callable[[Reader, int, Header, str], np.ndarray]


def _dec_fp32(r: Reader, n: int, h: Header, what: str) -> np.ndarray:
    return r.floats(n, "<f4", f"{what} values")


def _dec_fp16(r: Reader, n: int, h: Header, what: str) -> np.ndarray:
    scale = r.f32(f"{what} fp16 scale")
    if not scale > 0:
        raise PayloadError(f"{what}: fp16 scale must be positive, got {scale}")
    # via float32: numpy converts f16<->f32 with SIMD, f16<->f64 element by element
    with np.errstate(over="ignore"):  # a hostile scale overflows; decode_payload rejects it
        return r.floats(n, "<f2", f"{what} values").astype(np.float32) * np.float32(scale)


def _dec_quant(r: Reader, n: int, h: Header, what: str) -> np.ndarray:
    return dequantize(read_quantized(r, n, h.bits, h.bucket, what), h.bits, h.bucket)


def _dec_topk(r: Reader, n: int, h: Header, what: str) -> np.ndarray:
    k = _read_k(r, n, what)
    idx = read_indices(r, k, n, what)
    if h.scheme == SchemeId.TOPK_QUANT:
        vals = dequantize(read_quantized(r, k, h.bits, h.bucket, what), h.bits, h.bucket)
    else:
        vals = r.floats(k, "<f4", f"{what} values")
    return _scatter(n, idx, vals)


def _dec_sign(r: Reader, n: int, h: Header, what: str) -> np.ndarray:
    scale = r.f32(f"{what} scale")
    if scale < 0:
        raise PayloadError(f"{what}: negative sign scale {scale}")
    pos = read_bools(r, n, f"{what} sign bits")
    return np.where(pos, scale, -scale)


def _dec_stc(r: Reader, n: int, h: Header, what: str) -> np.ndarray:
    k = _read_k(r, n, what)
    idx = read_indices(r, k, n, what)
    mu = r.f32(f"{what} magnitude")
    if mu < 0:
        raise PayloadError(f"{what}: negative ternary magnitude {mu}")
    pos = read_bools(r, k, f"{what} sign bits")
    return _scatter(n, idx, np.where(pos, mu, -mu))


_DECODERS: dict[SchemeId, _Decoder] = {
    SchemeId.FP32: _dec_fp32,
    SchemeId.FP16: _dec_fp16,
    SchemeId.QUANT: _dec_quant,
    SchemeId.TOPK: _dec_topk,
    SchemeId.TOPK_QUANT: _dec_topk,
    SchemeId.SIGN: _dec_sign,
    SchemeId.STC: _dec_stc,
}


def read_payload_header(payload: bytes, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Header:
    """Just the header: scheme, bits, bucket, and each array's dtype and shape."""
    return read_header(Reader(payload), max_elements)


def decode_payload(payload: bytes, expected_shapes: Shapes | None = None, *,
                   max_elements: int = DEFAULT_MAX_ELEMENTS) -> list[np.ndarray]:
    """Decode any codec's payload into arrays of the dtypes and shapes the client encoded.

    Raises PayloadError naming the problem if the payload is truncated, has a wrong magic,
    version or scheme, shapes other than `expected_shapes`, NaN/Inf, out-of-range indices,
    or bytes after the last body. `max_elements` bounds what a hostile header can make us allocate.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(payload).__name__}")
    r = Reader(payload)
    h = read_header(r, max_elements)
    if expected_shapes is not None:
        check_shapes(h, expected_shapes)
    if h.flags & FLAG_DEFLATE:  # a lossless stage wrapped the bodies (see deflate.py)
        from .deflate import inflate_bodies

        r = inflate_bodies(r, h)
    dec = _DECODERS[h.scheme]
    out = []
    for i, meta in enumerate(h.arrays):
        flat = dec(r, meta.size, h, f"array {i}")
        with np.errstate(over="ignore"):
            arr = flat.astype(meta.dtype)
        if not np.isfinite(arr).all():  # e.g. a huge fp16 scale, or float32 values into float16
            raise PayloadError(f"array {i}: decoded values overflow its dtype {meta.dtype}")
        out.append(arr.reshape(meta.shape))
    if r.remaining:
        raise PayloadError(f"{r.remaining} trailing bytes after the last array body")
    return out


# ---------------------------------------------------------------------------------------------
# codecs


class Codec(ABC):
    """Base of the update codecs: list of float arrays <-> one bytes payload.

    A codec instance holds a default state (`self.state`), so one instance per client just works;
    a server-side object encoding for many clients passes each client's `CodecState` explicitly.
    """

    scheme_id: SchemeId  # a class attribute, except for TopKCodec (depends on value_bits)
    config: Any  # the scheme's frozen dataclass config

    def __init__(self) -> None:
        self.state = CodecState()

    # -- what subclasses provide
    @property
    @abstractmethod
    def spec(self) -> str:
        """Canonical spec string; make_codec(codec.spec) builds an equivalent codec."""

    @property
    def error_feedback(self) -> bool:
        return bool(getattr(self.config, "error_feedback", False))

    @property
    def seed(self) -> int:
        return int(getattr(self.config, "seed", 0))

    def _header_params(self) -> tuple[int, int]:
        return 0, 0

    @abstractmethod
    def _encode_flat(self, v: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
        """Body bytes of one flattened float64 array and the values the decoder will produce."""

    # -- public API
    def new_state(self) -> CodecState:
        return CodecState()

    def reset(self) -> None:
        self.state = CodecState()

    def load_state(self, d: Mapping[str, np.ndarray]) -> None:
        self.state = CodecState.from_dict(d)

    def encode(self, arrays: Sequence[np.ndarray], state: CodecState | None = None) -> bytes:
        """Compress `arrays` (plus the residual, with error feedback) into one payload.

        Deterministic: the same seed, state and input give identical bytes. The state is only
        updated once the whole payload is built, so a failed encode leaves it untouched.
        """
        st = self.state if state is None else state
        xs = _prepare(arrays)
        if self.error_feedback and st.residuals is not None:
            if len(st.residuals) != len(xs) or any(r.shape != x.shape for r, x in zip(st.residuals, xs)):
                raise CodecInputError(
                    "error-feedback residual shapes "
                    f"{[r.shape for r in st.residuals]} do not match the arrays {[x.shape for x in xs]}; "
                    "reset the state when the model changes")
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, st.step])
        bits, bucket = self._header_params()
        chunks: list[bytes] = []
        write_header(chunks, self.scheme_id, bits, bucket, [ArrayMeta(x.dtype, x.shape) for x in xs])
        new_res = []
        for i, x in enumerate(xs):
            v = x.astype(np.float64).ravel()
            if self.error_feedback and st.residuals is not None:
                v += st.residuals[i].ravel()
                if not np.isfinite(v).all():
                    raise CodecInputError(f"error-feedback residual {i} holds NaN/Inf (corrupt saved state?)")
            body, decoded = self._encode_flat(v, rng)
            chunks.append(body)
            if self.error_feedback:
                rdt = np.result_type(x.dtype, np.float32)
                new_res.append((v - decoded.astype(x.dtype)).astype(rdt).reshape(x.shape))
        if self.error_feedback:
            st.residuals = new_res
        st.step += 1
        return b"".join(chunks)

    def decode(self, payload: bytes, expected_shapes: Shapes | None = None, *,
               max_elements: int = DEFAULT_MAX_ELEMENTS) -> list[np.ndarray]:
        """Decode a payload of this codec's scheme (see decode_payload for the checks)."""
        h = read_payload_header(payload, max_elements)
        if h.scheme != self.scheme_id:
            raise PayloadError(f"payload was encoded with scheme {h.scheme_name!r}, "
                               f"this codec is {SCHEME_NAMES[self.scheme_id]!r}")
        return decode_payload(payload, expected_shapes, max_elements=max_elements)

    def roundtrip(self, arrays: Sequence[np.ndarray], state: CodecState | None = None
                  ) -> tuple[bytes, list[np.ndarray]]:
        """Encode then decode: the payload and what the server will see (tests, benchmarks)."""
        payload = self.encode(arrays, state)
        return payload, decode_payload(payload)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class Fp32Codec(Codec):
    """float32 on the wire (the baseline)."""

    scheme_id = SchemeId.FP32

    def __init__(self, config: Fp32Config | None = None):
        super().__init__()
        self.config = config or Fp32Config()

    @property
    def spec(self) -> str:
        return "fp32"

    def _encode_flat(self, v, rng):
        f = v.astype("<f4")
        return f.tobytes(), f


class Fp16Codec(Codec):
    """float16 on the wire, scaled per array by a power of two (4 bytes per array).

    Model deltas are often ~1e-4 and smaller: unscaled, much of them would land in fp16's
    subnormal range (below 6e-5), where relative precision is lost and numpy's conversion runs
    ~15x slower. Dividing by a power of two is exact and puts max|x| in [0.5, 1), so the large
    entries always get fp16's full 11-bit precision, only entries below ~2**-14 * max|x| go
    subnormal (negligible next to the largest), and nothing overflows.
    """

    scheme_id = SchemeId.FP16

    def __init__(self, config: Fp16Config | None = None):
        super().__init__()
        self.config = config or Fp16Config()

    @property
    def spec(self) -> str:
        return "fp16"

    def _encode_flat(self, v, rng):
        amax = float(np.abs(v).max()) if v.size else 0.0
        exp = int(np.clip(np.frexp(amax)[1], -126, 127)) if amax > 0 else 0
        scale = np.float32(np.ldexp(1.0, exp))
        with np.errstate(over="ignore"):  # overflow is detected just below
            scaled = (v / float(scale)).astype(np.float32)
        if v.size and np.abs(scaled).max() > _FP16_MAX:  # only float64 input beyond ~1e43
            raise CodecInputError(f"value {amax:.6g} exceeds the range of scaled float16")
        f = scaled.astype("<f2")
        return struct.pack("<f", scale) + f.tobytes(), f.astype(np.float32) * scale


def _check_bits(bits: int, what: str) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise CodecSpecError(f"{what} must be an integer in 1..8, got {bits!r}")


def _check_bucket(bucket: int) -> None:
    if not isinstance(bucket, (int, np.integer)) or not 0 <= bucket < 2**32:
        raise CodecSpecError(f"bucket_size must be an integer >= 0 (0 = per array), got {bucket!r}")


def _check_fraction(f: float) -> None:
    if not isinstance(f, (int, float)) or not 0 < f <= 1 or math.isnan(f):
        raise CodecSpecError(f"top-k fraction must be in (0, 1], got {f!r}")


class QuantCodec(Codec):
    """Unbiased stochastic b-bit quantization with per-bucket grids (QSGD-style)."""

    scheme_id = SchemeId.QUANT

    def __init__(self, config: QuantConfig | None = None):
        super().__init__()
        self.config = config = config or QuantConfig()
        _check_bits(config.bits, "bits")
        _check_bucket(config.bucket_size)

    @property
    def spec(self) -> str:
        c = self.config
        return f"q{c.bits}:bucket={c.bucket_size},ef={int(c.error_feedback)}"

    def _header_params(self):
        return self.config.bits, self.config.bucket_size

    def _encode_flat(self, v, rng):
        c = self.config
        qz = quantize(v, c.bits, c.bucket_size, rng)
        return quantized_bytes(qz, c.bits), dequantize(qz, c.bits, c.bucket_size)


class TopKCodec(Codec):
    """Top-k sparsification (with error feedback by default), values fp32 or b-bit quantized."""

    def __init__(self, config: TopKConfig | None = None):
        super().__init__()
        self.config = config = config or TopKConfig()
        _check_fraction(config.fraction)
        if config.value_bits is not None:
            _check_bits(config.value_bits, "value_bits")
        _check_bucket(config.bucket_size)
        self.scheme_id = SchemeId.TOPK if config.value_bits is None else SchemeId.TOPK_QUANT

    @property
    def spec(self) -> str:
        c = self.config
        s = f"topk:{c.fraction!r},ef={int(c.error_feedback)}"
        if c.value_bits is not None:
            s += f"+q{c.value_bits}:bucket={c.bucket_size}"
        return s

    def _header_params(self):
        c = self.config
        return (0, 0) if c.value_bits is None else (c.value_bits, c.bucket_size)

    def _encode_flat(self, v, rng):
        c = self.config
        n = v.size
        k = _k_of(c.fraction, n)
        idx = _top_indices(v, k)
        head = _U32.pack(k) + encode_indices(idx, n)
        if c.value_bits is None:
            vals = v[idx].astype("<f4")
            return head + vals.tobytes(), _scatter(n, idx, vals)
        qz = quantize(v[idx], c.value_bits, c.bucket_size, rng)
        vals = dequantize(qz, c.value_bits, c.bucket_size)
        return head + quantized_bytes(qz, c.value_bits), _scatter(n, idx, vals)


class SignCodec(Codec):
    """Scaled sign: 1 bit per element plus one float32 scale per array."""

    scheme_id = SchemeId.SIGN

    def __init__(self, config: SignConfig | None = None):
        super().__init__()
        self.config = config or SignConfig()

    @property
    def spec(self) -> str:
        return f"sign:ef={int(self.config.error_feedback)}"

    def _encode_flat(self, v, rng):
        scale = np.float32(np.abs(v).mean()) if v.size else np.float32(0)
        pos = v >= 0
        return struct.pack("<f", scale) + pack_bools(pos), np.where(pos, float(scale), -float(scale))


class STCCodec(Codec):
    """Sparse ternary compression: top-k positions, one magnitude, one sign bit per kept entry."""

    scheme_id = SchemeId.STC

    def __init__(self, config: STCConfig | None = None):
        super().__init__()
        self.config = config = config or STCConfig()
        _check_fraction(config.fraction)

    @property
    def spec(self) -> str:
        return f"stc:{self.config.fraction!r},ef={int(self.config.error_feedback)}"

    def _encode_flat(self, v, rng):
        n = v.size
        k = _k_of(self.config.fraction, n)
        idx = _top_indices(v, k)
        kept = v[idx]
        mu = np.float32(np.abs(kept).mean()) if k else np.float32(0)
        pos = kept >= 0
        body = _U32.pack(k) + encode_indices(idx, n) + struct.pack("<f", mu) + pack_bools(pos)
        return body, _scatter(n, idx, np.where(pos, float(mu), -float(mu)))
