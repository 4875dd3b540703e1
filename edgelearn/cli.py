"""`edgelearn` CLI. With no subcommand it runs the main job on an embedded default.

Each subcommand is a module of ``edgelearn.commands`` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; adding a job means adding a module.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from edgelearn import commands
from inference.errors import EdgelearnError

DEFAULT_COMMAND = "simulate"  # the main job: a federated simulation on an embedded default


def _command_modules() -> dict:
    mods = {}
    for info in pkgutil.iter_modules(commands.__path__):
        if not info.name.startswith("_"):
            mod = importlib.import_module(f"{commands.__name__}.{info.name}")
            mods[mod.NAME] = mod
    return mods


def build_parser(mods: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgelearn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(mods):
        mods[name].add_arguments(sub.add_parser(name, help=mods[name].HELP, description=mods[name].HELP))
    return p


def main(argv: list[str] | None = None) -> int:
    mods = _command_modules()
    parser = build_parser(mods)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = [DEFAULT_COMMAND]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(mods[args.command].run(args) or 0)
    except EdgelearnError as e:
        print(f"edgelearn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
