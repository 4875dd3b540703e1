"""Transformers exported from PyTorch: our Predictor vs onnxruntime, side by side.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/torch_exports.py [--quick]

The models of ``benchmarks/torch_models.py`` (width 256, 4 heads, FFN 1024, 2 layers, 128 tokens,
random weights) as ``torch.onnx.export`` writes them: ``nn.TransformerEncoder`` with a bool
key-padding mask at opset 14 (LayerNorm written out in primitive ops) and 17, and a Hugging
Face-style BERT (int64 ids and mask) at opset 14 with fixed and with dynamic batch and sequence
axes, and a GPT-2-style decoder (causal mask, tanh GELU) at opset 14. Each cell times both runtimes in interleaved blocks in this one process (onnxruntime with
its default graph optimization, same intra-op threads), plus our Predictor without kernel replay,
and checks our outputs against torch's (rtol 1e-4, atol 1e-5).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.torch_models import Bert, Encoder, Gpt, bert_feeds, encoder_feeds, export, gpt_feeds, run_torch  # noqa: E402
from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402

SETTLE_S = 0.3  # as benchmarks/inference.py: each block after 0.3 s of the same runtime's runs
BATCH, SEQ = 1, 128

CASES = {  # name: (module class, feeds maker, opset, dynamic axes)
    "encoder, opset 14": (Encoder, encoder_feeds, 14, False),
    "encoder, opset 17": (Encoder, encoder_feeds, 17, False),
    "bert, opset 14": (Bert, bert_feeds, 14, False),
    "bert, opset 14, dynamic axes": (Bert, bert_feeds, 14, True),
    "gpt-2 style, opset 14": (Gpt, gpt_feeds, 14, False),
}


def _cell(name: str, threads: int, repeat: int) -> str:
    cls, make_feeds, opset, dynamic = CASES[name]
    torch.manual_seed(0)
    module = cls().eval()
    feeds = make_feeds(np.random.default_rng(0), BATCH, SEQ)
    data = export(module, feeds, opset, dynamic)
    ours, pred = edgelearn_runner(data, threads)
    plain, _ = edgelearn_runner(data, threads, kernel_replay=False)
    ort = peer_runner("onnxruntime", onnx.load_from_string(data), threads)
    diff, ok = max_abs_diff(ours(feeds), [run_torch(module, feeds)])
    t = time_interleaved({"ours": ours, "plain": plain, "ort": ort}, feeds, repeat, settle_s=SETTLE_S)
    replay = "replayed" if "replayed" in pred.replay_report() else "step by step"
    o, p, r = (t[k].median * 1e3 for k in ("ours", "plain", "ort"))
    return (f"| {name} | {threads} | {o:.2f} | {p:.2f} | {r:.2f} | {o / r:.2f}x | {replay} | "
            f"{diff:.1e}{'' if ok else ' (OUT OF TOLERANCE)'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="fewer timed runs")
    ap.add_argument("--only", default="", help="the cases whose name contains this (e.g. gpt)")
    args = ap.parse_args()
    repeat = 15 if args.quick else 60
    print(f"batch {BATCH}, {SEQ} tokens; medians of interleaved blocks, ms")
    print("| model | threads | ours | ours without replay | onnxruntime | ours/ort | replay | max diff vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    for name in (n for n in CASES if args.only in n):
        for threads in (int(t) for t in args.threads.split(",")):
            print(_cell(name, threads, repeat), flush=True)


if __name__ == "__main__":
    main()
