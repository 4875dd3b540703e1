"""The CLI's scenario arguments, the results table and the plots."""
from __future__ import annotations

import argparse

from edgelearn.commands import simulate as cmd
from simulations.report import format_table, plot_results, summary_rows


def _fake_results():
    def run(codec, acc, up, payload):
        hist = [{"round": r, "accuracy": acc * r / 2, "cum_uplink_bytes": up * r // 2, "rejected": 0,
                 "failed": 1 if r == 1 else 0} for r in range(3)]
        return {"codec": codec, "final_accuracy": acc, "best_accuracy": acc, "uplink_bytes": up,
                "uplink_payload_bytes": payload, "downlink_bytes": 5 * up, "wall_time_s": 1.0, "history": hist}
    sc = {"name": "t", "dataset": "digits", "arch": "mlp:8", "num_clients": 2, "scheme": "iid", "alpha": 0.5,
          "clients_per_round": 2, "num_rounds": 2, "strategy": "fedavg"}
    return {"scenario": sc, "backend": "numpy", "runs": [run("fp32", 0.9, 100000, 98000), run("topk:0.01+q8", 0.89, 1000, 500)]}


def test_table_ratios_and_plots(tmp_path):
    res = _fake_results()
    rows = summary_rows(res)
    assert rows[1]["ratio_payload"] == 196 and rows[1]["ratio_msg"] == 100
    assert round(rows[1]["acc_delta_pts"], 6) == -1.0
    text = format_table(res)
    assert "topk:0.01+q8" in text and "client failures" in text
    paths = plot_results(res, tmp_path)
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_cli_arguments_override_the_scenario():
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    sc = cmd.scenario_from_args(p.parse_args([]))
    assert sc.name == "digits-default"
    sc = cmd.scenario_from_args(p.parse_args(["--config", "codecs", "--rounds", "3", "--clients", "5",
                                              "--compare", "fp32,q8"]))
    assert (sc.name, sc.num_rounds, sc.num_clients, sc.clients_per_round, sc.compare) == \
        ("codecs", 3, 5, 5, ["fp32", "q8"])
