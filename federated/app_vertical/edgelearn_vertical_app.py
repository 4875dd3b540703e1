"""Entry points named in pyproject.toml: the vertical-FL ServerApp and ClientApp (config from run config).

Each SuperNode is one party: node config ``party=NAME`` (which party), ``csv=PATH`` (its own
table; otherwise the config's file or built-in split) and optionally ``model-dir=DIR`` (where it
saves its trained models).
"""
from federated.vertical_apps import make_vertical_client_app, make_vertical_server_app

client_app = make_vertical_client_app()
server_app = make_vertical_server_app()

__all__ = ["client_app", "server_app"]
