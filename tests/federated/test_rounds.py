"""Rounds that survive slow clients, and client sampling that a seed reproduces."""
from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from federated.client_app import make_client_app
from federated.inprocess import InProcessGrid, run_inprocess
from federated.sampling import NodeSampler, discover_partitions
from federated.simulation import quiet_flower

from .helpers import small_scenario

quiet_flower()


def test_round_completes_without_the_client_that_times_out(caplog):
    # partition 3 of 4 holds its reply back 3 s; the server waits 1 s per round
    sc = small_scenario(num_clients=4, clients_per_round=4, num_rounds=2, codec="fp32",
                        stragglers=1, straggler_delay=3.0, round_timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="edgelearn.federated"):
        run = run_inprocess(sc)["runs"][0]
    hist = run["history"]
    assert [(h["accepted"], h["timed_out"], h["failed"]) for h in hist[1:]] == [(3, 1, 0), (3, 1, 0)]
    assert hist[1]["accuracy"] > hist[0]["accuracy"] + 0.2  # the global model moved on the 3 replies
    assert caplog.text.count("1 of 4 sampled nodes sent no reply within the round timeout of 1 s") == 2


def test_same_seed_samples_the_same_partitions_whatever_the_node_ids():
    # every InProcessGrid draws fresh random node ids, as Flower's SuperLink does
    sc = small_scenario(num_clients=8, clients_per_round=3, num_rounds=3, codec="topk:0.05+q8", scheme="dirichlet",
                        alpha=0.5, min_size=5)
    a, b = (run_inprocess(sc)["runs"][0]["history"] for _ in range(2))
    keys = ("accuracy", "loss", "uplink_payload_bytes", "accepted")
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in b]
    other = run_inprocess(sc.replace(seed=1))["runs"][0]["history"]
    assert [h["uplink_payload_bytes"] for h in other] != [h["uplink_payload_bytes"] for h in a] or \
        [h["accuracy"] for h in other] != [h["accuracy"] for h in a]


def _round_messages(k: int, mtype: str = MessageType.TRAIN) -> list[Message]:
    content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    return [Message(content, dst_node_id=0, message_type=mtype) for _ in range(k)]


def test_sampler_picks_partitions_not_node_ids():
    grids = [InProcessGrid(client_app=None, num_nodes=10) for _ in range(2)]  # no client is called
    picked = []
    for grid in grids:
        partitions = {nid: i for i, nid in enumerate(grid.node_ids)}
        sampler = NodeSampler(seed=7, partitions=partitions)
        rounds = [[partitions[m.metadata.dst_node_id] for m in sampler.readdress(r, _round_messages(4), grid)]
                  for r in (1, 2, 3)]
        picked.append(rounds)
        assert all(len(set(r)) == 4 for r in rounds)
    assert grids[0].node_ids != grids[1].node_ids and picked[0] == picked[1]
    assert len({tuple(r) for r in picked[0]}) > 1  # a fresh draw every round
    grid = grids[0]
    other = NodeSampler(seed=8, partitions={nid: i for i, nid in enumerate(grid.node_ids)})
    assert [[m.metadata.dst_node_id for m in other.readdress(r, _round_messages(4), grid)] for r in (1, 2, 3)] != \
        [[grid.node_ids[p] for p in r] for r in picked[0]]


def test_sampler_orders_replies_by_partition_and_leaves_tailored_messages_alone():
    grid = InProcessGrid(client_app=None, num_nodes=5)
    partitions = {nid: 4 - i for i, nid in enumerate(grid.node_ids)}  # reversed on purpose
    sampler = NodeSampler(0, partitions)
    replies = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.TRAIN) for n in grid.node_ids]
    for r, n in zip(replies, grid.node_ids):
        r.metadata.__dict__["_src_node_id"] = n
    assert [partitions[r.metadata.src_node_id] for r in sampler.sort_replies(replies)] == [0, 1, 2, 3, 4]
    tailored = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.TRAIN) for n in grid.node_ids[:2]]
    assert [m.metadata.dst_node_id for m in sampler.readdress(1, tailored, grid)] == grid.node_ids[:2]


def test_discovery_maps_nodes_to_partitions_and_tolerates_a_node_without_one(caplog):
    sc = small_scenario(num_clients=4)
    grid = InProcessGrid(make_client_app(sc), sc.num_clients)
    del grid.contexts[grid.node_ids[2]].node_config["partition-id"]  # its query handler raises ScenarioError
    with caplog.at_level(logging.WARNING, logger="edgelearn.federated"):
        found = discover_partitions(grid, timeout=10.0)
    assert found == {grid.node_ids[i]: i for i in (0, 1, 3)}
    assert "1 of 4 nodes did not report a partition id" in caplog.text
    assert "no 'partition-id' in its node config" in caplog.text  # the node's own error, asked three times
    assert NodeSampler(0, found).order(grid.get_node_ids())[-1] == grid.node_ids[2]


def test_discovery_asks_again_a_node_that_failed_once():
    """A ClientApp still starting fails its first query on a loaded machine: asked again, it answers."""
    sc = small_scenario(num_clients=4)
    grid = InProcessGrid(make_client_app(sc), sc.num_clients)
    late = grid.node_ids[1]
    saved = grid.contexts[late].node_config.pop("partition-id")
    send, asked = grid.send_and_receive, []

    def send_then_recover(messages, timeout=None):
        asked.append(sorted(m.metadata.dst_node_id for m in messages))
        replies = send(messages, timeout=timeout)
        grid.contexts[late].node_config["partition-id"] = saved  # ready from now on
        return replies

    grid.send_and_receive = send_then_recover
    assert discover_partitions(grid, timeout=10.0) == {nid: i for i, nid in enumerate(grid.node_ids)}
    assert asked == [sorted(grid.node_ids), [late]]  # only the one that failed is asked again
