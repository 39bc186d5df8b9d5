"""Reading one entry file of a store directory, which the host controls.

A name in the directory is the host's: only entry names are opened, a symbolic link is not
followed, a FIFO or a device is refused without blocking, and a name is logged escaped.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag

from blindai.server.store._crypto import CHUNK, HEADER_SIZE, Header, Unsealer, parse_header
from blindai.server.store._records import EntryRefused

__all__ = ["ENTRY_NAME", "header_of", "nonce_of", "open_regular", "read_plain", "shown"]

ENTRY_NAME = re.compile(r"[mk]-[0-9a-f]{32}\.sealed")


def header_of(path: Path) -> Header | None:
    """The header of the entry file ``path`` (None when there is none, or it does not read)."""
    try:
        with open_regular(path) as f:
            return parse_header(f.read(HEADER_SIZE))
    except (EntryRefused, OSError, ValueError):
        return None


def nonce_of(path: Path) -> bytes | None:
    """The nonce of the write that left the entry file ``path`` (None: no header reads)."""
    header = header_of(path)
    return None if header is None else header.nonce


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file of the directory itself: a symbolic
    link is not followed (it could name any file the server may read), and a FIFO or a device
    is refused without blocking or reading (a FIFO without a writer would hang the start)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EntryRefused("a symbolic link, not an entry") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise EntryRefused(f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'other')})")
    return open(fd, "rb", buffering=0)


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_plain(f: Any, unsealer: Unsealer, length: int) -> bytearray:
    """The ``length`` bytes of ciphertext read from ``f``, decrypted and authenticated."""
    plain = bytearray()
    left = length
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise EntryRefused("truncated")
        left -= len(chunk)
        plain += unsealer.update(chunk)
    try:
        unsealer.finish()
    except InvalidTag:
        raise EntryRefused("authentication failed (altered, or sealed with another key)") from None
    return plain


def shown(name: str) -> str:
    """A file name as logged: an entry's name as is, any other escaped and quoted."""
    return name if ENTRY_NAME.fullmatch(name) else ascii(name)
