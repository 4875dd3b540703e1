"""`edgelearn run model.onnx --input name=file.npy [--output out.npz]`."""
from __future__ import annotations

import os

import numpy as np

from inference import Config, Predictor
from inference.errors import InputError


def parse_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input {spec!r}: expected NAME=FILE.npy")
        if not os.path.exists(path):
            raise InputError(f"--input {name}: file {path!r} does not exist")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"--input {name}: {path!r} is not a readable .npy file: {e}") from e
    return feeds


NAME = "run"
HELP = "run a model on .npy inputs and print or save its outputs"


def add_arguments(p) -> None:
    p.add_argument("model")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array (repeat for several inputs)")
    p.add_argument("--output", help="save all outputs to this .npz file")


def run(args) -> int:
    return run_model(args.model, args.input, args.output)


def run_model(model: str, inputs: list[str], output: str | None) -> int:
    predictor = Predictor(Config(model_path=model))
    results = predictor.run(parse_inputs(inputs))
    for name, value in results.items():
        arr = np.asarray(value)
        print(f"{name}: {arr.dtype}{list(arr.shape)}")
        print(np.array2string(arr, threshold=20, edgeitems=3, precision=5))
    if output:
        np.savez(output, **{k: np.asarray(v) for k, v in results.items()})
        print(f"saved {len(results)} outputs to {output}")
    return 0
