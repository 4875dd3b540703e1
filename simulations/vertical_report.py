"""Table, results.json and plots of a vertical-FL run (the dict VerticalServer.run returns)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def metric_name(results: dict[str, Any]) -> str:
    first = next(iter(results["runs"].values()))["mean"]
    return "auc" if "auc" in first else "accuracy"


def format_table(results: dict[str, Any]) -> str:
    """One line per codec: mean final metric over folds, payload bytes per epoch, ratio to fp32."""
    m, runs, al = metric_name(results), results["runs"], results["alignment"]
    base = runs.get("fp32")
    lines = [f"{results['name']}: {al['aligned']} aligned samples "
             f"({'PSI' if al.get('psi') else 'ids matched'}), folds {results['config']['folds']}",
             f"{'codec':<10}{m:>10}{'emb B/ep':>12}{'grad B/ep':>12}{'wire B/ep':>12}{'x payload':>10}{'d pts':>8}"]
    for codec, r in runs.items():
        b = r["bytes_per_epoch"]
        pay = b["emb_bytes"] + b["grad_bytes"]
        ratio = (base["bytes_per_epoch"]["emb_bytes"] + base["bytes_per_epoch"]["grad_bytes"]) / pay if base else None
        delta = 100 * (r["mean"][m] - base["mean"][m]) if base else None
        lines.append(f"{codec:<10}{r['mean'][m]:>10.4f}{b['emb_bytes']:>12.0f}{b['grad_bytes']:>12.0f}"
                     f"{b['wire_bytes']:>12.0f}{'-' if ratio is None else format(ratio, '.2f'):>10}"
                     f"{'-' if delta is None else format(delta, '+.2f'):>8}")
    return "\n".join(lines)


def write_results(results: dict[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return [out / "results.json"] + (plot(results, out) if plots else [])


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """<metric>_vs_epoch.png and <metric>_vs_bytes.png (fold-mean curves, one line per codec)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, paths = metric_name(results), []
    for xkey, xlabel in (("epoch", "epoch"), ("cum_bytes", "cumulative embedding + gradient payload bytes")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for codec, r in results["runs"].items():
            folds = r["folds"]
            n = min(len(h) for h in folds)
            xs = [sum(h[e][xkey] for h in folds) / len(folds) for e in range(n)]
            ys = [sum(h[e][m] for h in folds) / len(folds) for e in range(n)]
            ax.plot(xs, ys, marker=".", label=codec)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {m} (mean over folds)")
        ax.set_title(results["name"])
        ax.grid(alpha=0.3)
        ax.legend()
        p = out / f"{m}_vs_{'epoch' if xkey == 'epoch' else 'bytes'}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
