"""Reading and writing device attributes (Gramine pseudo-files, configfs), never creating them."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_attribute", "write_attribute"]


def write_attribute(path: Path, data: bytes) -> None:
    """Write ``data`` to an existing attribute file; a missing file raises, it is never created."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def read_attribute(path: Path) -> bytes:
    """Read an attribute file (or FIFO) to its end."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
