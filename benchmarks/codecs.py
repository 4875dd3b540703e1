"""Update-codec table: payload size, ratio to fp32, reconstruction error and speed of each scheme.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/codecs.py [--reps N]

The "model delta" has the shapes of a small VGG-style CNN (~0.98M floats) and heavy-tailed values
(Student-t, 4 degrees of freedom) with a different scale per layer, as real updates have. Each
timing is the median CPU time (time.process_time; numpy runs these ops on one thread) of --reps
runs on a fresh state (one client's first round), so other jobs on a shared machine inflate it
less than wall time; payload bytes are the whole serialized payload, header included. No numba code is involved, so there is no
cold-start compile cost to report.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.codecs import decode_payload, make_codec  # noqa: E402
from compress.codecs.bits import varint_decode, varint_encode  # noqa: E402

SHAPES = [(32, 3, 3, 3), (32,), (64, 32, 3, 3), (64,), (128, 64, 3, 3), (128,),
          (256, 128, 3, 3), (256,), (256, 256, 3, 3), (256,), (10, 256), (10,)]
SPECS = ["fp32", "fp16", "q8", "q4", "q2", "sign", "topk:0.1", "topk:0.01", "topk:0.01+q8",
         "topk:0.01+q4", "stc:0.01"]


def make_update(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_t(4, size=s) * 10.0 ** rng.uniform(-4, -2)).astype(np.float32) for s in SHAPES]


def rel_l2(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    num = sum(float(((x.astype(np.float64) - y) ** 2).sum()) for x, y in zip(a, b))
    return float(np.sqrt(num / sum(float((x.astype(np.float64) ** 2).sum()) for x in a)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    arrays = make_update()
    n = sum(a.size for a in arrays)
    print(f"edgelearn update codecs: {len(arrays)} arrays, {n:,} float32 values; "
          f"numpy {np.__version__}, python {platform.python_version()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, reps={args.reps}, "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    base = None
    rows = []
    for spec in SPECS:
        codec = make_codec(spec, seed=0)
        enc_t, dec_t = [], []
        for _ in range(args.reps):
            state = codec.new_state()
            t0 = time.process_time()
            payload = codec.encode(arrays, state)
            t1 = time.process_time()
            out = decode_payload(payload)
            t2 = time.process_time()
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
        base = base or len(payload)
        rows.append((spec, len(payload), base / len(payload), len(payload) * 8 / n, rel_l2(arrays, out),
                     1e3 * float(np.median(enc_t)), 1e3 * float(np.median(dec_t))))

    head = f"{'scheme':<14}{'bytes':>11}{'vs fp32':>9}{'bits/val':>10}{'rel L2 err':>12}{'enc ms':>9}{'dec ms':>9}   (CPU ms)"
    print(head)
    print("-" * len(head))
    for spec, size, ratio, bpv, err, te, td in rows:
        print(f"{spec:<14}{size:>11,}{ratio:>8.1f}x{bpv:>10.3f}{err:>12.4f}{te:>9.1f}{td:>9.1f}")

    # The index coder on its own: ~1% of 1M positions, what top-k at 1% sends per million values.
    idx = np.sort(np.random.default_rng(1).choice(1_000_000, 10_000, replace=False))
    gaps = np.diff(idx, prepend=-1) - 1
    t0 = time.process_time()
    for _ in range(20):
        raw = varint_encode(gaps)
    t1 = time.process_time()
    for _ in range(20):
        varint_decode(raw, gaps.size, "bench")
    t2 = time.process_time()
    print(f"\nvarint index coding, 10k indices in 1M: {raw.size / idx.size:.2f} bytes/index, "
          f"encode {1e3 * (t1 - t0) / 20:.2f} ms, decode {1e3 * (t2 - t1) / 20:.2f} ms")
    print("rel L2 err is ||x - decode(encode(x))|| / ||x|| for one round; with error feedback "
          "(topk, sign, stc) the rest is carried to later rounds, not lost.")


if __name__ == "__main__":
    main()
