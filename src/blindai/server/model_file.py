"""A model's bytes as they arrive: hashed and written to a file the server chose.

The file is never named by a client: by default an anonymous memory file (``memfd_create``:
never on a disk, gone when closed); with ``upload_dir`` set, a file created there with mode
0600 and unlinked at once (for a directory on storage the TEE protects, to keep the model's
bytes out of memory while it compiles). onnxruntime opens it through ``/proc/self/fd/N`` and
loads it from there, which takes about a third of the memory of loading from a bytes object
(measured: 1.16x the model against 3.0x for a 500 MB model).

Once its last byte is written, a memory file is sealed (``F_SEAL_WRITE``, ``F_SEAL_GROW``,
``F_SEAL_SHRINK``, then ``F_SEAL_SEAL``): no descriptor of it, in this process or in the
compile guard's child that gets a read-only one (:meth:`ModelFile.reader`), can change the
bytes the digest was taken of. A file on storage cannot be sealed; its child gets a read-only
descriptor too.

Writing and hashing are blocking; callers run :meth:`ModelFile.write` in a worker thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ModelFile"]


_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


class ModelFile:
    """``size`` bytes of model, written in order; :attr:`digest` once complete."""

    def __init__(self, size: int, *, directory: Path | None = None) -> None:
        self.size = size
        self.written = 0
        self._sha = hashlib.sha256()
        self._hashed = True
        self._fd, self.in_memory = _open(directory)
        """``in_memory``: whether the bytes are held in a memory file rather than on storage."""
        self.sealed = False
        """Whether the bytes can no longer change (a complete memory file)."""
        if not size:
            self._seal()

    @classmethod
    def holding(cls, data: bytes | bytearray | memoryview) -> ModelFile:
        """A complete memory file (a private file where there is none) of ``data``, e.g. to
        hand a model received as bytes to the compile guard's child; not hashed (the caller
        has the bytes: :attr:`digest` raises)."""
        file = cls(len(data))
        file._hashed = False
        try:
            file._append([data])
        except BaseException:
            file.close()
            raise
        return file

    @property
    def path(self) -> str:
        """A path onnxruntime can open (this process's descriptor of the file)."""
        return f"/proc/self/fd/{self._fd}"

    def write(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """Append ``pieces`` (hash them, write them); blocking."""
        if self._hashed:
            for piece in pieces:
                self._sha.update(piece)
        self._append(pieces)

    def _append(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
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
        if self.complete:
            self._seal()

    def _seal(self) -> None:
        if not self.in_memory:
            return
        try:
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, _SEALS)
        except OSError:
            return  # a memory file made without sealing (none here): left as it is
        self.sealed = True

    def reader(self) -> int:
        """A new read-only descriptor of the file (the caller closes it), e.g. to hand to
        another process; it cannot be used to write, and a sealed file cannot be changed."""
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    @property
    def complete(self) -> bool:
        """Whether every declared byte has been written."""
        return self.written == self.size

    @property
    def digest(self) -> bytes:
        """SHA-256 of the bytes written so far (of the model, once complete)."""
        if not self._hashed:
            raise ValueError("this file's bytes were not hashed (ModelFile.holding)")
        return self._sha.digest()

    def read(self) -> bytes:
        """The whole file (for callers that need the bytes, e.g. the GPU provider's probe)."""
        return os.pread(self._fd, self.written, 0)

    def close(self) -> None:
        """Release the file (its memory or storage goes with it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _open(directory: Path | None) -> tuple[int, bool]:
    if directory is None and hasattr(os, "memfd_create"):
        try:
            flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
            return os.memfd_create("blindai-model", flags), True
        except OSError:
            pass  # no memfd (some sandboxes): a private temporary file instead
    fd, name = tempfile.mkstemp(prefix="blindai-model-", dir=directory)  # mode 0600
    os.unlink(name)
    return fd, False
