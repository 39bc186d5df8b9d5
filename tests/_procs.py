"""The children of a process, read from /proc (Linux), for tests that count the processes a
server or a model host pool started."""

from __future__ import annotations

import os

__all__ = ["children"]


def children(pid: int, *, running: bytes = b"") -> set[int]:
    """The processes whose parent is ``pid``, whichever of its threads started them: each one
    whose ``/proc/PID/stat`` names ``pid`` as its parent (the field after the state; the
    command name before them, in parentheses, may hold spaces and parentheses itself). With
    ``running``, only those whose command line holds it (``b"_model_host_worker"``: model
    hosts; ``b"_compile_worker"``: compile checks). A process that ends meanwhile is passed
    over. The per-thread ``/proc/PID/task/T/children`` lists missed a child while it moved
    from a thread that had just ended to another (a test once saw no spare)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent != pid:
                continue
            if running:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if running not in cmdline.read():
                        continue
        except OSError:  # ended meanwhile (FileNotFoundError, ProcessLookupError)
            continue
        found.add(int(entry))
    return found
