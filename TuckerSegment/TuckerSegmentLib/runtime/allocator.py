"""Keep freed memory in the process for reuse (Linux, glibc), so each patch stops paying
for fresh pages.

glibc serves every allocation above 32 MB with a fresh mmap and returns it on free; a TS patch
allocates tensors of hundreds of MB, so each forward pass page-faults through gigabytes of new
zeroed memory (measured here: ~40% of a 3 mm forward on the CPU). With mmap off for large
blocks and trimming off, freed blocks are reused by the next patch. The cost: memory freed
during a run is not handed back to the system until the process ends, which suits the
short-lived `tucker-segment` process (the Slicer panel runs it as one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_state = {"reuse": False}


def keep_freed_memory() -> bool:
    """Switch glibc to reuse freed memory; False where that is not possible (not glibc)."""
    if _state["reuse"]:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1  # -1: never trim
    _state["reuse"] = ok
    return ok


def reusing_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process."""
    return _state["reuse"]
