"""Process-level settings for fast CPU training and decoding.

glibc returns every allocation above 32 MiB to the kernel on free (``mmap``/``munmap``),
so each large activation of a training step is page-faulted in again (zeroed by the
kernel) on the next step. On the 2-core reference machine that was ~25 % of a Zipformer
training step (``bench/zipformer_speed.py``: 5.06 -> 3.76 s). :func:`tune_allocator` keeps
freed memory in the heap instead, as jemalloc/tcmalloc would; the price is that the
process keeps its peak memory until it exits, which is what a trainer does anyway.

Set ``AUDEN_KIT_MALLOC=system`` to leave the C allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc only). Returns True when settings were applied."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("AUDEN_KIT_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2 ** 30) == 1 and ok
    ok = mallopt(_M_TOP_PAD, 64 * 2 ** 20) == 1 and ok
    _tuned = ok
    return ok
