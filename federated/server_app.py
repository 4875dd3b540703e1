"""The Flower ServerApp: wait for the nodes, run Flower's strategy loop per codec, evaluate centrally.

``run_federation`` is the whole server job; ``make_server_app`` binds it to a scenario (simulation)
or reads the scenario from the run config (``flwr run`` deployment), and hands the results to a
callback and/or a JSON file (run-config key ``results-file``).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from flwr.app import ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from .bytes import ByteCounter
from .data import client_indices, scenario_dataset
from .errors import FederatedError
from .local_training import evaluate_params, init_params, resolve_backend
from .sampling import discover_partitions
from .scenario import RESULTS_KEY, Scenario, scenario_from_run_config
from .strategy import build_strategy
from .wire import from_record, to_record

log = logging.getLogger("edgelearn.federated")
RoundCallback = Callable[[str, dict[str, Any]], None]


def wait_for_nodes(grid: Grid, expected: int, timeout: float, minimum: int = 1, poll: float = 0.2) -> int:
    """Block until `expected` nodes are connected or `timeout` s passed; return how many are.

    Flower samples from whatever is connected when a round starts, so without this round 1 can
    under-sample. After the timeout we go on with what we have if at least `minimum` are there.
    """
    deadline = time.monotonic() + timeout
    while True:
        n = len(list(grid.get_node_ids()))
        if n >= expected:
            return n
        if time.monotonic() >= deadline:
            if n >= minimum:
                log.warning("only %d of %d nodes connected after %.0f s; starting anyway", n, expected, timeout)
                return n
            raise FederatedError(f"only {n} of {expected} nodes connected after {timeout:.0f} s "
                                 f"(need at least {minimum})")
        time.sleep(poll)


def run_codec(grid: Grid, sc: Scenario, codec: str, on_round: RoundCallback | None = None,
              partitions: dict[int, int] | None = None) -> dict[str, Any]:
    """Run `sc.num_rounds` rounds with uplink `codec`; per-round accuracy and bytes.

    `partitions` (node id -> partition id, see federated.sampling) makes the client sampling
    reproducible across runs; without it nodes are ordered by node id.
    """
    ds = scenario_dataset(sc)
    init = init_params(sc, ds.input_shape, ds.num_classes)
    counter = ByteCounter()
    strategy = build_strategy(sc, codec, counter, partitions=partitions)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def evaluate_fn(rnd: int, arrays) -> MetricRecord:
        loss, acc = evaluate_params(from_record(arrays), (ds.x_test, ds.y_test), sc)
        r = counter.rounds.get(rnd, {})
        stats = strategy.rounds.get(rnd)
        rec = {"round": rnd, "accuracy": acc, "loss": loss, "time_s": time.perf_counter() - t0,
               "uplink_bytes": r.get("uplink", 0), "downlink_bytes": r.get("downlink", 0),
               "uplink_payload_bytes": r.get("uplink_payload", 0),
               "cum_uplink_bytes": sum(v["uplink"] for k, v in counter.rounds.items() if k <= rnd),
               "cum_uplink_payload_bytes": sum(v["uplink_payload"] for k, v in counter.rounds.items() if k <= rnd),
               "cum_downlink_bytes": sum(v["downlink"] for k, v in counter.rounds.items() if k <= rnd),
               "accepted": stats.accepted if stats else 0, "rejected": stats.rejected if stats else 0,
               "failed": stats.failed if stats else 0, "timed_out": stats.timed_out if stats else 0,
               "client_train_time_s": stats.train_time_s if stats else 0.0}
        history.append(rec)
        if on_round is not None:
            on_round(codec, rec)
        return MetricRecord({"accuracy": acc, "loss": loss})

    strategy.start(grid, to_record(init), num_rounds=sc.num_rounds, timeout=sc.round_timeout,
                   train_config=ConfigRecord(), evaluate_fn=evaluate_fn)
    final = history[-1] if history else {}
    return {"codec": codec, "downlink": sc.downlink, "strategy": sc.strategy, "history": history,
            "final_accuracy": final.get("accuracy"), "best_accuracy": max((h["accuracy"] for h in history), default=None),
            "uplink_bytes": counter.uplink, "uplink_payload_bytes": counter.uplink_payload,
            "downlink_bytes": counter.downlink, "downlink_payload_bytes": counter.downlink_payload,
            "uplink_reply_anatomy": counter.first_uplink,
            "rejections": [r for s in strategy.rounds.values() for r in s.reasons],
            "wall_time_s": time.perf_counter() - t0}


def run_federation(grid: Grid, sc: Scenario, on_round: RoundCallback | None = None) -> dict[str, Any]:
    """Wait for the nodes, learn their partitions, then one run per codec of the scenario (fresh model each)."""
    client_indices(sc)  # a partition that cannot be made fails here, not in every client of every round
    connected = wait_for_nodes(grid, sc.num_clients, sc.wait_timeout, minimum=sc.clients_per_round)
    partitions = discover_partitions(grid, timeout=max(sc.wait_timeout, 1.0))
    runs = [run_codec(grid, sc, codec, on_round, partitions) for codec in sc.codecs_to_run()]
    return {"scenario": sc.to_dict(), "backend": resolve_backend(sc), "connected_nodes": connected,
            "runs": runs}


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Atomically (write + rename), so a process polling for the file never reads half of it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(p)
    return p


def make_server_app(scenario: Scenario | None = None, on_result: Callable[[dict], None] | None = None,
                    on_round: RoundCallback | None = None) -> ServerApp:
    """A ServerApp bound to `scenario` (or reading it from the run config when None)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        sc = scenario if scenario is not None else scenario_from_run_config(context.run_config)
        results = run_federation(grid, sc, on_round)
        if on_result is not None:
            on_result(results)
        out = str(context.run_config.get(RESULTS_KEY, "") or "")
        if out:
            write_results(results, out)

    return app


# The app `flwr run` loads (federated/app/pyproject.toml).
app = make_server_app()
