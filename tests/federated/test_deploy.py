"""End to end on Flower's deployment engine: a real SuperLink and SuperNodes on loopback."""
from __future__ import annotations

import os

import pytest

from federated.deploy import deploy

from .helpers import small_scenario


@pytest.mark.slow
def test_deploy_superlink_and_supernodes_end_to_end():
    sc = small_scenario(num_clients=2, clients_per_round=2, num_rounds=2)
    res = deploy(sc, timeout=150)
    run = res["runs"][0]
    assert res["connected_nodes"] == 2 and run["codec"] == sc.codec
    assert run["history"][-1]["accuracy"] > run["history"][0]["accuracy"] + 0.3
    assert run["uplink_bytes"] > 0 and run["downlink_bytes"] > run["uplink_bytes"]
    for name, pid in res["deployment"]["pids"].items():  # every process we started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
def test_deploy_with_tls_and_supernode_authentication():
    sc = small_scenario(num_clients=2, clients_per_round=2, num_rounds=1)
    res = deploy(sc, timeout=150, auth=True)
    assert res["deployment"]["tls"] and res["deployment"]["auth"]
    assert res["connected_nodes"] == 2 and res["runs"][0]["final_accuracy"] > 0.5
