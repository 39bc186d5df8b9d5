"""ModelRegistry: models by id and by name, sessions shared between identical models."""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field

from blindai.errors import ModelNotFound, ServerError
from blindai.pipeline.compiled import CompiledPipeline
from blindai.server.runtime import OnnxModel

__all__ = ["ModelEntry", "ModelRegistry", "RegistryFull"]


class RegistryFull(ServerError):
    """Raised when the registry already holds ``max_models`` models (507)."""


@dataclass(frozen=True)
class ModelEntry:
    """One uploaded model: its id, the SHA-256 of its bytes, an optional name, its session, and
    the pipeline it was uploaded with (if any)."""

    model_id: str
    hash: bytes
    name: str | None
    model: OnnxModel = field(repr=False, compare=False)
    pipeline: CompiledPipeline | None = field(default=None, repr=False, compare=False)


class ModelRegistry:
    """Thread-safe map of uploaded models. Identical bytes share one onnxruntime session."""

    def __init__(self, *, max_models: int = 64) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, ModelEntry] = {}
        self._sessions: dict[bytes, OnnxModel] = {}
        self._max = max_models

    def session_for(self, digest: bytes) -> OnnxModel | None:
        """The shared session for a model hash, if one is loaded."""
        with self._lock:
            return self._sessions.get(digest)

    def add(
        self,
        digest: bytes,
        model: OnnxModel,
        name: str | None,
        pipeline: CompiledPipeline | None = None,
    ) -> ModelEntry:
        """Register a compiled model under a fresh UUID4; reuses a session compiled meanwhile."""
        with self._lock:
            if len(self._by_id) >= self._max:
                raise RegistryFull(
                    f"the server holds {self._max} models already; delete one first",
                    status_code=507,
                )
            shared = self._sessions.setdefault(digest, model)
            entry = ModelEntry(str(uuid.uuid4()), digest, name, shared, pipeline)
            self._by_id[entry.model_id] = entry
            return entry

    def get(self, *, model_id: str = "", model_hash: str = "") -> ModelEntry:
        """Find a model by id, or by lowercase SHA-256 hex (the newest upload of those bytes)."""
        with self._lock:
            if model_id:
                entry = self._by_id.get(model_id)
                if entry is not None:
                    return entry
                # a name is accepted where an id is expected (newest upload wins)
                named = [e for e in self._by_id.values() if e.name == model_id]
                if named:
                    return named[-1]
                raise ModelNotFound(f"no model with id {model_id!r}", status_code=404)
            wanted = model_hash.lower()
            matches = [e for e in self._by_id.values() if e.hash.hex() == wanted]
            if not matches:
                raise ModelNotFound(f"no model with hash {model_hash!r}", status_code=404)
            return matches[-1]

    def delete(self, model_id: str) -> ModelEntry:
        """Remove a model; its session goes once no other id shares it."""
        with self._lock:
            entry = self._by_id.pop(model_id, None)
            if entry is None:
                raise ModelNotFound(f"no model with id {model_id!r}", status_code=404)
            if not any(e.hash == entry.hash for e in self._by_id.values()):
                self._sessions.pop(entry.hash, None)
            return entry

    def entries(self) -> list[ModelEntry]:
        """All models, oldest first."""
        with self._lock:
            return list(self._by_id.values())

    def newest(self) -> ModelEntry | None:
        """The most recent upload, if any."""
        with self._lock:
            return next(reversed(self._by_id.values()), None)


def model_digest(model: bytes) -> bytes:
    """SHA-256 of the model bytes: the model's ``hash`` on the wire."""
    return hashlib.sha256(model).digest()
