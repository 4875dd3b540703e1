"""Resident memory of this process (peak and now), for the benchmark and CLI reports."""
from __future__ import annotations

import resource
import sys


def _status_mb(field: str) -> float | None:
    """A memory field of Linux's /proc/self/status (kB there) in MB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: Linux's VmHWM, which exec resets (``ru_maxrss`` is not reset by
    exec, so a benchmark's child would report its parent's peak), else ``ru_maxrss``."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def current_rss_mb() -> float | None:
    """This process's resident memory now in MB (Linux's VmRSS); None where /proc is missing."""
    return _status_mb("VmRSS")
