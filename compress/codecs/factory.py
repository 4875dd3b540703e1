"""Build a codec from a spec string, the form configs and command lines use.

Grammar: ``stage[+stage]``, ``stage = name[:arg,...]``, ``arg = value | key=value``.

    fp32                    float32 baseline
    fp16                    half precision
    q8, q4, q2 (q1..q8)     stochastic quantization; options bucket=N (0 = per array), ef=0|1
    topk:0.01               top-1% with error feedback; option ef=0|1
    topk:0.01+q8            top-1%, kept values quantized to 8 bits; q-stage takes bucket=N
    sign                    scaled sign; option ef=0|1
    stc:0.01                sparse ternary; option ef=0|1
    <any of these>+deflate  then a lossless raw-deflate of the bodies (deflate.py), e.g. q8+deflate
"""
from __future__ import annotations

import re

from .errors import CodecSpecError
from .schemes import (
    Codec, Fp16Codec, Fp16Config, Fp32Codec, Fp32Config, QuantCodec, QuantConfig, SignCodec,
    SignConfig, STCCodec, STCConfig, TopKCodec, TopKConfig,
)

_FORMS = "fp32, fp16, q<bits>[:bucket=N,ef=0|1], topk:<fraction>[,ef=0|1][+q<bits>[:bucket=N]], " \
         "sign[:ef=0|1], stc:<fraction>[,ef=0|1], any of them +deflate"
_QNAME = re.compile(r"^q([1-8])$")


def _parse_stage(stage: str, spec: str) -> tuple[str, list[str], dict[str, str]]:
    name, _, rest = stage.strip().partition(":")
    pos: list[str] = []
    opts: dict[str, str] = {}
    for arg in (a.strip() for a in rest.split(",") if a.strip()):
        if "=" in arg:
            key, _, val = arg.partition("=")
            opts[key.strip()] = val.strip()
        else:
            pos.append(arg)
    if not name:
        raise CodecSpecError(f"empty stage in codec spec {spec!r}; valid forms: {_FORMS}")
    return name.strip().lower(), pos, opts


def _int(val: str, what: str, spec: str) -> int:
    try:
        return int(val)
    except ValueError:
        raise CodecSpecError(f"{what}={val!r} in codec spec {spec!r} is not an integer") from None


def _flag(opts: dict[str, str], spec: str, default: bool) -> bool:
    if "ef" not in opts:
        return default
    val = opts.pop("ef")
    if val not in ("0", "1"):
        raise CodecSpecError(f"ef={val!r} in codec spec {spec!r} must be 0 or 1")
    return val == "1"


def _fraction(pos: list[str], spec: str) -> float:
    if len(pos) != 1:
        raise CodecSpecError(f"codec spec {spec!r} needs exactly one fraction, e.g. topk:0.01")
    try:
        return float(pos[0])
    except ValueError:
        raise CodecSpecError(f"fraction {pos[0]!r} in codec spec {spec!r} is not a number") from None


def _done(name: str, pos: list[str], opts: dict[str, str], spec: str) -> None:
    if pos or opts:
        extra = pos + [f"{k}={v}" for k, v in opts.items()]
        raise CodecSpecError(f"unexpected argument(s) {extra} for {name!r} in codec spec {spec!r}")


def make_codec(spec: str, *, seed: int = 0) -> Codec:
    """A fresh codec (with empty state) for `spec`, e.g. "topk:0.01+q8", "q4", "sign".

    `seed` drives the stochastic rounding; give each client its own seed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CodecSpecError(f"codec spec must be a non-empty string; valid forms: {_FORMS}")
    stages = spec.split("+")
    if len(stages) > 1 and stages[-1].strip().lower() == "deflate":
        from .deflate import DeflateCodec

        return DeflateCodec(make_codec("+".join(stages[:-1]), seed=seed))
    if len(stages) > 2:
        raise CodecSpecError(f"codec spec {spec!r} has {len(stages)} stages; at most topk+q<bits>")
    name, pos, opts = _parse_stage(stages[0], spec)
    if len(stages) == 2 and name != "topk":
        raise CodecSpecError(f"only topk can be followed by a quantization stage, not {name!r} ({spec!r})")

    if name in ("fp32", "fp16"):
        _done(name, pos, opts, spec)
        return Fp32Codec(Fp32Config()) if name == "fp32" else Fp16Codec(Fp16Config())
    m = _QNAME.match(name)
    if m:
        ef = _flag(opts, spec, False)
        bucket = _int(opts.pop("bucket"), "bucket", spec) if "bucket" in opts else 512
        _done(name, pos, opts, spec)
        return QuantCodec(QuantConfig(bits=int(m.group(1)), bucket_size=bucket, error_feedback=ef, seed=seed))
    if name == "topk":
        ef = _flag(opts, spec, True)
        frac = _fraction(pos, spec)
        _done(name, [], opts, spec)
        bits, bucket = None, 512
        if len(stages) == 2:
            qname, qpos, qopts = _parse_stage(stages[1], spec)
            qm = _QNAME.match(qname)
            if not qm:
                raise CodecSpecError(f"stage {stages[1]!r} after topk must be q1..q8 ({spec!r})")
            bits = int(qm.group(1))
            bucket = _int(qopts.pop("bucket"), "bucket", spec) if "bucket" in qopts else 512
            _done(qname, qpos, qopts, spec)
        return TopKCodec(TopKConfig(fraction=frac, value_bits=bits, bucket_size=bucket,
                                    error_feedback=ef, seed=seed))
    if name == "sign":
        ef = _flag(opts, spec, True)
        _done(name, pos, opts, spec)
        return SignCodec(SignConfig(error_feedback=ef))
    if name == "stc":
        ef = _flag(opts, spec, True)
        frac = _fraction(pos, spec)
        _done(name, [], opts, spec)
        return STCCodec(STCConfig(fraction=frac, error_feedback=ef))
    raise CodecSpecError(f"unknown codec {name!r} in spec {spec!r}; valid forms: {_FORMS}")
