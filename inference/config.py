"""Config: how a Predictor loads and runs a model."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Union

import onnx

from inference.errors import ConfigError

SUPPORTED_DEVICES = ("cpu",)


@dataclass
class Config:
    """Options of a :class:`inference.Predictor`.

    ``model_path`` takes a file path, the model's bytes, or an ``onnx.ModelProto``.
    ``optimize_graph`` / ``fusion`` switch the graph passes of ``inference.passes`` (each pass also
    has its own switch in ``passes``); ``memory_optimization`` frees every intermediate right after
    its last reader (off: all stay alive, for debugging); ``num_threads`` caps
    the BLAS and numba thread pools together (None: leave the libraries' defaults);
    ``cpu_affinity`` pins the process to those cores (Linux), e.g. the big cores of a big.LITTLE SoC.
    """

    model_path: Union[str, os.PathLike, bytes, onnx.ModelProto, None] = None
    device: str = "cpu"
    optimize_graph: bool = True
    fusion: bool = True
    memory_optimization: bool = True
    num_threads: int | None = None
    cpu_affinity: list[int] | None = None
    passes: dict[str, bool] = field(default_factory=dict)

    def validate(self) -> None:
        if self.model_path is None:
            raise ConfigError("Config.model_path is not set: give a path, bytes or an onnx.ModelProto")
        if self.device not in SUPPORTED_DEVICES:
            raise ConfigError(f"device {self.device!r} is not available: this build runs on "
                              f"{', '.join(SUPPORTED_DEVICES)} only")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ConfigError(f"num_threads must be a positive int or None, got {self.num_threads!r}")
        if self.cpu_affinity is not None:
            if not hasattr(os, "sched_setaffinity"):
                raise ConfigError("cpu_affinity needs os.sched_setaffinity, which this platform lacks")
            available = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
            bad = [c for c in self.cpu_affinity if not isinstance(c, int) or c not in available]
            if bad or not self.cpu_affinity:
                raise ConfigError(f"cpu_affinity {self.cpu_affinity!r}: cores {bad} do not exist here "
                                  f"(cores 0..{(os.cpu_count() or 1) - 1})")
