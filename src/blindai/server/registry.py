"""ModelRegistry: models by id and by name, sessions shared between identical models.

A model is found by a :class:`ModelRef`: its id, its name (the newest upload with that name),
the SHA-256 of its bytes (the newest upload of those bytes), or nothing (the newest upload).
Identical bytes share one onnxruntime session; the session is unloaded when the last model
using it is removed.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from blindai.errors import ModelNotFound, RegistryFull
from blindai.pipeline.compiled import CompiledPipeline
from blindai.server._text import count
from blindai.server.runtime import OnnxModel

__all__ = ["ModelEntry", "ModelRef", "ModelRegistry", "model_digest"]


@dataclass(frozen=True)
class ModelEntry:
    """One uploaded model: its id, the SHA-256 of its bytes, an optional name, its session, and
    the pipeline it was uploaded with (if any)."""

    model_id: str
    hash: bytes
    name: str | None
    model: OnnxModel = field(repr=False, compare=False)
    pipeline: CompiledPipeline | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ModelRef:
    """Which model a request means.

    ``key``: an id, or else a name (the newest upload with that name). ``hash``: the lowercase
    SHA-256 hex of the model's bytes (the newest upload of those bytes). Neither: the newest
    upload. ``version``, when given, must be the model's id (the v2 protocol's versions).
    """

    key: str = ""
    hash: str = ""
    version: str | None = None


def _not_found(ref: ModelRef) -> ModelNotFound:
    if ref.key:
        return ModelNotFound(f"no model with id or name {ref.key!r}")
    if ref.hash:
        return ModelNotFound(f"no model with hash {ref.hash!r}")
    return ModelNotFound("no model has been uploaded to this server")


class ModelRegistry:
    """Thread-safe map of uploaded models, oldest first."""

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
                    f"the server holds {count(self._max, 'model')}, the most it may "
                    f"(--max-models {self._max}); delete one first"
                )
            shared = self._sessions.setdefault(digest, model)
            entry = ModelEntry(str(uuid.uuid4()), digest, name, shared, pipeline)
            self._by_id[entry.model_id] = entry
        if shared is not model:  # an identical model was compiled meanwhile
            model.unload()
        return entry

    def get(self, ref: ModelRef) -> ModelEntry:
        """The model ``ref`` means; ModelNotFound when there is none."""
        with self._lock:
            entry = self._find(ref)
        if entry is None:
            raise _not_found(ref)
        if ref.version is not None and ref.version != entry.model_id:
            raise ModelNotFound(
                f"model {ref.key!r} has no version {ref.version!r} (its version is its id)"
            )
        return entry

    def _find(self, ref: ModelRef) -> ModelEntry | None:
        if ref.key:
            found = self._by_id.get(ref.key)
            if found is not None:
                return found
            return self._newest(lambda e: e.name == ref.key)
        if ref.hash:
            wanted = ref.hash.lower()
            return self._newest(lambda e: e.hash.hex() == wanted)
        return self._newest(lambda e: True)

    def _newest(self, match: Callable[[ModelEntry], bool]) -> ModelEntry | None:
        return next((e for e in reversed(self._by_id.values()) if match(e)), None)

    def remove(self, ref: ModelRef) -> ModelEntry:
        """Remove the model ``ref`` means; its session is unloaded once no other model uses it."""
        entry = self.get(ref)
        with self._lock:
            if self._by_id.pop(entry.model_id, None) is None:
                raise _not_found(ref)  # removed meanwhile
            shared = any(e.hash == entry.hash for e in self._by_id.values())
            if not shared:
                self._sessions.pop(entry.hash, None)
        if not shared:
            entry.model.unload()
        return entry


def model_digest(model: bytes) -> bytes:
    """SHA-256 of the model bytes: the model's ``hash`` on the wire."""
    return hashlib.sha256(model).digest()
