"""An in-process Grid: the ServerApp's code path, with ClientApps called directly, no Ray, no gRPC.

Why: most federated tests (and the overhead measurement of benchmarks/federated.py) need the
real server loop, strategies, mods, codecs and byte accounting, but not Ray's start-up cost.
``InProcessGrid`` implements Flower's ``Grid`` by calling each node's ClientApp in turn with a
persistent per-node Context, turning exceptions into error replies exactly as Flower does, so
``server_app.run_federation`` runs unchanged on it. Real engines: federated.simulation (Ray) and
federated.deploy (SuperLink + SuperNodes).

Round timeouts: ``send_and_receive(..., timeout=t)`` runs each node's call on its own thread and
waits at most `t` seconds for it, as if every node had started at the round's start (they run one
after the other here, in parallel on a real grid). A node that misses it sends no reply this round;
its late reply is dropped, and the node (like a real SuperNode) works through its messages one at
a time, so it stays busy until it is done. Message ids are uuid4 strings as in Flower's in-memory
grid, so the replies' metadata (``reply_to_message_id``) has its real size in the byte counts, and
node ids are random 64-bit integers drawn per grid as Flower's SuperLink draws them (nothing may
depend on a node id being the same in two runs: see federated.sampling).
"""
from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from .scenario import Scenario

log = logging.getLogger("edgelearn.federated")
CLIENT_APP_ERROR = 2  # the code Flower uses for an exception raised inside a ClientApp


def _ensure_task_identity() -> None:
    """Flower's Message() reads the process's task identity; give this process one if it has none."""
    for attr, val in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        if getattr(TaskIdentity, attr) is None:
            setattr(TaskIdentity, attr, val)


def _random_node_ids(n: int) -> list[int]:
    """`n` distinct random uint64 ids, never 0 or Flower's SuperLink id 1 (node i holds partition i)."""
    ids: list[int] = []
    while len(ids) < n:
        nid = secrets.randbits(64)
        if nid > 1 and nid not in ids:
            ids.append(nid)
    return ids


class InProcessGrid(Grid):
    """`num_nodes` virtual SuperNodes, node i holding partition i, served by one ClientApp."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict[str, Any] | None = None):
        _ensure_task_identity()
        self.client_app = client_app
        self.node_ids = _random_node_ids(num_nodes)
        self.contexts = {nid: Context(run_id=1, node_id=nid,
                                      node_config={"partition-id": i, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config=dict(run_config or {}))
                         for i, nid in enumerate(self.node_ids)}
        self._busy = {nid: threading.Lock() for nid in self.node_ids}  # one message at a time per node
        self._replies: dict[str, Message] = {}
        self._run: Run | None = None

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run  # type: ignore[return-value]

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return set(self.node_ids)  # a set, as the SuperLink's state returns it: no order to rely on

    def _call(self, msg: Message) -> Message:
        nid = msg.metadata.dst_node_id
        with self._busy[nid]:
            try:
                return self.client_app(msg, self.contexts[nid])
            except Exception as e:  # noqa: BLE001 - a failing client is an error reply, as in Flower
                return Message(Error(code=CLIENT_APP_ERROR, reason=f"{type(e).__name__}: {e}"), reply_to=msg)

    def _deliver(self, msg: Message, timeout: float | None) -> Message | None:
        """The node's reply, or None when it takes longer than `timeout` seconds."""
        if timeout is None:
            return self._call(msg)
        box: list[Message] = []
        worker = threading.Thread(target=lambda: box.append(self._call(msg)), daemon=True,
                                  name=f"supernode-{msg.metadata.dst_node_id}")
        worker.start()
        worker.join(timeout)
        if not box:
            log.debug("node %d: no reply within %g s", msg.metadata.dst_node_id, timeout)
        return box[0] if box else None

    def _push(self, messages: Iterable[Message], timeout: float | None) -> list[str]:
        ids = []
        for msg in messages:
            mid = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = mid
            rep = self._deliver(msg, timeout)
            if rep is not None:
                self._replies[mid] = rep
            ids.append(mid)
        return ids

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._push(messages, None)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self._push(messages, timeout))


def run_inprocess(sc: Scenario) -> dict[str, Any]:
    """`server_app.run_federation` on an InProcessGrid (same results dict as a simulation)."""
    from .client_app import make_client_app
    from .server_app import run_federation

    return run_federation(InProcessGrid(make_client_app(sc), sc.num_clients), sc)
