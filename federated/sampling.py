"""Reproducible client sampling: the same seed picks the same partitions every run.

Flower's strategies sample with ``random.sample`` over ``grid.get_node_ids()``, and node ids are
random per run (the simulation engine draws them when it registers the virtual SuperNodes), so
seeding ``random`` is not enough: the same draw lands on other partitions. We therefore

1. ask every node once which partition it holds (a tiny ``query`` message, answered by the
   ClientApp from its node config: :func:`discover_partitions`);
2. let the Flower strategy decide *how many* nodes a round uses (its fraction/minimum rules stay
   Flower's), then re-address those messages to nodes drawn by our RNG seeded with
   (seed, round, train|evaluate) over the nodes sorted by partition (:class:`NodeSampler`);
3. hand replies to the aggregation in partition order, so float sums are done in the same order.

Nodes that did not say (no partition id, no reply) sort after the others by node id.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

log = logging.getLogger("edgelearn.federated")

NODE = "node"  # ConfigRecord of a query reply
PARTITION_ID = "partition-id"
_KIND = {MessageType.TRAIN: 0, MessageType.EVALUATE: 1}


def partition_reply(msg: Message, partition_id: int) -> Message:
    """The ClientApp's answer to the discovery query."""
    return Message(RecordDict({NODE: ConfigRecord({PARTITION_ID: int(partition_id)})}), reply_to=msg)


def discover_partitions(grid: Grid, timeout: float, attempts: int = 3) -> dict[int, int]:
    """node id -> partition id of every connected node that answers within `timeout` s. A node whose
    reply is missing or an error is asked again (up to `attempts` times in all, within the same
    `timeout`): on a loaded machine a ClientApp still starting had failed the one query, and the
    run then sampled every node by its random id, so the same seed no longer picked the same
    partitions."""
    nodes = sorted(grid.get_node_ids())
    deadline = time.monotonic() + timeout
    out: dict[int, int] = {}
    why: dict[int, str] = {}
    pending = nodes
    for _ in range(attempts):
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            break
        queries = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in pending]
        for rep in grid.send_and_receive(queries, timeout=left):
            src = rep.metadata.src_node_id
            if rep.has_error():
                why[src] = f"error {rep.error.code}: {rep.error.reason}"
                continue
            rec = rep.content.config_records.get(NODE)
            if rec is not None and PARTITION_ID in rec:
                out[src] = int(rec[PARTITION_ID])
            else:
                why[src] = "no partition id in its node config"
        pending = [n for n in pending if n not in out]
    if pending:
        reasons = "; ".join(f"node {n}: {why.get(n, 'no reply')}" for n in pending[:3])
        log.warning("%d of %d nodes did not report a partition id; they are sampled after the others, "
                    "by node id (%s)", len(pending), len(nodes), reasons)
    return out


class NodeSampler:
    """Seeded, partition-ordered choice of the nodes of each round (see the module doc)."""

    def __init__(self, seed: int, partitions: dict[int, int] | None = None):
        self.seed = seed
        self.partitions = dict(partitions or {})

    def sort_key(self, node_id: int) -> tuple[int, int, int]:
        pid = self.partitions.get(node_id)
        return (0, pid, node_id) if pid is not None else (1, 0, node_id)

    def order(self, node_ids: Iterable[int]) -> list[int]:
        return sorted(node_ids, key=self.sort_key)

    def readdress(self, server_round: int, messages: list[Message], grid: Grid) -> list[Message]:
        """Send Flower's k messages of a round to k nodes drawn by our seeded RNG instead.

        Only when the messages share one content (Flower's strategies build them so); a strategy
        that tailors content per node keeps its own choice.
        """
        if not messages or len({id(m.content) for m in messages}) != 1:
            return messages
        nodes = self.order(grid.get_node_ids())
        kind = _KIND.get(messages[0].metadata.message_type, 2)
        rng = np.random.default_rng([self.seed, server_round, kind])
        picks = sorted(rng.choice(len(nodes), size=min(len(messages), len(nodes)), replace=False))
        for msg, i in zip(messages, picks):
            msg.metadata.dst_node_id = nodes[i]
        return messages[:len(picks)]

    def sort_replies(self, replies: Iterable[Message]) -> list[Message]:
        return sorted(replies, key=lambda m: self.sort_key(m.metadata.src_node_id))
