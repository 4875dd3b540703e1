"""The client's local training behind one small function, whatever engine does the work.

``train_local(global_params, data, sc)`` -> :class:`LocalResult` (new params, examples, loss) and
``evaluate_params(params, data, sc)`` are all the Flower apps know about training. The engine:

- ``trainer``: ``training.Trainer`` over the IR (the on-device engine; needed for the CNN);
- ``numpy``: :mod:`federated.numpy_models` (dense models only; dependency-free oracle);
- ``auto``: the Trainer when it is importable and supports the arch, else numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import numpy_models
from .errors import ScenarioError
from .scenario import Scenario

Params = list[np.ndarray]


@dataclass
class LocalResult:
    params: Params
    num_examples: int
    loss: float


_BLAS_LIMITED: list[int] = []  # the BLAS cap already applied in this process (process-wide)


def limit_threads(sc: Scenario) -> None:
    """Cap numba and BLAS at the client's CPU share (``sc.num_cpus``).

    A simulated client owns ``num_cpus`` cores; numba's multi-threaded kernels on a core shared
    with other clients spend more time waking their pool than working (5-13x slower measured on
    the MNIST CNN). BLAS limits are process-wide and costly to set (threadpoolctl inspects the
    loaded libraries), so once per process; numba's setting is per thread and cheap, so checked
    on every call (Ray may run an actor's calls on different threads).
    """
    import numba

    n = max(1, int(sc.num_cpus))
    if _BLAS_LIMITED != [n]:
        from inference.threads import set_num_threads
        set_num_threads(n)
        _BLAS_LIMITED[:] = [n]
    want = min(n, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)


def _trainer_backend():
    """The Trainer adapter module, or None while ``training.Trainer`` is not available."""
    try:
        from . import trainer_backend
    except ImportError:
        return None
    return trainer_backend if trainer_backend.available() else None


def resolve_backend(sc: Scenario) -> str:
    """Which engine a scenario trains with ("trainer" or "numpy")."""
    dense = sc.arch == "softmax" or sc.arch.startswith("mlp")
    tb = _trainer_backend()
    if sc.backend == "numpy" or (sc.backend == "auto" and (tb is None or not tb.supports(sc.arch))):
        if not dense:
            raise ScenarioError(f"arch {sc.arch!r} needs training.Trainer (numpy path is dense-only)")
        return "numpy"
    if tb is None or not tb.supports(sc.arch):
        raise ScenarioError(f"backend 'trainer' asked for arch {sc.arch!r} but training.Trainer "
                            "is not available or does not support it")
    return "trainer"


def init_params(sc: Scenario, input_shape: tuple[int, ...], num_classes: int) -> Params:
    """Initial global model (seeded by ``sc.seed``), as a list of float32 arrays."""
    if resolve_backend(sc) == "trainer":
        return _trainer_backend().init_params(sc, input_shape, num_classes)
    sizes = numpy_models.dense_sizes(sc.arch, int(np.prod(input_shape)), num_classes)
    return numpy_models.init_dense(sizes, sc.seed)


def train_local(global_params: Params, data: tuple[np.ndarray, np.ndarray], sc: Scenario,
                seed: int = 0) -> LocalResult:
    """Train from the global parameters on local (x, y); FedProx when ``sc.proximal_mu > 0``."""
    x, y = data
    limit_threads(sc)
    if resolve_backend(sc) == "trainer":
        params, loss = _trainer_backend().train(global_params, x, y, sc, seed)
    else:
        params, loss = numpy_models.train(
            global_params, x, y, epochs=sc.epochs, batch_size=sc.batch_size, lr=sc.lr,
            optimizer=sc.optimizer, momentum=sc.momentum, weight_decay=sc.weight_decay,
            proximal_mu=sc.proximal_mu, seed=seed)
    return LocalResult([np.asarray(p, np.float32) for p in params], len(x), float(loss))


def evaluate_params(params: Params, data: tuple[np.ndarray, np.ndarray], sc: Scenario) -> tuple[float, float]:
    """(loss, accuracy) of `params` on (x, y)."""
    x, y = data
    limit_threads(sc)
    if resolve_backend(sc) == "trainer":
        return _trainer_backend().evaluate(params, x, y, sc)
    return numpy_models.evaluate(params, x, y)
