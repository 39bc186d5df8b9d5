"""The /upload body, streamed: the model goes from its file (or buffer) to the socket in chunks.

The body is the CBOR map ``{length, model_name, optimize[, pipeline], model}`` written as its
prefix (:func:`blindai.protocol.streaming.message_prefix`) followed by the model's bytes, so a
model given as a path is never read into memory whole: the client holds one chunk at a time.
A model given as bytes is sent from that buffer without a copy. Each call of the body factory
starts over (the transport retries once on a stale keep-alive connection).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from blindai.errors import ConfigurationError
from blindai.localfiles import open_regular
from blindai.protocol.streaming import message_prefix

__all__ = ["CHUNK", "ModelSource", "UploadBody", "model_digest", "model_source", "upload_body"]

CHUNK = 1 << 20
"""Bytes read from the model file and written to the socket at a time."""


@dataclass(frozen=True)
class ModelSource:
    """A model to upload: a file path (read as it is sent) or a buffer; ``length`` bytes."""

    length: int
    path: Path | None = None
    data: memoryview | None = None

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The model's bytes from the start, in chunks of at most :data:`CHUNK`."""
        if self.data is not None:
            for i in range(0, self.length, CHUNK):
                yield self.data[i : i + CHUNK]
            return
        assert self.path is not None
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        sent = 0
        with _open(self.path) as f:
            while sent < self.length:
                n = f.readinto(view[: min(CHUNK, self.length - sent)])
                if not n:
                    break
                sent += n
                yield view[:n]  # sent before the next read reuses the buffer
            if sent != self.length or f.read(1):
                raise ConfigurationError(
                    f"model file {self.path} changed size while it was being uploaded"
                )


def _open(path: Path) -> Any:
    return open_regular(path, "model", buffering=0)  # a FIFO put in its place: never waited on


def model_digest(path: str | os.PathLike[str]) -> bytes:
    """The SHA-256 of a model file, read in chunks of :data:`CHUNK` (the digest every server it
    is sent to must answer; the file is never held in memory whole)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with _open(Path(path)) as f:  # a regular file only: a FIFO is refused, not waited on
        try:
            while n := f.readinto(view):
                digest.update(view[:n])
        except OSError as exc:
            raise ConfigurationError(f"cannot read model {path}: {exc.strerror}") from exc
    return digest.digest()


def model_source(model: Any) -> ModelSource:
    """A path (str or PathLike), bytes-like object or onnx ``ModelProto`` as a source."""
    if isinstance(model, bytes | bytearray | memoryview):
        view = memoryview(model).cast("B")
        return ModelSource(len(view), data=view)
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ConfigurationError(f"cannot read model {model}: {exc.strerror}") from exc
        if not path.is_file():
            raise ConfigurationError(f"cannot read model {model}: not a regular file")
        return ModelSource(size, path=path)
    if hasattr(model, "SerializeToString"):  # an onnx ModelProto
        data = model.SerializeToString()
        return ModelSource(len(data), data=memoryview(data))
    raise ConfigurationError(f"unsupported model type {type(model).__name__}")


@dataclass(frozen=True)
class UploadBody:
    """A streamed request body: its length, and a factory of its chunks (each call anew)."""

    length: int
    chunks: Callable[[], Iterator[bytes | memoryview]]


def upload_body(
    fields: dict[str, Any], source: ModelSource, *, progress: bool = False
) -> UploadBody:
    """The /upload body: ``fields`` (``length`` is added), then ``model`` from ``source``.

    ``progress`` shows a tqdm bar on stderr while the model is sent.
    """
    prefix = message_prefix({"length": source.length, **fields}, "model", source.length)
    total = len(prefix) + source.length

    def chunks() -> Iterator[bytes | memoryview]:
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="upload",
            disable=not progress or None,
            leave=False,
        ) as bar:
            yield prefix
            bar.update(len(prefix))
            for chunk in source.chunks():
                yield chunk
                bar.update(len(chunk))

    return UploadBody(total, chunks)
