"""Config: how a Predictor loads and runs a model."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Union

import onnx

from inference.errors import ConfigError

SUPPORTED_DEVICES = ("cpu",)


@dataclass
class Config:
    """Options of a :class:`inference.Predictor`.

    ``model_path`` takes a file path, the model's bytes, or an ``onnx.ModelProto``.
    ``optimize_graph`` / ``fusion`` switch the graph passes of ``inference.passes`` (each pass also
    has its own switch in ``passes``); ``memory_optimization`` frees every intermediate right after
    its last reader (off: all stay alive, for debugging); ``memory_arena`` (with it) places the
    intermediates in one preallocated block at the memory plan's offsets (``inference.arena``; off:
    numpy allocates each); ``num_threads`` caps
    the BLAS and numba thread pools together (None: leave the libraries' defaults);
    ``cpu_affinity`` pins the process to those cores (Linux), e.g. the big cores of a big.LITTLE SoC.
    ``batch_split``: with ``num_threads`` > 1, a batch of at least ``min_rows_per_thread`` rows per
    thread runs as one contiguous chunk per thread (each on its own session, BLAS at one thread),
    when ``inference.batch_split`` proves every output row depends on its input row alone; None
    picks the rows from the model's size (``inference.split_runner.MIN_CHUNK_ELEMENTS``).
    ``chunk_rows``: on such a graph, a batch (or a thread's part of it) of more rows runs as
    consecutive chunks of this many, whose activations then stay in cache (``inference.chunked``);
    None picks it from the model's planned activation memory per row, 0 never chunks.
    ``precision`` converts a float model at load time: ``"int8"`` quantizes it (dynamic, or static
    when ``calibration_data`` is given: an array, a dict name -> array, or an iterable of feed
    dicts) to run the int8 kernels, ``"fp16"`` rounds its weights to float16 (storage precision,
    computed in float32); converters come from ``inference.precision``. A model already in half
    precision (float16 or bfloat16 weights and activations) is computed in float32 and rounded at
    its outputs, its inputs and outputs keeping their types (the ``widen_float16`` pass; switched
    off, each op computes in half precision at numpy's emulated speed). A model saved by
    ``edgelearn optimize`` loads without running the passes again unless ``reoptimize`` is set; a
    pass switched off in ``passes`` whose change can be taken back (``winograd_conv``) is taken
    back from it either way. ``specialize_sizes``: a CNN whose image inputs have symbolic sizes
    (other than the batch) is optimized again for each set of sizes it is fed (its passes need
    static sizes; ``inference.specialize``), keeping this many graphs, the least recently used
    dropped (0 runs one generic graph). They share the weights the passes derive; each holds its
    activations and the packings only its sizes pick (ResNet-18: ~6 MB a size after the first). ``release_weights``: after a graph's first run, each weight its packed kernels
    hold in their own layout is dropped, kept once (``inference.weight_release``); the model's
    initializer then reads as zeros, ``inference.weight_release.values`` gives its values.
    ``kernel_replay`` (with the arena): from the third run of an input shape on, the run is a replay
    of the compiled kernel calls recorded for that shape, without the per-step Python, where a check
    on random inputs shows the recording is the whole computation (``inference.kernel_replay``).
    """

    model_path: Union[str, os.PathLike, bytes, onnx.ModelProto, None] = None
    device: str = "cpu"
    optimize_graph: bool = True
    fusion: bool = True
    memory_optimization: bool = True
    memory_arena: bool = True
    num_threads: int | None = None
    cpu_affinity: list[int] | None = None
    passes: dict[str, bool] = field(default_factory=dict)
    precision: str = "fp32"
    calibration_data: Any = None
    reoptimize: bool = False
    batch_split: bool = True
    min_rows_per_thread: int | None = None
    chunk_rows: int | None = None
    specialize_sizes: int = 4
    release_weights: bool = True
    kernel_replay: bool = True

    def validate(self) -> None:
        if self.model_path is None:
            raise ConfigError("Config.model_path is not set: give a path, bytes or an onnx.ModelProto")
        if self.device not in SUPPORTED_DEVICES:
            raise ConfigError(f"device {self.device!r} is not available: this build runs on "
                              f"{', '.join(SUPPORTED_DEVICES)} only")
        self._validate_precision()
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ConfigError(f"num_threads must be a positive int or None, got {self.num_threads!r}")
        if self.min_rows_per_thread is not None and (not isinstance(self.min_rows_per_thread, int)
                                                     or self.min_rows_per_thread < 1):
            raise ConfigError(f"min_rows_per_thread must be a positive int or None, got {self.min_rows_per_thread!r}")
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or isinstance(self.chunk_rows, bool)
                                            or self.chunk_rows < 0):
            raise ConfigError(f"chunk_rows must be an int >= 0 (0: never chunk) or None, got {self.chunk_rows!r}")
        if not isinstance(self.specialize_sizes, int) or self.specialize_sizes < 0:
            raise ConfigError(f"specialize_sizes must be an int >= 0 (graphs kept per image size; 0: one generic "
                              f"graph), got {self.specialize_sizes!r}")
        if self.cpu_affinity is not None:
            if not hasattr(os, "sched_setaffinity"):
                raise ConfigError("cpu_affinity needs os.sched_setaffinity, which this platform lacks")
            available = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
            bad = [c for c in self.cpu_affinity if not isinstance(c, int) or c not in available]
            if bad or not self.cpu_affinity:
                raise ConfigError(f"cpu_affinity {self.cpu_affinity!r}: cores {bad} do not exist here "
                                  f"(cores 0..{(os.cpu_count() or 1) - 1})")

    def _validate_precision(self) -> None:
        from inference.precision import KNOWN, available

        if not isinstance(self.precision, str) or (self.precision not in KNOWN and
                                                   self.precision not in available()):
            raise ConfigError(f"precision {self.precision!r} is unknown: choose one of {list(KNOWN)} "
                              "(or register a converter with inference.precision.register_precision)")
        if self.calibration_data is not None and self.precision != "int8":
            raise ConfigError(f"calibration_data is only used with precision='int8' (static int8), "
                              f"not with precision={self.precision!r}")
