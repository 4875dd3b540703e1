"""Batch chunks table: a large batch run whole vs in consecutive chunks of rows, onnxruntime beside.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/batch_chunks.py [--repeat N]

Our Predictor with ``Config.chunk_rows`` = 0 (the whole batch through each layer), the automatic
rows (``inference.chunked``: planned activations per row against ``CHUNK_BYTES``) and fixed chunk
sizes, on the benchmark models with a batch dim (``benchmarks/inference.py``), each runtime built in
this process and timed in interleaved blocks of one run; the table gives the minimum of N runs
and each variant's time over onnxruntime's.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.inference import MODELS  # noqa: E402
from edgelearn.commands.bench import max_abs_diff, peer_runner, random_feeds, time_interleaved  # noqa: E402
from inference import Config, Predictor  # noqa: E402
from inference.chunked import CHUNK_BYTES  # noqa: E402
from inference.onnx_import import load_model  # noqa: E402


def ours(proto, threads: int, chunk_rows: int | None):
    pred = Predictor(Config(model_path=proto, num_threads=threads, chunk_rows=chunk_rows))
    names = pred.get_output_names()
    return (lambda feeds: [pred.run(feeds)[n] for n in names]), pred.chunk_rows


def row(name: str, batch: int, threads: int, fixed: list[int], repeat: int) -> str:
    proto = MODELS[name][0]()
    feeds = random_feeds(load_model(proto), batch)
    runners = {}
    runners["whole"], _ = ours(proto, threads, 0)
    runners["auto"], auto = ours(proto, threads, None)
    for rows in fixed:
        if rows != auto:
            runners[f"{rows} rows"], _ = ours(proto, threads, rows)
    runners["onnxruntime"] = peer_runner("onnxruntime", proto, threads)
    outs = {k: fn(feeds) for k, fn in runners.items()}  # also the warm-up run
    t = {k: min(v.times) for k, v in time_interleaved(runners, feeds, repeat, warmup=0, block=1).items()}
    diff = max(max_abs_diff(outs[k], outs["onnxruntime"])[0] for k in outs)
    ort = t["onnxruntime"]
    cells = " | ".join(f"{t.get(f'{r} rows', t['auto']) * 1e3:.0f} ({t.get(f'{r} rows', t['auto']) / ort:.2f}x)"
                       for r in fixed)
    return (f"| {name} | {batch} | {threads} | {t['whole'] * 1e3:.0f} ({t['whole'] / ort:.2f}x) | "
            f"{auto}: {t['auto'] * 1e3:.0f} (**{t['auto'] / ort:.2f}x**) | {cells} | {ort * 1e3:.0f} | {diff:.1e} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v2,resnet18,transformer")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", default="1")
    p.add_argument("--rows", default="1,2,4,8", help="fixed chunk sizes to time beside the automatic one")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    fixed = [int(r) for r in args.rows.split(",")]
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  cores={os.cpu_count()}  "
          f"CHUNK_BYTES={CHUNK_BYTES / 2**20:.0f} MiB  load average at start: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"| model | batch | threads | whole ms (/ort) | auto rows: ms (/ort) | "
          f"{' | '.join(f'{r} rows ms (/ort)' for r in fixed)} | onnxruntime ms | max abs diff |")
    print("|---" * (7 + len(fixed)) + "|")
    for name in args.models.split(","):
        for th in (int(t) for t in args.threads.split(",")):
            print(row(name, args.batch, th, fixed, args.repeat), flush=True)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}  (min of N runs per cell)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
