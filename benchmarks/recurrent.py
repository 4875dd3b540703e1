"""Recurrent models exported from PyTorch: ours (``inference.kernels.recurrent``) vs onnxruntime.

Run from the project root:  env -u OPENBLAS_CORETYPE python benchmarks/recurrent.py [--repeat 300]

Three models, random weights (speed does not depend on training), exported with
``torch.onnx.export(..., opset_version=17, dynamo=False)``: a 2-layer ``nn.LSTM(40, 64)`` over 20
steps, a bidirectional ``nn.GRU(40, 64)`` over 20 steps, and a keyword-spotting LSTM (Hello Edge's
LSTM-M size: 49 frames of 40 MFCC features, 118 cells, a 12-class linear head), each at batch 1
and 8 and at 1 and 2 threads. Both runtimes run in this process, interleaved in blocks
(``edgelearn.commands.bench.time_interleaved``); the table gives median milliseconds per run and
ours/onnxruntime. The machine is shared: read the ratios.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelearn.commands.bench import edgelearn_runner, max_abs_diff, peer_runner, time_interleaved  # noqa: E402


def _models() -> dict[str, tuple[onnx.ModelProto, int, int]]:
    """name -> (exported model, time steps, input features)."""
    import torch

    torch.manual_seed(0)

    class Seq(torch.nn.Module):
        def __init__(self, rnn: torch.nn.Module, head: torch.nn.Module | None = None):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            y = self.rnn(x)[0]
            return y if self.head is None else self.head(y[:, -1])

    specs = {
        "lstm 2x64 (40 in, 20 steps)": (Seq(torch.nn.LSTM(40, 64, 2, batch_first=True)), 20, 40),
        "bi-gru 64 (40 in, 20 steps)": (Seq(torch.nn.GRU(40, 64, batch_first=True, bidirectional=True)), 20, 40),
        "kws lstm 118 (40 in, 49 steps)": (Seq(torch.nn.LSTM(40, 118, batch_first=True), torch.nn.Linear(118, 12)),
                                           49, 40),
    }
    out = {}
    for name, (module, steps, features) in specs.items():
        buf = io.BytesIO()
        x = torch.zeros(2, steps, features)
        with torch.no_grad():
            torch.onnx.export(module.eval(), (x,), buf, input_names=["in0"], opset_version=17, dynamo=False,
                              dynamic_axes={"in0": {0: "batch"}})
        out[name] = (onnx.load_from_string(buf.getvalue()), steps, features)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300, help="timed runs per runtime and case")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")  # torch's notes on exporting RNNs at a fixed batch
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'model':32s} {'batch':>5s} {'thr':>3s} {'ours ms':>9s} {'ort ms':>9s} {'ours/ort':>8s}  max|diff|")
    rng = np.random.default_rng(0)
    for name, (proto, steps, features) in _models().items():
        for threads in (1, 2):
            ours, pred = edgelearn_runner(proto, threads)
            ort = peer_runner("onnxruntime", proto, threads)
            for batch in (1, 8):
                feeds = {"in0": rng.standard_normal((batch, steps, features)).astype(np.float32)}
                diff, ok = max_abs_diff(ours(feeds), ort(feeds))
                t = time_interleaved({"ours": ours, "onnxruntime": ort}, feeds, args.repeat, warmup=5, block=10)
                a, b = t["ours"].median * 1e3, t["onnxruntime"].median * 1e3
                print(f"{name:32s} {batch:5d} {threads:3d} {a:9.3f} {b:9.3f} {a / b:8.2f}  {diff:.1e}"
                      f"{'' if ok else ' MISMATCH'}")
    kinds = {s.kernel.kind for s in pred.session.steps if s.node.op_type in ("LSTM", "GRU", "RNN")}
    print(f"recurrent kernel kinds used: {', '.join(sorted(kinds))}")


if __name__ == "__main__":
    main()
