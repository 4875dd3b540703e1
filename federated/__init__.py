"""Horizontal federated learning on Flower: compressed updates, robust aggregation, byte accounting.

    from federated import Scenario, simulate
    results = simulate(Scenario())            # digits, 20 clients, Dirichlet 0.5, top-1% + q8

Flower is imported lazily by the modules that need it (client_app, server_app, strategy, wire,
simulation, deploy), so partitioners and scenarios work without it.
"""
from .errors import (
    DeployError, FederatedError, PartitionError, ScenarioError, SimulatedDropout, UpdateRejected,
)
from .partition import dirichlet, iid, label_histogram, partition, quantity, shards
from .scenario import Scenario

__all__ = [
    "DeployError", "FederatedError", "PartitionError", "Scenario", "ScenarioError", "SimulatedDropout",
    "UpdateRejected", "dirichlet", "iid", "label_histogram", "partition", "quantity", "shards", "simulate",
]


def simulate(scenario: "Scenario", **kwargs):
    """Run `scenario` on Flower's simulation engine (see federated.simulation.simulate)."""
    from .simulation import simulate as _simulate
    return _simulate(scenario, **kwargs)
