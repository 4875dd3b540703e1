"""Run a scenario on Flower's simulation engine (Ray), with an optional tqdm progress bar.

One ``run_simulation`` call covers every codec of the scenario (the ServerApp runs them one after
the other against the same virtual SuperNodes). Each virtual client gets ``sc.num_cpus`` CPUs
(1 by default: on 2 cores two clients train in parallel and never oversubscribe the machine).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import FederatedError
from .scenario import Scenario

if TYPE_CHECKING:
    from flwr.clientapp.typing import Mod


class _AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def quiet_flower(level: int = logging.ERROR) -> None:
    """Silence Flower's per-round INFO logging (our progress bar and table replace it).

    A filter on the "flwr" logger, because Flower resets its handlers' levels when a run starts.
    """
    flwr_logger = logging.getLogger("flwr")
    if not any(isinstance(f, _AtLeast) for f in flwr_logger.filters):
        flwr_logger.addFilter(_AtLeast(level))


def backend_config(sc: Scenario) -> dict[str, Any]:
    return {"client_resources": {"num_cpus": sc.num_cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "log_to_driver": False,
                          "logging_level": logging.ERROR}}


def simulate(sc: Scenario, progress: bool = False, verbose: bool = False,
             client_mods: Sequence["Mod"] = ()) -> dict[str, Any]:
    """Simulate `sc` with `sc.num_clients` virtual SuperNodes; return the ServerApp's results.

    `client_mods`: extra Flower mods for every virtual client (see make_client_app); they are
    pickled to the Ray actors, so they must be picklable (module-level functions or closures).
    """
    from flwr.simulation import run_simulation

    from .client_app import make_client_app
    from .server_app import make_server_app

    if not verbose:
        quiet_flower()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    results: list[dict] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sc.num_rounds * len(sc.codecs_to_run()), unit="round", dynamic_ncols=True)

    def on_round(codec: str, rec: dict) -> None:
        if bar is not None and rec["round"] > 0:
            bar.set_description(f"{codec:>14}")
            bar.set_postfix(acc=f"{rec['accuracy']:.3f}", up=f"{rec['cum_uplink_bytes'] / 1e6:.2f}MB")
            bar.update(1)

    try:
        run_simulation(server_app=make_server_app(sc, results.append, on_round),
                       client_app=make_client_app(sc, client_mods), num_supernodes=sc.num_clients,
                       backend_config=backend_config(sc), verbose_logging=verbose)
    finally:
        if bar is not None:
            bar.close()
    if not results:
        raise FederatedError("the simulation ended without results (see Flower's log above)")
    return results[0]
