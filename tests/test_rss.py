"""inference.rss: the peak RSS the benchmark and CLI reports print."""
import subprocess
import sys

_SCRIPT = """
import numpy as np
from inference.rss import peak_rss_mb
before = peak_rss_mb()
block = np.ones(64 * 2**20 // 8)  # 64 MB, every page touched
print(before, peak_rss_mb())
"""


def test_peak_rss_grows_with_a_touched_allocation():
    # a fresh process: a test worker's own peak may already be far above one more block
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert 10 < before < after and after >= before + 60  # VmHWM is exact to a few pages only


_BOTH_WAYS = """
import numpy as np
from inference.rss import current_rss_mb
before = current_rss_mb()
block = np.ones(64 * 2**20 // 8)  # 64 MB, every page touched (a fresh mapping at this size)
held = current_rss_mb()
del block
print(before, held, current_rss_mb())
"""


def test_current_rss_follows_an_allocation_both_ways():
    # a fresh process, as above: in a test worker this failed once in a full-suite run (what else
    # the worker holds and frees, e.g. numba's and BLAS's threads, can move its RSS between readings)
    out = subprocess.run([sys.executable, "-c", _BOTH_WAYS], capture_output=True, text=True, check=True).stdout
    before, held, after = map(float, out.split())
    assert held >= before + 60 and after < held - 60
