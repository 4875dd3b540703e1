"""Scenarios: shipped TOML files load, bad keys and values are named, JSON round-trips, .npz data."""
from __future__ import annotations

import numpy as np
import pytest

from federated import Scenario, ScenarioError
from federated.data import client_data, client_indices, scenario_dataset
from federated.scenario import scenario_from_run_config
from simulations import available, scenario_path


@pytest.mark.parametrize("name", ["digits", "codecs", "mnist_cnn"])
def test_shipped_scenarios_load(name):
    assert name in available()
    sc = Scenario.from_toml(scenario_path(name))
    assert sc.name == name and sc.codecs_to_run()


def test_default_is_the_issue_default():
    sc = Scenario()
    assert (sc.dataset, sc.num_clients, sc.clients_per_round, sc.scheme, sc.alpha, sc.codec) == \
        ("digits", 20, 10, "dirichlet", 0.5, "topk:0.01+q8")
    assert Scenario.from_toml(scenario_path("digits")).codec == sc.codec


def test_json_round_trip_and_run_config():
    sc = Scenario(num_rounds=7, compare=["fp32", "q8"], strategy_options={"beta": 0.1})
    assert Scenario.from_json(sc.to_json()) == sc
    assert scenario_from_run_config({"scenario-json": sc.to_json()}) == sc
    assert scenario_from_run_config({}) == Scenario()


def test_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[local]\nepochz = 3\n")
    with pytest.raises(ScenarioError, match="epochz"):
        Scenario.from_toml(bad)
    with pytest.raises(ScenarioError, match="does not exist"):
        Scenario.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match="clients_per_round"):
        Scenario(num_clients=5, clients_per_round=6)
    with pytest.raises(ScenarioError, match="strategy"):
        Scenario(strategy="fedmagic")
    with pytest.raises(ScenarioError, match="stragglers"):
        Scenario(num_clients=4, clients_per_round=4, stragglers=4)


def test_npz_dataset_plugs_in(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "mine.npz"
    np.savez(f, x_train=rng.random((200, 5)), y_train=rng.integers(0, 3, 200),
             x_test=rng.random((50, 5)), y_test=rng.integers(0, 3, 50))
    sc = Scenario(dataset=str(f), num_clients=4, clients_per_round=2, arch="softmax")
    ds = scenario_dataset(sc)
    assert ds.input_shape == (5,) and ds.num_classes == 3
    assert sum(len(i) for i in client_indices(sc)) == 200
    x, y = client_data(sc, 1)
    assert x.dtype == np.float32 and len(x) == len(y)
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((3, 2)))
    with pytest.raises(ScenarioError, match="y_train"):
        scenario_dataset(Scenario(dataset=str(tmp_path / "partial.npz")))


def test_impossible_partition_fails_before_round_one():
    from federated import PartitionError
    from federated.inprocess import run_inprocess

    with pytest.raises(PartitionError, match="200 clients"):
        run_inprocess(Scenario(num_clients=200, clients_per_round=10, min_size=10, backend="numpy"))
