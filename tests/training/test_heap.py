"""training.heap: freed temporaries stay mapped, so re-allocating them does not page-fault."""
from __future__ import annotations

import resource

import numpy as np
import pytest

from training.heap import retain_freed_memory


def _faults_of_rounds(nbytes: int, blocks: int, rounds: int) -> int:
    """Minor page faults of ``rounds`` rounds that allocate and write ``blocks`` arrays of
    ``nbytes`` each, then free them all (a training step's temporaries, in small)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        arrays = [np.empty(nbytes, np.uint8) for _ in range(blocks)]
        for a in arrays:
            a.fill(1)  # touch every page
        del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_reallocated_blocks_do_not_fault_again() -> None:
    if not retain_freed_memory():
        pytest.skip("no glibc mallopt here")
    assert retain_freed_memory()  # idempotent
    nbytes, blocks = 2 << 20, 8
    _faults_of_rounds(nbytes, blocks, 1)  # the first round maps the pages once
    # glibc's default policy returns part of the 16 MB freed each round and faults it in again
    # (measured ~4600 faults over 10 rounds, 9 blocks' worth); kept mapped: 0-1 block's worth
    assert _faults_of_rounds(nbytes, blocks, 10) < 2 * nbytes // resource.getpagesize()
