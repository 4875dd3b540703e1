"""Malformed and malicious updates: rejected and logged, global model unchanged; Krum/median converge."""
from __future__ import annotations

import logging
import struct

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from compress import make_codec
from federated.inprocess import InProcessGrid, run_inprocess
from federated.strategy import CompressedStrategy
from federated.wire import ARRAYS, METRICS, PAYLOAD, WIRE, to_record, wire_record

from .helpers import reply, small_scenario, train_message

G = [np.zeros((3, 4), np.float32), np.zeros(3, np.float32)]
N = {"num-examples": 10}  # the metrics a compact reply carries


def _strategy(max_norm: float = 10.0) -> CompressedStrategy:
    s = CompressedStrategy(FedAvg(min_available_nodes=1, min_train_nodes=1), "fp32", max_update_norm=max_norm)
    s._global = [g.copy() for g in G]  # what configure_train records
    return s


def _reply(content_wire=None, arrays=None, node=1):
    req = train_message(G, dst=node)
    content = {METRICS: MetricRecord({"num-examples": 10})}
    if content_wire is not None:
        content[WIRE] = content_wire
    if arrays is not None:
        content[ARRAYS] = arrays
    return reply(req, RecordDict(content))


def _payload(delta):
    return make_codec("fp32").encode(delta)


def _nan_payload():
    p = bytearray(_payload([np.ones((3, 4), np.float32), np.ones(3, np.float32)]))
    p[-4:] = struct.pack("<f", float("nan"))
    return bytes(p)


GOOD = [np.full((3, 4), 0.5, np.float32), np.full(3, 0.5, np.float32)]
BAD = {
    "truncated": lambda: _reply(wire_record(_payload(GOOD)[:-5], N)),
    "wrong shapes": lambda: _reply(wire_record(_payload([np.ones((4, 3), np.float32), np.ones(3, np.float32)]), N)),
    "nan": lambda: _reply(wire_record(_nan_payload(), N)),
    "huge norm": lambda: _reply(wire_record(_payload([np.full((3, 4), 1e4, np.float32), np.ones(3, np.float32)]), N)),
    "not bytes": lambda: _reply(ConfigRecord({PAYLOAD: "text"})),
    "text example count": lambda: _reply(wire_record(_payload(GOOD), {"num-examples": "many"})),
    "negative example count": lambda: _reply(wire_record(_payload(GOOD), {"num-examples": -3})),
    "nan train time": lambda: _reply(wire_record(_payload(GOOD), {"num-examples": 3, "train-time-s": float("nan")})),
    "empty": lambda: _reply(),
    "raw arrays with inf": lambda: _reply(arrays=to_record([np.full((3, 4), np.inf, np.float32), np.ones(3, np.float32)])),
    "raw arrays wrong shape": lambda: _reply(arrays=to_record([np.ones((2, 2), np.float32)])),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_malformed_update_is_rejected_and_global_unchanged(kind, caplog):
    s = _strategy()
    with caplog.at_level(logging.WARNING, logger="edgelearn.federated"):
        arrays, metrics = s.aggregate_train(1, [BAD[kind]()])
    assert arrays is None and metrics is None  # Strategy.start keeps the previous global model
    assert s.rounds[1].rejected == 1 and s.rounds[1].accepted == 0
    assert "rejected update" in caplog.text


def test_bad_updates_do_not_leak_into_the_average():
    s = _strategy()
    replies = [_reply(wire_record(_payload(GOOD), N), node=i) for i in (1, 2)]
    replies += [BAD[k]() for k in sorted(BAD)]
    arrays, _ = s.aggregate_train(1, replies)
    out = arrays.to_numpy_ndarrays()
    assert np.allclose(out[0], 0.5) and np.allclose(out[1], 0.5)
    assert s.rounds[1].accepted == 2 and s.rounds[1].rejected == len(BAD)
    assert s.counter.rounds[1]["messages_up"] == 2 + len(BAD)


@pytest.mark.parametrize("strategy", ["krum", "fedmedian"])
def test_byzantine_clients_robust_strategies_converge(strategy):
    # IID data: Krum's premise is that honest updates cluster (with label skew they do not)
    sc = small_scenario(num_clients=10, clients_per_round=10, num_rounds=6, byzantine_clients=3,
                        byzantine_scale=30.0, codec="fp32", strategy=strategy, scheme="iid",
                        epochs=2, lr=0.1)
    robust = run_inprocess(sc)["runs"][0]
    naive = run_inprocess(sc.replace(strategy="fedavg"))["runs"][0]
    assert robust["final_accuracy"] >= 0.8
    assert robust["final_accuracy"] > naive["final_accuracy"] + 0.2


def test_round_continues_when_clients_drop_out():
    sc = small_scenario(num_clients=6, clients_per_round=6, num_rounds=4, dropout_rate=0.3)
    run = run_inprocess(sc)["runs"][0]
    hist = run["history"][1:]
    assert sum(h["failed"] for h in hist) > 0
    assert all(h["accepted"] + h["failed"] == 6 for h in hist)
    assert run["final_accuracy"] > 0.7
