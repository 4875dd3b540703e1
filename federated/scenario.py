"""A federated scenario: one typed, validated description shared by simulation and deployment.

The same ``Scenario`` drives `edgelearn simulate` (Flower's simulation engine) and
`edgelearn deploy` (real SuperLink/SuperNodes). It travels to the apps as JSON inside Flower's run
config (key ``scenario-json``), so a deployed run carries its own settings and nothing depends on
files being present on the SuperNodes' machines.

TOML layout (every key optional; see simulations/*.toml):

    name = "digits"
    [data]      dataset = "digits" | "mnist" | "path/to/file.npz", test_fraction, seed
    [model]     arch = "softmax" | "mlp:128" | "cnn"
    [partition] scheme = "dirichlet", alpha = 0.5, shards_per_client = 2, seed = 0
    [federation] num_clients, clients_per_round, num_rounds, round_timeout, wait_timeout
    [local]     epochs, batch_size, lr, optimizer = "sgd"|"adam", momentum, proximal_mu
    [codec]     uplink = "topk:0.01+q8", downlink = "none" | "fp16" | "q8", compare = [...]
    [strategy]  name = "fedavg", options = {server_lr=..., ...}
    [robust]    max_update_norm = 0 (off), dropout_rate, byzantine_clients, byzantine_scale,
                stragglers (the last partitions reply straggler_delay s late)
    [dp]        mode = "none"|"client-fixed"|"server-fixed", noise_multiplier, clipping_norm
    [engine]    num_cpus = 1, seed = 0
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ScenarioError

STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad",
              "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
DP_MODES = ("none", "client-fixed", "server-fixed")

# TOML section of every field (fields not listed sit at the top level).
_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "test_fraction", "data_seed"),
    "model": ("arch",),
    "partition": ("scheme", "alpha", "shards_per_client", "partition_seed", "min_size"),
    "federation": ("num_clients", "clients_per_round", "num_rounds", "round_timeout", "wait_timeout"),
    "local": ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "proximal_mu",
              "backend"),
    "codec": ("codec", "downlink", "compare"),
    "strategy": ("strategy", "strategy_options"),
    "robust": ("max_update_norm", "dropout_rate", "byzantine_clients", "byzantine_scale", "stragglers",
               "straggler_delay"),
    "dp": ("dp_mode", "noise_multiplier", "clipping_norm"),
    "engine": ("num_cpus", "seed"),
}
# TOML key -> field name where they differ (e.g. [codec] uplink = ...).
_ALIASES = {("codec", "uplink"): "codec", ("strategy", "name"): "strategy",
            ("strategy", "options"): "strategy_options", ("dp", "mode"): "dp_mode",
            ("data", "seed"): "data_seed", ("partition", "seed"): "partition_seed"}


@dataclass
class Scenario:
    """Everything one federated run needs. Defaults = the embedded `edgelearn simulate` default."""

    name: str = "digits-default"
    # data
    dataset: str = "digits"
    test_fraction: float = 0.2
    data_seed: int = 0
    # model
    arch: str = "mlp:128"
    # partition
    scheme: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    partition_seed: int = 0
    min_size: int = 10
    # federation
    num_clients: int = 20
    clients_per_round: int = 10
    num_rounds: int = 50
    round_timeout: float = 120.0
    wait_timeout: float = 60.0
    # local training
    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    backend: str = "auto"
    # codecs
    codec: str = "topk:0.01+q8"
    downlink: str = "none"
    compare: list[str] = field(default_factory=list)
    # strategy
    strategy: str = "fedavg"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    # robustness
    max_update_norm: float = 0.0
    dropout_rate: float = 0.0
    byzantine_clients: int = 0
    byzantine_scale: float = 10.0
    stragglers: int = 0
    straggler_delay: float = 0.0
    # differential privacy
    dp_mode: str = "none"
    noise_multiplier: float = 0.0
    clipping_norm: float = 1.0
    # engine
    num_cpus: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ScenarioError naming the first inconsistent setting."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ScenarioError(f"scenario {self.name!r}: {msg}")
        need(self.num_clients >= 1, f"num_clients must be >= 1, got {self.num_clients}")
        need(1 <= self.clients_per_round <= self.num_clients,
             f"clients_per_round must be in [1, num_clients={self.num_clients}], got {self.clients_per_round}")
        need(self.num_rounds >= 0, f"num_rounds must be >= 0, got {self.num_rounds}")
        need(self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "epochs, batch_size, lr must be > 0")
        need(self.optimizer in ("sgd", "adam"), f"optimizer must be sgd or adam, got {self.optimizer!r}")
        need(self.backend in ("auto", "numpy", "trainer"), f"backend must be auto|numpy|trainer, got {self.backend!r}")
        need(self.strategy in STRATEGIES, f"unknown strategy {self.strategy!r}; choose from {STRATEGIES}")
        need(self.dp_mode in DP_MODES, f"unknown dp mode {self.dp_mode!r}; choose from {DP_MODES}")
        need(0.0 <= self.dropout_rate < 1.0, f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        need(0 <= self.byzantine_clients < self.num_clients, "byzantine_clients must be < num_clients")
        need(0 <= self.stragglers < self.num_clients and self.straggler_delay >= 0,
             f"stragglers must be in [0, num_clients) and straggler_delay >= 0, got {self.stragglers}, "
             f"{self.straggler_delay}")
        need(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction}")
        need(self.round_timeout > 0 and self.wait_timeout >= 0, "timeouts must be positive")

    # -- conversions
    def replace(self, **changes: Any) -> "Scenario":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scenario":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ScenarioError(f"unknown scenario keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Scenario":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ScenarioError(f"scenario JSON is invalid: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "Scenario":
        """Load a sectioned TOML scenario file (see the module docstring)."""
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ScenarioError(f"scenario file {p} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(f"scenario file {p} is not valid TOML: {e}") from None
        flat: dict[str, Any] = {}
        for key, val in raw.items():
            if key in _SECTIONS and isinstance(val, dict):
                for k, v in val.items():
                    name = _ALIASES.get((key, k), k)
                    if name not in _SECTIONS[key]:
                        raise ScenarioError(f"{p}: unknown key {k!r} in [{key}]; known: "
                                            f"{sorted(_SECTIONS[key])}")
                    flat[name] = v
            else:
                flat[key] = val
        if "name" not in flat:
            flat["name"] = p.stem
        return cls.from_dict(flat)

    def codecs_to_run(self) -> list[str]:
        """The uplink codecs this scenario compares (just `codec` unless `compare` is set)."""
        return list(self.compare) if self.compare else [self.codec]


RUN_CONFIG_KEY = "scenario-json"
RESULTS_KEY = "results-file"


def scenario_from_run_config(run_config: dict[str, Any]) -> Scenario:
    """The scenario a Flower app was started with (the embedded default if none was given)."""
    text = str(run_config.get(RUN_CONFIG_KEY, "") or "")
    return Scenario.from_json(text) if text else Scenario()
