"""Replicas kept alike, protocol-free: the models a replica must hold, and what export gives.

* :class:`RequiredModels`: ``--require-models FILE`` (SHA-256 hex digests, one a line) and
  ``--require-model-count N``; until the registry holds them, ``/v2/health/ready`` answers
  400 (the Open Inference Protocol's "not ready"), so a Kubernetes readiness probe keeps the
  replica out of its Service.
* :class:`UploadOptions`: with ``--allow-model-export``, how each model was uploaded (its
  optimisation setting and pipeline), so that ``POST /export`` can give a client syncing
  another replica the model as it was uploaded (its bytes are the registry's, kept for the
  model repository's load anyway). Without it export is refused (PermissionDenied, 403).

* :class:`ModelExport`: what ``POST /export`` sends, the model's bytes piece by piece (from
  the kept bytes, or a read-only descriptor of the server's file of them): an export holds
  1 MiB of the model at a time, and the event loop never reads, copies or encrypts it whole
  (a 134 MB export held up other clients' inferences for 0.7 s, and each one in flight took
  about 3 times the model's size).

The routes are :mod:`blindai.server.protocols.v06.replication`'s.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blindai.errors import ConfigurationError
from blindai.localfiles import open_regular
from blindai.protocol.replication import ExportedModel, export_frame
from blindai.server.model_file import ModelFile
from blindai.server.registry import ModelEntry
from blindai.server.settings import ServerSettings

__all__ = [
    "EXPORT_CHUNK",
    "MAX_REQUIRED_FILE_BYTES",
    "ModelExport",
    "RequiredModels",
    "UploadOptions",
    "required_models",
]

_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
MAX_REQUIRED_FILE_BYTES = 1 << 20
"""Largest ``--require-models`` file read."""


@dataclass(frozen=True)
class RequiredModels:
    """The models a replica must hold before it is ready: these digests, and at least
    ``count`` models in all."""

    digests: frozenset[bytes] = frozenset()
    count: int = 0

    @classmethod
    def parse(cls, text: str, *, count: int = 0, source: str = "the list") -> RequiredModels:
        """Digests from ``text``: one SHA-256 in hex first on each line; text after it, blank
        lines and ``#`` comments are ignored (``blindai upload``'s ``sha256`` lines fit)."""
        digests = set()
        # lines as an editor numbers them (splitlines also breaks at form feeds, \x1c...)
        for number, line in enumerate(text.split("\n"), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0] == "sha256":  # "sha256   <hex>" as blindai upload prints
                words = words[1:] or [""]
            if not _DIGEST.fullmatch(words[0]):
                found = ascii(words[0][:80]) if words[0] else "nothing"
                raise ConfigurationError(
                    f"{source}, line {number}: expected a SHA-256 in hex (64 digits), found {found}"
                )
            digests.add(bytes.fromhex(words[0]))
        return cls(frozenset(digests), count)

    @classmethod
    def from_file(cls, path: Path, *, count: int = 0) -> RequiredModels:
        """Read ``path`` (at most 1 MiB) with :meth:`parse`."""
        with open_regular(path, "--require-models file") as f:  # a FIFO would hang the start
            try:
                data = f.read(MAX_REQUIRED_FILE_BYTES + 1)
            except OSError as exc:
                raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
        if len(data) > MAX_REQUIRED_FILE_BYTES:
            raise ConfigurationError(f"{path} is over 1 MiB")
        try:
            text = data.decode("utf-8-sig")  # a byte order mark (Windows editors) is no text
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{path} is not UTF-8 text") from exc
        return cls.parse(text, count=count, source=str(path))

    def missing(self, held: Iterable[bytes]) -> int:
        """How many required models (digests, or the count) are still missing."""
        digests = list(held)
        absent = len(self.digests - set(digests))
        return max(absent, self.count - len(digests))


def required_models(settings: ServerSettings) -> RequiredModels | None:
    """What a replica must hold to be ready (``--require-models``, ``--require-model-count``);
    None: nothing."""
    if settings.require_models is not None:
        return RequiredModels.from_file(settings.require_models, count=settings.require_model_count)
    if settings.require_model_count:
        return RequiredModels(count=settings.require_model_count)
    return None


class UploadOptions:
    """How each model was uploaded (optimisation, pipeline map), by model id (thread-safe), for
    export; bounded by the registry's ``max_models`` since each entry goes with its model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, tuple[bool, dict[str, Any] | None]] = {}

    def keep(self, model_id: str, *, optimize: bool, pipeline: dict[str, Any] | None) -> None:
        """Keep the options of a model just registered."""
        with self._lock:
            self._by_id[model_id] = (optimize, pipeline)

    def drop(self, model_id: str) -> None:
        """Forget a deleted model's options."""
        with self._lock:
            self._by_id.pop(model_id, None)

    def get(self, model_id: str) -> tuple[bool, dict[str, Any] | None] | None:
        """``(optimize, pipeline)`` of a model, if kept."""
        with self._lock:
            return self._by_id.get(model_id)


EXPORT_CHUNK = 1 << 20
"""Bytes of a model an export reads and sends at a time."""


@dataclass
class ModelExport:
    """A model leaving through ``POST /export``: its reply is ``head``, the model's ``size``
    bytes (:meth:`piece` by piece), ``tail``. The bytes are the registry's (``data``) or read
    from ``fd``, a read-only descriptor of the server's file of them that this object owns (so
    a delete meanwhile cannot make it read another file): :meth:`close` it."""

    model_id: str
    head: bytes
    tail: bytes
    size: int
    data: bytes | None = field(default=None, repr=False)
    fd: int | None = None

    @classmethod
    def of(
        cls,
        entry: ModelEntry,
        source: bytes | ModelFile,
        optimize: bool,
        pipeline: dict[str, Any] | None,
    ) -> ModelExport:
        """The export of ``entry`` uploaded with ``optimize`` and ``pipeline``, its bytes
        ``source``; OSError when the server's file of them cannot be opened."""
        meta = ExportedModel(entry.model_id, b"", entry.name, entry.hash, optimize, pipeline)
        size = source.size if isinstance(source, ModelFile) else len(source)
        head, tail = export_frame(meta, size)
        if not isinstance(source, ModelFile):
            return cls(entry.model_id, head, tail, len(source), data=source)
        fd = source.reader()  # its own descriptor: the model may be deleted meanwhile
        return cls(entry.model_id, head, tail, source.size, fd=fd)

    @property
    def length(self) -> int:
        """The whole reply's length."""
        return len(self.head) + self.size + len(self.tail)

    def piece(self, offset: int) -> bytes:
        """At most :data:`EXPORT_CHUNK` of the model's bytes from ``offset`` (blocking: a file
        is read)."""
        count = min(EXPORT_CHUNK, self.size - offset)
        if self.data is not None:
            return self.data[offset : offset + count]
        if self.fd is None:
            raise OSError("the export was closed")
        data = os.pread(self.fd, count, offset)
        if len(data) != count:
            raise OSError("the model's file is shorter than the model")
        return data

    def close(self) -> None:
        """Release the descriptor, if any."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.close()  # a reply never started (its client gone first) closes nothing itself
