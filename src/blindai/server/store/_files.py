"""Crash-safe file operations: what returned is on disk, a crash leaves the old file or the new.

* :func:`write_atomic`: a temporary file in the same directory (``O_EXCL``, mode 0600),
  written, ``fsync``-ed and closed, renamed over the target, then the directory ``fsync``-ed;
* :func:`write_new`: the same, but linked to the target only if no file has that name
  (``link`` fails with EEXIST otherwise: a compare-and-swap on the name being free; renamed in
  after a check where the file system has no hard links);
* :func:`unlink_durable`: unlink, then ``fsync`` the directory;
* :func:`remove_temporaries`: at start-up, the temporary files of writes that never finished.

A temporary file is never read as an entry: its name starts with :data:`TEMP_PREFIX`.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "TEMP_PREFIX",
    "fsync_directory",
    "remove_temporaries",
    "unlink_durable",
    "write_atomic",
    "write_new",
]

TEMP_PREFIX = ".tmp-"
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""How ``link`` says the file system has no hard links (our own file: not protected_hardlinks)."""


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _temporary(directory: Path, chunks: Iterable[bytes]) -> Path:
    """A new temporary file in ``directory`` holding ``chunks``, ``fsync``-ed (mode 0600)."""
    temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_all(fd, chunks)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace ``path`` with the concatenated ``chunks``, durably and atomically (mode 0600).

    On any error the temporary file is removed and ``path`` is untouched.
    """
    temp = _temporary(path.parent, chunks)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_new(path: Path, chunks: Iterable[bytes]) -> None:
    """Make ``path`` hold the concatenated ``chunks``, durably and atomically (mode 0600), if
    no file has that name: FileExistsError otherwise (another process made it first), and
    ``path`` is untouched.

    On a file system without hard links (exFAT, FAT, SMB shares without Unix extensions:
    ``link`` fails with EPERM or EOPNOTSUPP) the file is renamed in if the name is free when
    checked, as :func:`write_atomic` does: a file another process makes between that check and
    the rename is replaced there."""
    temp = _temporary(path.parent, chunks)
    try:
        try:
            os.link(temp, path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.rename(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def unlink_durable(path: Path) -> bool:
    """Remove ``path`` and make the removal durable; False if it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_directory(path.parent)
    return True


def remove_temporaries(directory: Path) -> int:
    """Remove what unfinished writes left in ``directory``; returns how many files."""
    removed = 0
    for entry in directory.iterdir():
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed += 1
    if removed:
        fsync_directory(directory)
    return removed
