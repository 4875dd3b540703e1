"""The real thing: Flower's simulation engine (Ray), a small scenario end to end."""
from __future__ import annotations

import pytest

pytest.importorskip("ray")

from federated.simulation import simulate  # noqa: E402

from .helpers import small_scenario  # noqa: E402


@pytest.mark.slow  # Ray start-up: ~25-45 s on 2 shared cores
def test_simulation_engine_trains_counts_bytes_and_survives_dropouts():
    sc = small_scenario(num_clients=4, clients_per_round=4, num_rounds=3, dropout_rate=0.25,
                        compare=["fp32", "topk:0.05+q8"], wait_timeout=60.0)
    res = simulate(sc)
    assert res["connected_nodes"] == 4
    fp32, topk = res["runs"]
    for run in (fp32, topk):
        hist = run["history"]
        assert [h["round"] for h in hist] == [0, 1, 2, 3]
        assert hist[-1]["accuracy"] > hist[0]["accuracy"] + 0.3
        assert all(h["accepted"] + h["failed"] == 4 for h in hist[1:])  # every node sampled each round
    assert sum(h["failed"] for h in fp32["history"]) > 0  # dropouts happened, rounds went on
    assert topk["uplink_payload_bytes"] * 5 < fp32["uplink_payload_bytes"]
    assert fp32["uplink_bytes"] > fp32["uplink_payload_bytes"] > 0


@pytest.mark.slow  # two Ray runs
def test_simulation_engine_same_seed_same_clients():
    # the SuperLink draws random node ids every run; our sampler picks partitions, not node ids
    sc = small_scenario(num_clients=5, clients_per_round=2, num_rounds=2, scheme="dirichlet", alpha=0.5,
                        min_size=5, wait_timeout=60.0)
    a, b = (simulate(sc)["runs"][0]["history"] for _ in range(2))
    assert [(h["accuracy"], h["uplink_payload_bytes"]) for h in a] == \
        [(h["accuracy"], h["uplink_payload_bytes"]) for h in b]
    assert a[-1]["accuracy"] != a[0]["accuracy"]
