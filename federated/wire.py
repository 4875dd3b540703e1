"""Compressed updates on Flower's wire: the client mod and the server's encode/decode helpers.

Flower has no update compression, so we add it as a ClientApp *mod* (``wire_mod``) that sits
outside the train handler and Flower's own mods:

    incoming: a compressed downlink ("wire" ConfigRecord) -> plain "arrays" ArrayRecord
    handler (and e.g. Flower's fixedclipping_mod) see and return plain ArrayRecords
    outgoing: reply arrays -> delta vs the received global -> codec payload (error feedback
              state in ``context.state``) -> one compact "w" ConfigRecord

so the train handler stays Flower-native and DP clipping composes with compression (it clips the
update before it is compressed). The server side is :class:`federated.strategy.CompressedStrategy`.
Which codec to use comes from the server in the train config (``uplink-codec``), so one ClientApp
serves every codec of a comparison.

Why the compact reply: Flower serializes every record as its own object, and a parent names each
child by a 64-hex SHA-256 id twice (in its header and in its body), so a record costs ~160 B
before its content. A compressed update of a small model is ~300 B, so the reply holds *one*
ConfigRecord: the self-describing codec payload (its header names the scheme and the shapes, so
no separate codec field) plus the metrics the server reads, under one-letter keys
(``REPLY_METRICS``). The handler's other metrics (e.g. train-loss) are not sent: nothing on the
server reads them. The server turns the record back into Flower's ArrayRecord + MetricRecord
(:func:`reply_metrics`) before its strategy sees it.
"""
from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from compress import CodecState, decode_payload, make_codec

from .errors import UpdateRejected

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
WIRE = "w"      # RecordDict key of a compressed model or update (both directions)
PAYLOAD = "p"   # its codec payload (bytes)
# Metrics a compressed train reply carries: wire key -> the handler's (Flower) metric name.
# num-examples weights FedAvg & co; train-time-s feeds the server's round log.
REPLY_METRICS = {"n": "num-examples", "t": "train-time-s"}
UPLINK_CODEC = "uplink-codec"
STATE_KEY = "edgelearn.codec-state"
STATE_SPEC_KEY = "edgelearn.codec-spec"


def to_record(arrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord([np.ascontiguousarray(a) for a in arrays])


def from_record(record: ArrayRecord) -> list[np.ndarray]:
    return record.to_numpy_ndarrays()


def wire_record(payload: bytes, metrics: MetricRecord | dict | None = None) -> ConfigRecord:
    """The one record of a compressed message: the payload and the metrics the server reads."""
    rec: dict = {PAYLOAD: payload}
    for short, name in REPLY_METRICS.items():
        if metrics is not None and name in metrics:
            rec[short] = metrics[name]
    return ConfigRecord(rec)


def reply_metrics(record: ConfigRecord, node_id: int | None = None) -> MetricRecord:
    """Flower's MetricRecord of a compact reply (num-examples 1 when the client sent none).

    Raises UpdateRejected for values a strategy must not weight by (non-numbers, n < 1, t < 0).
    """
    out: dict[str, int | float] = {}
    for short, name in REPLY_METRICS.items():
        if short not in record:
            continue
        v = record[short]
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1 if short == "n" else \
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
        if not ok:
            raise UpdateRejected(f"metric {name!r} (wire key {short!r}) is {v!r}", node_id)
        out[name] = v
    out.setdefault("num-examples", 1)
    return MetricRecord(out)


def encode_full(arrays: list[np.ndarray], spec: str) -> bytes:
    """Stateless encoding of a whole model (the downlink): no error feedback across clients."""
    return make_codec(spec, seed=0).encode([np.asarray(a, np.float32) for a in arrays])


def client_seed(context: Context) -> int:
    """Per-client codec seed: the partition id when the node has one, else the node id."""
    pid = context.node_config.get("partition-id")
    return int(pid) if pid is not None else int(context.node_id) & 0x7FFFFFFF


def load_codec_state(context: Context, spec: str) -> CodecState:
    """Error-feedback state of this client for `spec` (fresh when the codec changed)."""
    st = context.state
    if STATE_KEY in st.array_records and STATE_SPEC_KEY in st.config_records \
            and st.config_records[STATE_SPEC_KEY].get("spec") == spec:
        rec = st.array_records[STATE_KEY]
        return CodecState.from_dict({k: v.numpy() for k, v in rec.items()})
    return CodecState()


def save_codec_state(context: Context, spec: str, state: CodecState) -> None:
    from flwr.app import Array
    context.state.array_records[STATE_KEY] = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in state.to_dict().items()})
    context.state.config_records[STATE_SPEC_KEY] = ConfigRecord({"spec": spec})


def _decompress_incoming(msg: Message) -> None:
    content = msg.content
    if WIRE not in content.config_records:
        return
    wire = content.config_records[WIRE]
    arrays = decode_payload(bytes(wire[PAYLOAD]))
    rest = {k: v for k, v in content.items() if k != WIRE}
    rest[ARRAYS] = to_record(arrays)
    msg.content = RecordDict(rest)


def wire_mod(msg: Message, context: Context, call_next) -> Message:
    """ClientApp mod: decompress the downlink, compress the train reply's update (see module doc)."""
    _decompress_incoming(msg)
    content = msg.content
    if msg.metadata.message_type != MessageType.TRAIN or ARRAYS not in content.array_records:
        return call_next(msg, context)
    spec = str(content[CONFIG].get(UPLINK_CODEC, "none")) if CONFIG in content.config_records else "none"
    global_arrays = from_record(content.array_records[ARRAYS])
    reply = call_next(msg, context)
    if reply.has_error() or spec == "none" or ARRAYS not in reply.content.array_records:
        return reply
    params = from_record(reply.content.array_records[ARRAYS])
    delta = [np.asarray(p, np.float32) - np.asarray(g, np.float32) for p, g in zip(params, global_arrays)]
    codec = make_codec(spec, seed=client_seed(context))
    state = load_codec_state(context, spec)
    payload = codec.encode(delta, state)
    save_codec_state(context, spec, state)
    reply.content = RecordDict({WIRE: wire_record(payload, reply.content.metric_records.get(METRICS))})
    return reply
