"""Errors of the federated package, so a caller can tell a bad scenario from a rejected update."""
from __future__ import annotations

from inference.errors import EdgelearnError


class FederatedError(EdgelearnError):
    """Base of every error raised on purpose by ``federated``."""


class ScenarioError(FederatedError):
    """A scenario file or run config asks for something that does not exist or does not fit."""


class PartitionError(FederatedError):
    """A partitioner cannot split the data as asked (too few samples, bad alpha, bad shard count)."""


class UpdateRejected(FederatedError):
    """A client update failed validation (truncated, wrong shapes, NaN/Inf, huge norm)."""

    def __init__(self, reason: str, node_id: int | None = None):
        who = f"node {node_id}: " if node_id is not None else ""
        super().__init__(f"{who}{reason}")
        self.reason, self.node_id = reason, node_id


class SimulatedDropout(FederatedError):
    """Raised inside a ClientApp on purpose to emulate a device that drops out of a round."""


class DeployError(FederatedError):
    """The local SuperLink/SuperNode deployment could not be started, run or stopped."""
