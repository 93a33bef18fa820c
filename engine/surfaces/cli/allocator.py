"""How the `kam` process takes memory from the C library (glibc's malloc, on Linux).

A run over a million customers allocates and frees vectors of a few megabytes hundreds of times.
With glibc's defaults each thread that allocates gets an arena of its own (the texts are rendered on
several threads), freed memory above the mmap threshold goes straight back to the system, and the
next vector of the same size is faulted in again: the kernel zeroing fresh pages was about a fifth of
a run's CPU. One arena, and freed blocks up to 32 MiB kept for reuse, make the next vector reuse them.
Measured on the benchmark (1M customers, 2 cores, alternating runs): see README "Performance".

Only the `kam` command's own process does this, in its entry point (a library, a test runner or a
notebook that calls `main` keeps its host process's allocator), before a command imports the data
libraries and they start their threads; an allocator setting the user gave (MALLOC_ARENA_MAX, ...)
wins, and elsewhere than glibc nothing changes. The workers of a Dask
cluster keep Dask's own setting (freed memory handed back at once): given these instead, the 2M
Dask benchmark went from 26 to 16 s, but at 20M the workers, holding on to what they had freed,
reached their memory limit and were killed or restarted over and over (653 s against 302-341 s
the same day).
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

SETTINGS = (
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, 1),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest allowed (64-bit)
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, 1 << 30),
)
APPLIED: dict[str, int] = {}  # what this process was given (the `kam` entry point asks once)


def tune_allocator() -> dict[str, int]:
    """Set glibc's malloc for a batch process; what was set (empty where nothing could be)."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it: musl's mallopt does nothing useful)
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    for env, param, value in SETTINGS:
        if env in os.environ:
            continue  # the user's own setting, applied by glibc at start-up
        if mallopt(param, value) == 1:
            APPLIED[env] = value
    return dict(APPLIED)
