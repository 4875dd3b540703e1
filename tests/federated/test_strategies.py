"""Every Flower strategy we expose runs through CompressedStrategy; FedProx, DP wrappers, downlink."""
from __future__ import annotations

import pytest

from federated.inprocess import run_inprocess
from federated.scenario import STRATEGIES
from federated.simulation import quiet_flower

from .helpers import small_scenario

quiet_flower()
OPTIONS = {"fedadam": {"eta": 0.05}, "fedyogi": {"eta": 0.05}, "fedadagrad": {"eta": 0.1},
           "bulyan": {}, "multikrum": {"num_nodes_to_select": 3}}


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_learns_from_decoded_updates(name):
    n = 7 if name == "bulyan" else 5  # Bulyan needs n >= 4f + 3
    sc = small_scenario(num_clients=n, clients_per_round=n, num_rounds=3, strategy=name,
                        strategy_options=OPTIONS.get(name, {}), proximal_mu=0.01 if name == "fedprox" else 0.0)
    run = run_inprocess(sc)["runs"][0]
    acc = [h["accuracy"] for h in run["history"]]
    assert acc[-1] > acc[0] + 0.2, (name, acc)


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed"])
def test_differential_privacy_wrappers(mode):
    sc = small_scenario(dp_mode=mode, noise_multiplier=0.01, clipping_norm=5.0, codec="fp32", num_rounds=3)
    run = run_inprocess(sc)["runs"][0]
    assert run["history"][-1]["accuracy"] > run["history"][0]["accuracy"] + 0.2
    noisy = run_inprocess(sc.replace(noise_multiplier=50.0, num_rounds=2))["runs"][0]
    assert noisy["final_accuracy"] < run["final_accuracy"]  # the noise is really added


def test_compressed_downlink_counts_fewer_bytes():
    sc = small_scenario(codec="fp32", num_rounds=2)
    full = run_inprocess(sc)["runs"][0]
    half = run_inprocess(sc.replace(downlink="fp16"))["runs"][0]
    assert half["downlink_bytes"] < 0.6 * full["downlink_bytes"]
    assert half["final_accuracy"] > 0.6
