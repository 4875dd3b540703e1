"""Local training engines: the Trainer path and the numpy oracle agree; FedProx pulls toward the global."""
from __future__ import annotations

import numpy as np
import pytest

from federated import Scenario, ScenarioError
from federated.data import client_data, scenario_dataset
from federated.local_training import evaluate_params, init_params, resolve_backend, train_local
from federated.robust import update_norm
from federated.server_app import wait_for_nodes
from federated.errors import FederatedError

from .helpers import small_scenario


def test_auto_picks_the_trainer_when_it_exists():
    pytest.importorskip("training.trainer")
    assert resolve_backend(Scenario()) == "trainer"
    assert resolve_backend(Scenario(backend="numpy")) == "numpy"
    with pytest.raises(ScenarioError, match="needs training.Trainer"):
        resolve_backend(Scenario(arch="cnn", backend="numpy"))


@pytest.mark.parametrize("backend", ["numpy", "trainer"])
def test_local_training_learns_and_fedprox_shrinks_the_update(backend):
    if backend == "trainer":
        pytest.importorskip("training.trainer")
    sc = small_scenario(backend=backend, epochs=3)
    ds = scenario_dataset(sc)
    g = init_params(sc, ds.input_shape, ds.num_classes)
    data = client_data(sc, 0)
    res = train_local(g, data, sc, seed=1)
    assert res.num_examples == len(data[0]) and np.isfinite(res.loss)
    assert [p.shape for p in res.params] == [p.shape for p in g]
    assert evaluate_params(res.params, (ds.x_test, ds.y_test), sc)[1] > 0.6
    prox = train_local(g, data, sc.replace(proximal_mu=10.0), seed=1)
    free = update_norm([p - q for p, q in zip(res.params, g)])
    assert update_norm([p - q for p, q in zip(prox.params, g)]) < 0.8 * free


def test_trainer_and_numpy_paths_agree_on_the_same_weights():
    pytest.importorskip("training.trainer")
    sc = small_scenario(backend="numpy")
    ds = scenario_dataset(sc)
    g = init_params(sc.replace(backend="trainer"), ds.input_shape, ds.num_classes)
    test = (ds.x_test, ds.y_test)
    ln, an = evaluate_params(g, test, sc)
    lt, at = evaluate_params(g, test, sc.replace(backend="trainer"))
    assert abs(ln - lt) < 1e-4 and an == at  # same layout, same forward pass


class _Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(self.n))


def test_wait_for_nodes_times_out_gracefully():
    assert wait_for_nodes(_Grid(5), 5, timeout=0.1) == 5
    assert wait_for_nodes(_Grid(3), 5, timeout=0.1, minimum=2) == 3
    with pytest.raises(FederatedError, match="only 1 of 5"):
        wait_for_nodes(_Grid(1), 5, timeout=0.1, minimum=2)
