"""Tables and plots of federated results (the dict written to results.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} GB"


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per codec: accuracy, bytes, and ratios against the first fp32 run (if any)."""
    runs = results["runs"]
    base = next((r for r in runs if r["codec"] in ("fp32", "none")), None)
    rows = []
    for r in runs:
        row = {"codec": r["codec"], "final_acc": r["final_accuracy"], "best_acc": r["best_accuracy"],
               "uplink": r["uplink_bytes"], "uplink_payload": r["uplink_payload_bytes"],
               "downlink": r["downlink_bytes"], "time_s": r["wall_time_s"],
               "rejected": sum(h["rejected"] for h in r["history"]),
               "failed": sum(h["failed"] for h in r["history"])}
        if base is not None and r["uplink_bytes"]:
            row["ratio_msg"] = base["uplink_bytes"] / r["uplink_bytes"]
            row["ratio_payload"] = (base["uplink_payload_bytes"] / r["uplink_payload_bytes"]
                                    if r["uplink_payload_bytes"] else None)
            row["acc_delta_pts"] = 100 * (r["final_accuracy"] - base["final_accuracy"])
        rows.append(row)
    return rows


def format_table(results: dict[str, Any]) -> str:
    sc = results["scenario"]
    head = (f"scenario {sc['name']}: {sc['dataset']} / {sc['arch']} ({results.get('backend')}), "
            f"{sc['num_clients']} clients, {sc['scheme']}"
            f"{'(' + str(sc['alpha']) + ')' if sc['scheme'] in ('dirichlet', 'quantity') else ''}, "
            f"{sc['clients_per_round']} a round, {sc['num_rounds']} rounds, strategy {sc['strategy']}")
    cols = f"{'codec':<18}{'final acc':>10}{'best acc':>10}{'uplink (msgs)':>15}{'payload':>12}" \
           f"{'x msgs':>8}{'x payload':>10}{'d acc pts':>10}{'time s':>8}"
    lines = [head, cols, "-" * len(cols)]
    for row in summary_rows(results):
        def opt(key: str, fmt: str) -> str:
            v = row.get(key)
            return format(v, fmt) if v is not None else "-"
        lines.append(f"{row['codec']:<18}{row['final_acc']:>10.4f}{row['best_acc']:>10.4f}"
                     f"{_fmt_bytes(row['uplink']):>15}{_fmt_bytes(row['uplink_payload']):>12}"
                     f"{opt('ratio_msg', '.1f'):>8}{opt('ratio_payload', '.1f'):>10}"
                     f"{opt('acc_delta_pts', '+.2f'):>10}{row['time_s']:>8.1f}")
    rej = [(row["codec"], row["rejected"], row["failed"]) for row in summary_rows(results)
           if row["rejected"] or row["failed"]]
    for codec, r, f in rej:
        lines.append(f"  {codec}: {r} updates rejected, {f} client failures/dropouts (rounds continued)")
    return "\n".join(lines)


def plot_results(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """accuracy_vs_round.png and accuracy_vs_uplink.png, one line per codec."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = results["scenario"]["name"]
    paths = []
    for fname, xkey, xlabel, logx in (("accuracy_vs_round.png", "round", "round", False),
                                      ("accuracy_vs_uplink.png", "cum_uplink_bytes",
                                       "cumulative uplink bytes (serialized messages)", True)):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in results["runs"]:
            hist = [h for h in r["history"] if not (logx and h[xkey] <= 0)]
            ax.plot([h[xkey] for h in hist], [h["accuracy"] for h in hist], marker=".", label=r["codec"])
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        p = out / fname
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    return paths
