"""Entry points named in pyproject.toml: the edgelearn ServerApp and ClientApp (scenario from run config)."""
from federated.client_app import app as client_app
from federated.server_app import app as server_app

__all__ = ["client_app", "server_app"]
