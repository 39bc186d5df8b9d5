"""glibc malloc set for a process that allocates and frees the same large buffers per request.

By default glibc serves each allocation over its (adaptive) mmap threshold with a fresh
``mmap`` and returns freed memory at the top of the heap to the kernel past 128 KiB: a request
body, its decoded tensors and the reply's buffers are then page-faulted in anew by every
request (a 588 KiB tensor: about 0.3 ms of page faults and zeroing per copy, as much as the
copy itself, measured). ``keep_freed_memory(n)`` raises the trim threshold to ``n`` bytes and
the mmap threshold to ``min(n, 32 MiB)``, so those buffers are reused from the heap.

The server sets it at start (``--keep-freed-memory``, 64 MiB). A client process is the user's:
nothing is changed unless it calls ``blindai.keep_freed_memory()`` (a client receiving 588 KiB
replies page-faulted 247 times a reply, 0.5 ms of its CPU, without it; 1.5 times with it).

A no-op where the C library has no ``mallopt`` (musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

__all__ = ["MAX_MMAP_THRESHOLD", "keep_all_freed_memory", "keep_freed_memory"]

_log = logging.getLogger("blindai.server")
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
_MOST = (1 << 31) - 1
"""The largest value mallopt takes (an int)."""
MAX_MMAP_THRESHOLD = 32 << 20
"""glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)."""


def keep_freed_memory(nbytes: int = 64 << 20) -> bool:
    """Keep up to ``nbytes`` of freed memory for reuse (0: glibc's defaults); True if set.
    Process-wide: it applies to every allocation of this process from then on."""
    if nbytes <= 0:
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    trim = min(nbytes, _MOST)
    trimmed: int = mallopt(M_TRIM_THRESHOLD, trim)
    mapped: int = mallopt(M_MMAP_THRESHOLD, min(trim, MAX_MMAP_THRESHOLD))
    return trimmed == 1 and mapped == 1


def keep_all_freed_memory() -> bool:
    """Serve every allocation from the heap and keep all freed memory there (up to 2 GiB at
    its top) for reuse; True if set. For a short-lived process that frees large buffers and
    then allocates as much again (the compile guard's child: the model's bytes and parsed
    protobuf, then onnxruntime's session), not for a server: freed memory is never returned.

    An allocation over the mmap threshold otherwise gets fresh pages (``mmap``), each
    page-faulted and zeroed on first use, and gives them back when freed. Without ``mmap``,
    glibc still maps memory when the heap cannot grow (its fallback); every byte stays
    counted in the address space (RLIMIT_AS) as before.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    trimmed: int = mallopt(M_TRIM_THRESHOLD, _MOST)
    unmapped: int = mallopt(M_MMAP_MAX, 0)
    return trimmed == 1 and unmapped == 1


def _mallopt() -> Any:
    """The C library's ``mallopt`` (None where there is none)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _log.debug("no mallopt in this C library: memory settings left as they are")
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
