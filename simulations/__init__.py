"""Ready-made federated scenarios (``*.toml`` next to this file) and the runner that reports them.

    from simulations import run_scenario, scenario_path
    results = run_scenario(Scenario.from_toml(scenario_path("codecs")), out_dir="runs/codecs")

Each run writes ``results.json`` and two plots (accuracy vs round, accuracy vs cumulative uplink
bytes; one line per codec) into its output directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from federated.scenario import Scenario

HERE = Path(__file__).resolve().parent


def scenario_path(name: str) -> Path:
    """Path of a shipped scenario by name ("digits", "mnist_cnn", "codecs") or a given .toml path."""
    p = Path(name)
    return p if p.suffix == ".toml" else HERE / f"{name}.toml"


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def run_scenario(sc: Scenario, out_dir: str | Path, progress: bool = True, plots: bool = True,
                 verbose: bool = False) -> dict[str, Any]:
    """Simulate `sc` on Flower's simulation engine, write results.json (+ plots), return the results."""
    from federated.server_app import write_results
    from federated.simulation import simulate

    from .report import plot_results

    results = simulate(sc, progress=progress, verbose=verbose)
    out = Path(out_dir)
    write_results(results, out / "results.json")
    if plots:
        results["plots"] = [str(p) for p in plot_results(results, out)]
        write_results(results, out / "results.json")
    return results
