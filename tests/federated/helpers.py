"""Build Flower messages and contexts outside a running federation, to call handlers directly."""
from __future__ import annotations

import time

from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.app.message.message import make_message

from federated.scenario import Scenario
from federated.wire import ARRAYS, CONFIG, to_record


def message(content: RecordDict, mtype: str = "train", src: int = 0, dst: int = 1) -> Message:
    md = Metadata(run_id=1, message_id="", src_node_id=src, dst_node_id=dst, reply_to_message_id="",
                  group_id="", created_at=time.time(), ttl=3600.0, message_type=mtype)
    return make_message(md, content)


def train_message(params, rnd: int = 1, dst: int = 1, mtype: str = "train", **config) -> Message:
    cfg = ConfigRecord({"server-round": rnd, **config})
    return message(RecordDict({ARRAYS: to_record(params), CONFIG: cfg}), mtype=mtype, dst=dst)


def reply(original: Message, content: RecordDict) -> Message:
    """A reply as a node would send it (src = the original's dst)."""
    return message(content, mtype=original.metadata.message_type, src=original.metadata.dst_node_id,
                   dst=original.metadata.src_node_id)


def context(partition_id: int, sc: Scenario | None = None, node_id: int | None = None) -> Context:
    return Context(run_id=1, node_id=node_id if node_id is not None else 100 + partition_id,
                   node_config={"partition-id": partition_id, "num-partitions": (sc or Scenario()).num_clients},
                   state=RecordDict(), run_config={})


def small_scenario(**kw) -> Scenario:
    """Digits, softmax-sized MLP, few clients: what the fast tests train."""
    base = dict(name="test", arch="mlp:32", num_clients=4, clients_per_round=4, num_rounds=3, epochs=2, scheme="iid",
                batch_size=32, lr=0.1, codec="topk:0.05+q8", backend="numpy", wait_timeout=30.0)
    base.update(kw)
    return Scenario(**base)
