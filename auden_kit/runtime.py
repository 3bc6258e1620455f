"""Process-level settings for fast CPU training and decoding.

glibc returns every allocation above 32 MiB to the kernel on free (``mmap``/``munmap``),
so each large activation of a training step is page-faulted in again (zeroed by the
kernel) on the next step. On the 2-core reference machine that was ~25 % of a Zipformer
training step (``bench/zipformer_speed.py``: 5.06 -> 3.76 s). :func:`tune_allocator` keeps
freed memory in the heap instead, as jemalloc/tcmalloc would; the price is that the
process keeps its peak memory until it exits, which is what a trainer does anyway.

Set ``AUDEN_KIT_MALLOC=system`` to leave the C allocator alone.

Decoding is the other case: its batches differ in shape, so the freed blocks of one batch fit the
next one badly and the heap grows batch after batch, with the allocator tuned or not (a 13-minute
recording: 0.6 GB after loading the model, 1.5 GB after decoding, 0.7 GB after a
``malloc_trim``). :func:`release_free_memory` hands the free pages back; the Python API calls it
after each decoded batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_tuned = False
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            except OSError:
                pass
    return _libc or None


def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc only). Returns True when settings were applied."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("AUDEN_KIT_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = _glibc().mallopt
    except AttributeError:  # no C library found, or musl and friends: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2 ** 30) == 1 and ok
    ok = mallopt(_M_TOP_PAD, 64 * 2 ** 20) == 1 and ok
    _tuned = ok
    return ok


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc's ``malloc_trim``; False where there is no
    such call). Cheap next to a decoded batch; the pages come back zeroed when needed again."""
    try:
        trim = _glibc().malloc_trim
    except AttributeError:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
