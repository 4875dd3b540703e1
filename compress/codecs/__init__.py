"""Update codecs: what federated clients send on the wire (compact, seeded, strictly decoded).

    codec = make_codec("topk:0.01+q8", seed=client_id)
    payload = codec.encode(delta_arrays)          # bytes; residual kept in codec.state
    arrays = decode_payload(payload, expected_shapes=[a.shape for a in delta_arrays])
"""
from .errors import CodecError, CodecInputError, CodecSpecError, PayloadError
from .deflate import DeflateCodec
from .factory import make_codec
from .schemes import (
    Codec, CodecState, Fp16Codec, Fp16Config, Fp32Codec, Fp32Config, QuantCodec, QuantConfig,
    SignCodec, SignConfig, STCCodec, STCConfig, TopKCodec, TopKConfig, decode_payload,
    read_payload_header,
)
from .wire import FORMAT_VERSION, MAGIC, Header, SchemeId

__all__ = [
    "Codec", "CodecError", "DeflateCodec", "CodecInputError", "CodecSpecError", "CodecState", "FORMAT_VERSION",
    "Fp16Codec", "Fp16Config", "Fp32Codec", "Fp32Config", "Header", "MAGIC", "PayloadError",
    "QuantCodec", "QuantConfig", "STCCodec", "STCConfig", "SchemeId", "SignCodec", "SignConfig",
    "TopKCodec", "TopKConfig", "decode_payload", "make_codec", "read_payload_header",
]
