"""An in-process Grid: the ServerApp's code path, with ClientApps called directly, no Ray, no gRPC.

Why: most federated tests (and the overhead measurement of benchmarks/federated.py) need the
real server loop, strategies, mods, codecs and byte accounting, but not Ray's start-up cost.
``InProcessGrid`` implements Flower's ``Grid`` by calling each node's ClientApp in turn with a
persistent per-node Context, turning exceptions into error replies exactly as Flower does, so
``server_app.run_federation`` runs unchanged on it. Real engines: federated.simulation (Ray) and
federated.deploy (SuperLink + SuperNodes).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from .scenario import Scenario

CLIENT_APP_ERROR = 2  # the code Flower uses for an exception raised inside a ClientApp


def _ensure_task_identity() -> None:
    """Flower's Message() reads the process's task identity; give this process one if it has none."""
    for attr, val in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        if getattr(TaskIdentity, attr) is None:
            setattr(TaskIdentity, attr, val)


class InProcessGrid(Grid):
    """`num_nodes` virtual SuperNodes, node i holding partition i, served by one ClientApp."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict[str, Any] | None = None):
        _ensure_task_identity()
        self.client_app = client_app
        self.node_ids = [1000 + i for i in range(num_nodes)]
        self.contexts = {nid: Context(run_id=1, node_id=nid,
                                      node_config={"partition-id": i, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config=dict(run_config or {}))
                         for i, nid in enumerate(self.node_ids)}
        self._ids = itertools.count(1)
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
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid
            try:
                rep = self.client_app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as e:  # noqa: BLE001 - a failing client is an error reply, as in Flower
                rep = Message(Error(code=CLIENT_APP_ERROR, reason=f"{type(e).__name__}: {e}"), reply_to=msg)
            self._replies[mid] = rep
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inprocess(sc: Scenario) -> dict[str, Any]:
    """`server_app.run_federation` on an InProcessGrid (same results dict as a simulation)."""
    from .client_app import make_client_app
    from .server_app import run_federation

    return run_federation(InProcessGrid(make_client_app(sc), sc.num_clients), sc)
