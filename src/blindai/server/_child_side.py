"""What the server's limited children share: their size, and their end with the server's.

Used by the compile guard's child (``_compile_worker``) and a tokenizer's process
(``_tokenizer_worker``); imports nothing heavy, so that a child starts fast.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket

__all__ = ["FAILED_EXIT", "MEMORY_EXIT", "end_with_parent", "outlive_no_parent", "vm_status"]

MEMORY_EXIT = 3
"""Exit status of a child that ran out of its address space where it could not answer."""
FAILED_EXIT = 4
"""Exit status of a child that failed otherwise without answering (a bug)."""


def vm_status(key: str) -> int:
    """A ``VmXxx`` field of /proc/self/status, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def end_with_parent(channel: socket.socket) -> None:
    """Be ended by the kernel once the parent's end of the socket closes, while nothing else
    comes on it (a job is being worked on): a server that died while this child compiled left
    it compiling, for as long as the job takes. The socket signals its owner (``O_ASYNC``) when
    its peer closes, and ``SIGIO`` left to its default action terminates the process: no Python
    code need run for it (onnx's shape inference and the tokenizers library hold the GIL for
    seconds; a watching thread did not run meanwhile). A parent gone before this was set is
    seen here. Undone by :func:`outlive_no_parent` before the child reads again."""
    fd = channel.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    if select.select([channel], [], [], 0)[0]:  # its end, read as ready (nothing else comes)
        os._exit(0)


def outlive_no_parent(channel: socket.socket) -> None:
    """Stop :func:`end_with_parent`'s signal: the child reads its socket again (each request
    would signal it), and sees its end there."""
    fd = channel.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_ASYNC)
    signal.signal(signal.SIGIO, signal.SIG_IGN)
