"""Byte accounting of the real serialized Flower messages, per direction and per round.

A Flower message travels as a tree of deflated objects (Message -> RecordDict -> records ->
Arrays/chunks); ``message_bytes`` sums ``len(obj.deflate())`` over that tree, which is exactly
what a SuperNode pushes to or pulls from the SuperLink (gRPC framing, a few bytes per object, is
not included). The codec payload alone is reported next to it so the codec's ratio and the
protocol overhead can be told apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def message_bytes(msg: Message) -> int:
    """Serialized size of a message (metadata, records, arrays) as it crosses the wire."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


@dataclass
class ByteCounter:
    """Running totals of one run; ``rounds`` keeps one entry per server round."""

    uplink: int = 0
    downlink: int = 0
    uplink_payload: int = 0
    downlink_payload: int = 0
    rounds: dict[int, dict[str, int]] = field(default_factory=dict)

    def _round(self, rnd: int) -> dict[str, int]:
        return self.rounds.setdefault(rnd, {"uplink": 0, "downlink": 0, "uplink_payload": 0,
                                            "downlink_payload": 0, "messages_up": 0, "messages_down": 0})

    def add_down(self, rnd: int, msg: Message, payload: int = 0) -> None:
        n = message_bytes(msg)
        self.downlink += n
        self.downlink_payload += payload
        r = self._round(rnd)
        r["downlink"] += n
        r["downlink_payload"] += payload
        r["messages_down"] += 1

    def add_up(self, rnd: int, msg: Message, payload: int = 0) -> None:
        n = message_bytes(msg)
        self.uplink += n
        self.uplink_payload += payload
        r = self._round(rnd)
        r["uplink"] += n
        r["uplink_payload"] += payload
        r["messages_up"] += 1
