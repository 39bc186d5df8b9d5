"""Reading a file the user named: a regular file only, and a small one when it must be small.

A FIFO named where a file is expected made a read wait for a writer forever, and a device
(``/dev/zero``, ``/dev/urandom``) was read without end, into memory. :func:`open_regular` opens
without waiting (``O_NONBLOCK``, which regular files ignore) and refuses anything but a regular
file; :func:`read_small` also refuses a file over a bound. Both raise ConfigurationError naming
the file (its name escaped when printed, :meth:`~blindai.errors.BlindAIError.diagnostics`).
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from blindai.errors import ConfigurationError

__all__ = ["open_regular", "read_small"]

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_FLAGS |= getattr(os, "O_BINARY", 0)


def open_regular(path: str | os.PathLike[str], what: str, *, buffering: int = -1) -> BinaryIO:
    """``path`` opened for reading in binary, when it is a regular file (after symbolic
    links); ConfigurationError ``cannot read WHAT PATH: ...`` otherwise."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigurationError(
                f"cannot read {what} {path}: not a regular file (a directory, FIFO or device)"
            )
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_small(
    path: str | os.PathLike[str], what: str, *, limit: int, reason: str = "it cannot be one"
) -> bytes:
    """The bytes of the regular file ``path``, refused (ConfigurationError ``WHAT PATH is over
    LIMIT bytes: REASON``) past ``limit``: from its size before anything is read, or once
    ``limit`` bytes are passed for a file that grows as it is read."""
    too_large = f"{what} {path} is over {limit} bytes: {reason}"
    with open_regular(path, what) as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise ConfigurationError(too_large)
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise ConfigurationError(too_large)
    return data
