"""One step of a KV-cache decoder at long cached lengths: ours against onnxruntime on the same file,
the same feeds (one token and every layer's cached keys and values), interleaved in one process.

Where ``decode_loop.py`` follows a generation through its first 51 lengths (how a length's first
runs go), this holds one length and times its steady state (ours replayed): what a step costs
once the cache is long, where reading, concatenating and copying the cache dominate. The
decoder is ``decode_loop.py``'s (``--size mid``: 6 layers, 512 wide) with positions for the
longest length; ``--int8`` both runtimes on onnxruntime's ``quantize_dynamic`` of it.

Run from the project root:
  env -u OPENBLAS_CORETYPE python benchmarks/long_context.py [--lengths 64,256,1000] [--threads 1] [--int8]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.decode_loop import INT8_LABEL, SIZES, KvDecoder, export_kv, quantized  # noqa: E402
from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="64,256,1000", help="cached lengths, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", choices=sorted(SIZES), default="mid")
    p.add_argument("--int8", action="store_true", help="both runtimes on onnxruntime's quantize_dynamic of the decoder")
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    torch.manual_seed(0)
    module = KvDecoder(**dict(SIZES[args.size], context=max(lengths) + 8)).eval()
    proto = export_kv(module)
    if args.int8:
        proto = quantized(proto)
    import onnx

    model = onnx.load_from_string(proto)
    ours, _ = edgelearn_runner(proto, args.threads)
    peer = peer_runner("onnxruntime", model, args.threads)
    size = SIZES[args.size]
    print(f"KV-cache decoder step ({size['layers']} layers, {size['dim']} wide{INT8_LABEL if args.int8 else ''}), "
          f"{args.threads} thread(s), median of {args.repeat} interleaved")
    print("| cached tokens | cache MB in (and out) | ours ms | onnxruntime ms | ours / onnxruntime | max abs diff |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    heads, width = size["heads"], size["dim"] // size["heads"]
    for n in lengths:
        feeds = {"ids": np.array([[7]], np.int64),
                 **{name: (rng.standard_normal((1, heads, n, width)) * 0.5).astype(np.float32)
                    for name in module.cache_names()}}
        # settled: a thread pool spins after its work, on the cores the other runtime then needs
        timing = time_interleaved({"ours": ours, "onnxruntime": peer}, feeds, args.repeat, warmup=4, block=5,
                                  settle_s=0.3)
        diff, _ = max_abs_diff(ours(feeds), peer(feeds))
        mb = sum(v.nbytes for v in feeds.values()) / 2**20
        a, b = timing["ours"].median, timing["onnxruntime"].median
        print(f"| {n} | {mb:.1f} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.2f}x | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
