"""Vertical FL on Flower's deployment engine: a real SuperLink and one SuperNode per party.

    results = deploy_vertical(cfg, csvs={"guest": "guest.csv", "host": "host.csv"})

Each SuperNode is told which party it is, which file is its own, and (with ``model_dir``) where
it saves its trained models, all through its node config (``party='guest' csv='...'
model-dir='...'``); the run config carries only the scenario (``vfl-config``, no paths, no data).
The app is ``federated/app_vertical`` (its own FAB: a Flower App has one ServerApp and one
ClientApp); the processes are started and stopped by :func:`federated.deploy.deploy_app`, the
same machinery as the horizontal deployment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .deploy import deploy_app
from .vertical import VerticalConfig
from .vertical_apps import RUN_CONFIG_KEY
from .vertical_errors import VerticalError

VERTICAL_APP_DIR = Path(__file__).resolve().parent / "app_vertical"


def node_config(party: str, csv: str | Path | None = None, model_dir: str | Path | None = None) -> str:
    """The ``--node-config`` of a party's SuperNode (TOML-quoted values: paths may hold spaces)."""
    items = {"party": party, "csv": csv, "model-dir": model_dir}
    for key, value in items.items():
        if value is not None and "'" in str(value):
            raise VerticalError(f"node config {key}={value!r}: a single quote cannot travel in Flower's node config")
    return " ".join(f"{k}='{v}'" for k, v in items.items() if v)


def deploy_vertical(cfg: VerticalConfig, csvs: Mapping[str, str | Path] | None = None,
                    model_dir: str | Path | None = None, timeout: float = 900.0, tls: bool = False,
                    auth: bool = False, keep_home: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Run `cfg` with one SuperNode per party; `csvs` maps party -> its CSV (else the config's data).

    `model_dir`: every party saves its models under it (``<party>.bottom.onnx``, the label party
    also ``top.onnx``; see federated.vertical_model). Returns the ServerApp's results plus the
    "deployment" entry of :func:`federated.deploy.deploy_app` (every process is stopped on return).
    """
    csvs = dict(csvs or {})
    unknown = sorted(set(csvs) - set(cfg.party_names))
    if unknown:
        raise VerticalError(f"csvs name parties {unknown} that the config does not have ({cfg.party_names})")
    for party, path in csvs.items():
        if not Path(path).is_file():
            raise VerticalError(f"party {party!r}: no such CSV file {path}")
    if model_dir is not None:
        cfg = cfg.replace(model_dir=str(Path(model_dir).resolve()))
    nodes = [node_config(p.name, Path(csvs[p.name]).resolve() if p.name in csvs else None, cfg.model_dir or None)
             for p in cfg.parties]
    return deploy_app(VERTICAL_APP_DIR, nodes, {RUN_CONFIG_KEY: cfg.to_json()}, timeout=timeout, tls=tls,
                      auth=auth, keep_home=keep_home, verbose=verbose)
