"""What the server's limited children share: their size, and their end with the server's.

Used by the compile guard's child (``_compile_worker``), a tokenizer's process
(``_tokenizer_worker``) and a model's host (``_model_host_worker``: :func:`receive_setup`);
imports nothing heavy, so that a child starts fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
from typing import Any

__all__ = [
    "FAILED_EXIT",
    "MAX_SETUP_BYTES",
    "MEMORY_EXIT",
    "end_with_parent",
    "outlive_no_parent",
    "receive_setup",
    "vm_status",
]

MEMORY_EXIT = 3
"""Exit status of a child that ran out of its address space where it could not answer."""
FAILED_EXIT = 4
"""Exit status of a child that failed otherwise without answering (a bug)."""
MAX_SETUP_BYTES = 1 << 16
"""Largest first message (a JSON object of settings) a host child reads."""


def receive_setup(channel: socket.socket) -> tuple[dict[str, Any], int] | None:
    """The first message's settings (one JSON object) and the one descriptor passed with it
    (``SCM_RIGHTS``: the model's or tokenizer's file); None when the server went away or sent
    something else (cut short, another number of descriptors, not JSON)."""
    try:
        data, fds, flags, _ = socket.recv_fds(channel, MAX_SETUP_BYTES, 1)
    except OSError:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1 or not data:
        for fd in fds:
            os.close(fd)
        return None
    try:
        setup = json.loads(data)
    except ValueError:
        os.close(fds[0])
        return None
    return setup, fds[0]


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
