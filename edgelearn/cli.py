"""`edgelearn` CLI. With no subcommand it runs the main job on an embedded default."""
from __future__ import annotations

import argparse
import sys

from inference.errors import EdgelearnError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgelearn", description=__doc__)
    sub = p.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="build a digits classifier, export it to ONNX and run it (default)")
    demo.add_argument("-o", "--output", default="edgelearn-digits.onnx", help="where to save the model")

    info = sub.add_parser("info", help="inputs, outputs, op histogram, parameters and FLOPs of a model")
    info.add_argument("model")
    info.add_argument("--batch", type=int, default=1, help="value for symbolic dims in FLOP counts")

    run = sub.add_parser("run", help="run a model on .npy inputs")
    run.add_argument("model")
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                     help="an input array (repeat for several inputs)")
    run.add_argument("--output", help="save all outputs to this .npz file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "demo"
    try:
        if command == "demo":
            from edgelearn.commands.demo import demo
            if args.command is None:
                args.output = "edgelearn-digits.onnx"
            return demo(args.output)
        if command == "info":
            from edgelearn.commands.info import info
            return info(args.model, args.batch)
        if command == "run":
            from edgelearn.commands.run import run
            return run(args.model, args.input, args.output)
    except EdgelearnError as e:
        print(f"edgelearn {command}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
