"""Byte accounting of the real serialized Flower messages, per direction and per round.

A Flower message travels as a tree of deflated objects (Message -> RecordDict -> records ->
Arrays/chunks); ``message_bytes`` sums ``len(obj.deflate())`` over that tree, which is exactly
what a SuperNode pushes to or pulls from the SuperLink (gRPC framing, a few bytes per object, is
not included). Each deflated object is ``"<Type> <child ids> <body length>\\0<body>"``: the header
names every child by its 64-hex SHA-256, and a RecordDict's body maps record names to those ids
again, so each record costs ~160 B before its content. ``message_parts`` lists that anatomy.
The codec payload alone is reported next to the totals so the codec's ratio and the protocol
overhead can be told apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import Message
from flwr.supercore.constant import HEAD_BODY_DIVIDER
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def message_bytes(msg: Message) -> int:
    """Serialized size of a message (metadata, records, arrays) as it crosses the wire."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


def message_parts(msg: Message) -> list[dict[str, object]]:
    """Per serialized object: what it is, its header bytes (type, child ids, length) and body bytes.

    The Message object's body is Flower's metadata (ids, round, type, timestamps, TTL); a
    RecordDict's body maps record names to child ids; a record's body is its content. Records
    are named by their key in the message. Sums to ``message_bytes(msg)``.
    """
    names = {id(rec): key for key, rec in msg.content.items()} if msg.has_content() else {}
    parts = []
    for obj in get_all_nested_objects(msg).values():
        blob = obj.deflate()
        head = blob.index(HEAD_BODY_DIVIDER) + len(HEAD_BODY_DIVIDER)
        label = type(obj).__name__ + (f" {names[id(obj)]!r}" if id(obj) in names else "")
        parts.append({"object": label, "header": head, "body": len(blob) - head})
    return parts


@dataclass
class ByteCounter:
    """Running totals of one run; ``rounds`` keeps one entry per server round."""

    uplink: int = 0
    downlink: int = 0
    uplink_payload: int = 0
    downlink_payload: int = 0
    rounds: dict[int, dict[str, int]] = field(default_factory=dict)
    first_uplink: dict[str, object] = field(default_factory=dict)  # anatomy of the first train reply

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
        if not self.first_uplink:
            self.first_uplink = {"parts": message_parts(msg), "payload": payload, "total": n}
        self.uplink += n
        self.uplink_payload += payload
        r = self._round(rnd)
        r["uplink"] += n
        r["uplink_payload"] += payload
        r["messages_up"] += 1
