"""The manifest's compare-and-swap: the file on disk is checked and replaced under its own lock.

A write of the manifest must replace the one this server read or wrote last, and no other (one
another server process wrote over it would lose that process's writes). The check and the
replacement run while the manifest file is locked (``flock``, exclusive): :func:`held` opens
the file the name ``manifest`` gives, locks it, and checks that the name still gives that file
(a writer that waited while another replaced it locks the new one, and finds its nonce changed);
the new manifest is then renamed over it while the lock is held. The file is opened for writing
to be locked (never written through that descriptor): NFSv4 refuses an exclusive ``flock`` on a
descriptor open for reading only. So two server processes that both write (the host removed
``.lock`` and started a second on the directory) cannot both pass the check: the second to take
the lock finds the first's manifest. With no manifest on disk, the new one is linked in only if
the name is still free (:func:`~._files.write_new`).

Not covered: a process that writes the directory without taking these locks (an older server
version, the host itself), a file system whose ``flock`` does not reach other machines (some
network file systems) with servers on two machines, and two first manifests made at once on a
file system without hard links (there the first is renamed in if its name is free when checked).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from blindai.server.store._crypto import HEADER_SIZE, parse_header

__all__ = ["LOCK_WAIT_S", "OnDisk", "held"]

LOCK_WAIT_S = 10.0
"""How long a write waits for another process's lock on the manifest before it is refused
(a write holds it for one manifest's write and ``fsync``: milliseconds)."""


@dataclass(frozen=True)
class OnDisk:
    """The manifest on disk while it is held: whether a file has its name, and the nonce of its
    header (None: none reads)."""

    exists: bool
    nonce: bytes | None


@contextlib.contextmanager
def held(path: Path) -> Iterator[OnDisk]:
    """The manifest file ``path`` gives, locked until the block ends (a regular file; a link or
    another kind of file is not opened, and holds no lock)."""
    fd = _locked(path)
    try:
        if fd is None:
            yield OnDisk(os.path.lexists(path), None)
        else:
            yield OnDisk(True, _nonce(fd))
    finally:
        if fd is not None:
            os.close(fd)


def _open(path: Path) -> int:
    """``path`` opened for writing where it may be: an NFSv4 client emulates ``flock`` with a
    byte-range lock on the server and refuses an exclusive one (EBADF) on a descriptor not open
    for writing. Read-only where writing is refused (a manifest left 0400: the lock then holds
    on a local file system, as before)."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        return os.open(path, os.O_RDWR | flags)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR):
            raise
    return os.open(path, os.O_RDONLY | flags)


def _locked(path: Path) -> int | None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fd = _open(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symbolic link: not followed
                return None
            raise
        try:
            mine = os.fstat(fd)
            if not stat.S_ISREG(mine.st_mode):
                os.close(fd)
                return None
            _lock(fd, deadline)
            named = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:  # removed while this waited: there is none now
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)  # replaced while this waited: lock the one there now


def _lock(fd: int, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError(
                    errno.EWOULDBLOCK, "the store's manifest stays locked by another process"
                ) from None
            time.sleep(0.001)


def _nonce(fd: int) -> bytes | None:
    try:
        return parse_header(os.pread(fd, HEADER_SIZE, 0)).nonce
    except (OSError, ValueError):
        return None
