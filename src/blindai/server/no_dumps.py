"""Keep the server's memory out of core dumps and away from other local processes.

The server's memory holds every tenant's models, inputs and outputs in the clear. A crash
(onnxruntime on a hostile model, a signal) would write all of it to a core file, and in a
confidential VM the disk is the host's unless encrypted: measured here, a simulation server
killed by ``SIGSEGV`` after one run left a 179 MB ``core`` holding the model's and the
request's marker bytes. :func:`forbid_dumps` sets the core-file size limit to 0 (soft and hard,
so nothing in the process raises it again) and makes the process non-dumpable
(``PR_SET_DUMPABLE`` 0), which also gives its ``/proc/PID`` files (``mem``, ``environ``,
``maps``) to root and forbids ``ptrace`` from other processes of the same user.

The server calls it at start (``blindai.server.main.serve``) and the compile guard's child calls
it before it reads a model (``execve`` makes a process dumpable again). Where the kernel or the
runtime refuses (Gramine: an enclave's memory is never in a host core dump), it says which
part failed; nothing else depends on it.

The server does not lock its memory, so swap is the other way its memory reaches a disk:
:func:`swap_warning` reads ``/proc/swaps`` at start and names the swap areas in use (``zram``
devices, compressed in memory, are not disks).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SWAPS", "DumpGuard", "forbid_dumps", "swap_warning"]

SWAPS = Path("/proc/swaps")
"""The kernel's list of swap areas in use."""

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class DumpGuard:
    """What :func:`forbid_dumps` could set: each flag True once in force."""

    no_core_file: bool
    """RLIMIT_CORE is 0 (soft and hard)."""
    not_dumpable: bool
    """The process is non-dumpable (``prctl(PR_GET_DUMPABLE)`` is 0)."""

    @property
    def problems(self) -> list[str]:
        """What is not in force, one phrase each (empty when everything is)."""
        found = []
        if not self.no_core_file:
            found.append("the core-file size limit could not be set to 0")
        if not self.not_dumpable:
            found.append("the process could not be made non-dumpable (prctl PR_SET_DUMPABLE)")
        return found


def _prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # not Linux, or a C library without prctl
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def forbid_dumps() -> DumpGuard:
    """Turn core files off and make this process non-dumpable; report what held."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass
    no_core = resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    prctl = _prctl()
    not_dumpable = False
    if prctl is not None:
        prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        not_dumpable = prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    return DumpGuard(no_core_file=no_core, not_dumpable=not_dumpable)


def swap_warning(swaps: Path = SWAPS) -> str | None:
    """A warning naming the swap areas in use (other than ``zram``), or None when there are
    none (or the list cannot be read: not Linux)."""
    try:
        lines = swaps.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    except OSError:
        return None
    areas = [line.split()[0] for line in lines if line.split()]
    disks = [a for a in areas if not a.startswith("/dev/zram")]
    if not disks:
        return None
    named = ", ".join(repr(a[:64]) for a in disks[:4]) + (", ..." if len(disks) > 4 else "")
    return (
        f"swap is on ({named}): memory holding tenants' models, inputs and outputs may be "
        "written there; in a confidential VM, run with no swap or encrypted swap "
        "(docs/server.md#memory)"
    )
