"""A model's bytes as they arrive: hashed and written to a file the server chose.

The file is never named by a client: by default an anonymous memory file (``memfd_create``:
never on a disk, gone when closed); with ``upload_dir`` set, a file created there with mode
0600 and unlinked at once (for a directory on storage the TEE protects, to keep the model's
bytes out of memory while it compiles). onnxruntime opens it through ``/proc/self/fd/N`` and
loads it from there, which takes about a third of the memory of loading from a bytes object
(measured: 1.16x the model against 3.0x for a 500 MB model).

Writing and hashing are blocking; callers run :meth:`ModelFile.write` in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ModelFile"]


class ModelFile:
    """``size`` bytes of model, written in order; :attr:`digest` once complete."""

    def __init__(self, size: int, *, directory: Path | None = None) -> None:
        self.size = size
        self.written = 0
        self._sha = hashlib.sha256()
        self._fd, self.in_memory = _open(directory)
        """``in_memory``: whether the bytes are held in a memory file rather than on storage."""

    @property
    def path(self) -> str:
        """A path onnxruntime can open (this process's descriptor of the file)."""
        return f"/proc/self/fd/{self._fd}"

    def write(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """Append ``pieces`` (hash them, write them); blocking."""
        for piece in pieces:
            self._sha.update(piece)
        views = [memoryview(p).cast("B") for p in pieces]
        total = sum(v.nbytes for v in views)
        if self.written + total > self.size:
            raise ValueError("more bytes than the model's declared size")
        while views:
            done = os.writev(self._fd, views)
            self.written += done
            while views and done >= views[0].nbytes:
                done -= views[0].nbytes
                views.pop(0)
            if views and done:
                views[0] = views[0][done:]

    @property
    def complete(self) -> bool:
        """Whether every declared byte has been written."""
        return self.written == self.size

    @property
    def digest(self) -> bytes:
        """SHA-256 of the bytes written so far (of the model, once complete)."""
        return self._sha.digest()

    def read(self) -> bytes:
        """The whole file (for callers that need the bytes, e.g. the GPU provider's probe)."""
        return os.pread(self._fd, self.written, 0)

    def close(self) -> None:
        """Release the file (its memory or storage goes with it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def _open(directory: Path | None) -> tuple[int, bool]:
    if directory is None and hasattr(os, "memfd_create"):
        try:
            return os.memfd_create("blindai-model", os.MFD_CLOEXEC), True
        except OSError:
            pass  # no memfd (some sandboxes): a private temporary file instead
    fd, name = tempfile.mkstemp(prefix="blindai-model-", dir=directory)  # mode 0600
    os.unlink(name)
    return fd, False
