"""Reading and writing device attributes (Gramine pseudo-files, configfs), never creating them.

What lies at those paths is the host's: an attribute that is a symbolic link is not followed, a
directory or device node is refused, a read stops past ``limit`` bytes, and a FIFO (the test
doubles' way of playing the kernel) is waited on for at most ``timeout`` seconds. Each refusal is
an :class:`OSError` naming the path, as a missing file is, so callers turn all of them into one
error of their own.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from pathlib import Path

__all__ = ["ATTRIBUTE_MAX_BYTES", "ATTRIBUTE_TIMEOUT_S", "read_attribute", "write_attribute"]

#: Most bytes read from one attribute: far above any quote, report or certificate table a TEE
#: gives (configfs-tsm caps ``outblob`` at 32 KiB).
ATTRIBUTE_MAX_BYTES = 1 << 20
#: Longest wait for the other end of an attribute that is a FIFO, in seconds.
ATTRIBUTE_TIMEOUT_S = 10.0


def write_attribute(path: Path, data: bytes, *, timeout: float = ATTRIBUTE_TIMEOUT_S) -> None:
    """Write ``data`` to an existing attribute file; a missing file raises, it is never created."""
    deadline = time.monotonic() + timeout
    fd, fifo = _open_for_write(path, deadline)
    try:
        view = memoryview(data)
        while view:
            if fifo:
                _wait(fd, select.POLLOUT, deadline, path)
            try:
                written = os.write(fd, view)
            except BlockingIOError:  # a FIFO woken up with no room after all
                continue
            view = view[written:]
    finally:
        os.close(fd)


def read_attribute(
    path: Path, *, limit: int = ATTRIBUTE_MAX_BYTES, timeout: float = ATTRIBUTE_TIMEOUT_S
) -> bytes:
    """Read an attribute file (or FIFO) to its end: at most ``limit`` bytes, else OSError."""
    deadline = time.monotonic() + timeout
    fd, fifo = _open(path, os.O_RDONLY)
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            if fifo:
                _wait(fd, select.POLLIN, deadline, path)
            try:
                chunk = os.read(fd, min(65536, limit + 1 - size))
            except BlockingIOError:  # a FIFO woken up with nothing to read after all
                continue
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
            chunks.append(chunk)
    finally:
        os.close(fd)


def _open(path: Path, flags: int) -> tuple[int, bool]:
    """Open without following a link or blocking on a FIFO: (descriptor, whether a FIFO).

    Only regular files (configfs and Gramine attributes are) and FIFOs are kept. A file's reads
    may block in the kernel (``outblob`` is produced on read), never on the other end's pace.
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
        return fd, stat.S_ISFIFO(mode)
    os.close(fd)
    kind = "a directory" if stat.S_ISDIR(mode) else "a device or socket"
    raise OSError(errno.EINVAL, f"{kind}, not an attribute file", str(path))


def _open_for_write(path: Path, deadline: float) -> tuple[int, bool]:
    """Open for writing; a FIFO nobody reads yet (ENXIO) is retried until ``deadline``."""
    while True:
        try:
            return _open(path, os.O_WRONLY)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(errno.ETIMEDOUT, "no answer in time", str(path)) from None
        time.sleep(0.001)


def _wait(fd: int, event: int, deadline: float, path: Path) -> None:
    """Wait until the FIFO ``fd`` is ready for ``event``, or raise TimeoutError at ``deadline``."""
    poller = select.poll()
    poller.register(fd, event)
    remaining_ms = int((deadline - time.monotonic()) * 1000)
    if remaining_ms <= 0 or not poller.poll(remaining_ms):
        raise TimeoutError(errno.ETIMEDOUT, "no answer in time", str(path))
