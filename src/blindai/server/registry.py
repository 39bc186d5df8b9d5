"""ModelRegistry: models by id and by name, sessions shared between identical models.

Versions, as the Open Inference Protocol (and Triton) number them: one key's uploads of a name
are its versions 1, 2, 3, ... in upload order (a model without a name is version 1 of its id);
without a version, a name means its newest upload. Each key (owner) numbers its own uploads: a
number never tells a key about another key's uploads. Once every upload of a name is deleted
(and none is under way), its numbers start again at 1, as after a restart: the registry keeps
nothing for a name it no longer holds. A model can be *unloaded*: its onnxruntime
session is released (once no loaded model shares it) but its bytes stay in memory, so that
*loading* it compiles it again; the registry keeps each model's bytes for that.

A model is found by a :class:`ModelRef`: its id, its name (the newest upload with that name),
the SHA-256 of its bytes (the newest upload of those bytes), or nothing (the newest upload).
Every lookup takes a ``visible`` predicate (what the caller may see, from
:mod:`blindai.server.access`): a model it rejects is reported exactly like a missing one; and
the caller's key id (``owner``): a name, a hash, or nothing, means the caller's own uploads
when it has one, so that another key's public upload never takes over what a caller's requests
meant; else the uploads of that name by the key that made the newest one the caller may see
(of those bytes, or any: the newest the caller may see).
Identical bytes share one onnxruntime session and its run queue
(:class:`~blindai.server.batching.ModelQueue`; the settings of the upload that compiled it
hold); the session is unloaded and its queue closed when the last model using them is removed.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from blindai.errors import ModelNotFound, RegistryFull
from blindai.pipeline.compiled import CompiledPipeline
from blindai.server._text import count
from blindai.server.batching import ModelQueue
from blindai.server.model_file import ModelFile
from blindai.server.runtime import LoadedModel

__all__ = ["ModelEntry", "ModelRef", "ModelRegistry", "Visible", "model_digest", "share_key"]


@dataclass(frozen=True)
class ModelEntry:
    """One uploaded model: its id, the SHA-256 of its bytes, an optional name, its session, the
    pipeline it was uploaded with (if any), its version, who uploaded it (a key id; None on an
    open server), whether every key may run it, its size and its upload time (ns since the
    epoch)."""

    model_id: str
    hash: bytes
    name: str | None
    model: LoadedModel = field(repr=False, compare=False)
    pipeline: CompiledPipeline | None = field(default=None, repr=False, compare=False)
    version: int = 1
    """The upload's number among the uploads of its name (1 for a model without a name)."""
    owner: str | None = None
    public: bool = False
    size: int = 0
    uploaded_ns: int = 0
    queue: ModelQueue | None = field(default=None, repr=False, compare=False)
    """The queue its runs go through (shared with the models sharing its session; None: the
    data plane runs the session directly)."""

    @property
    def label(self) -> str:
        """The name the Open Inference Protocol reports: the model's name, else its id."""
        return self.name or self.model_id

    @cached_property
    def share(self) -> bytes:
        """What identical uploads share a session, queue and kept bytes by
        (:func:`share_key` of its owner and hash)."""
        return share_key(self.owner, self.hash)

    def has_version(self, version: str | None) -> bool:
        """Whether ``version`` designates this model: none, its number, or its id."""
        return version in (None, "", str(self.version), self.model_id)


def share_key(owner: str | None, digest: bytes) -> bytes:
    """The key identical uploads of one owner share a session by: the model's SHA-256 on an
    open server (one owner), else a hash of the owner and it. Two keys uploading the same
    bytes get a session each: neither runs with the other's settings or waits in the other's
    queue, and neither can tell from an upload that the other holds those bytes."""
    if owner is None:
        return digest
    return hashlib.sha256(b"blindai-share\0" + owner.encode() + b"\0" + digest).digest()


Visible = Callable[[ModelEntry], bool]
"""Whether the caller of a request may see a model."""


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
        self._sessions: dict[bytes, LoadedModel] = {}
        self._queues: dict[bytes, ModelQueue] = {}
        self._bytes: dict[bytes, bytes | ModelFile] = {}
        self._unloaded: set[str] = set()
        self._unloads: dict[str, int] = {}
        """How many times each model was unloaded (:meth:`load_ticket`)."""
        self._versions: dict[tuple[str | None, str], int] = {}
        """The last version number of each (owner, name) held or being uploaded."""
        self._pending: dict[tuple[str | None, str], int] = {}
        """Reservations of each (owner, name) not yet settled (:meth:`settle`)."""
        self._last_ns = 0
        """The latest upload time given out or registered."""
        self._max = max_models

    def session_for(self, share: bytes) -> LoadedModel | None:
        """The shared session for a :func:`share_key`, if one is loaded."""
        with self._lock:
            return self._sessions.get(share)

    def queue_for(self, share: bytes) -> ModelQueue | None:
        """The run queue of the loaded session for a :func:`share_key`, if any."""
        with self._lock:
            return self._queues.get(share)

    def check_room(self, owner: str | None = None, *, most_owned: int | None = None) -> None:
        """RegistryFull when no model can be added now (by ``owner``, who may hold at most
        ``most_owned`` models when that is given)."""
        with self._lock:
            self._check_room(owner, most_owned)

    def _check_room(self, owner: str | None, most_owned: int | None) -> None:
        if len(self._by_id) >= self._max:
            raise RegistryFull(
                f"the server holds {count(self._max, 'model')}, the most it may "
                f"(--max-models {self._max}); delete one first"
            )
        if most_owned is not None:
            held = sum(1 for e in self._by_id.values() if e.owner == owner)
            if held >= most_owned:
                raise RegistryFull(
                    f"this key holds {count(held, 'model')}, the most one key may "
                    f"(--max-models-per-key {most_owned}); delete one first"
                )

    def reserve(self, name: str | None, owner: str | None = None) -> tuple[int, int]:
        """A new upload's version (the next number of ``owner``'s uploads of its name) and
        upload time (after every model's and every other reservation's, even when the clock
        went back). A failed upload leaves its number unused. Every reservation is
        settled (:meth:`settle`) once the upload is registered or has failed."""
        with self._lock:
            version = self._next_version(name, owner)
            if name:
                self._pending[owner, name] = self._pending.get((owner, name), 0) + 1
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            return version, self._last_ns

    def settle(self, name: str | None, owner: str | None = None) -> None:
        """A reservation of :meth:`reserve` is over: its upload was registered, or failed."""
        if not name:
            return
        with self._lock:
            left = self._pending.pop((owner, name), 0) - 1
            if left > 0:
                self._pending[owner, name] = left
            self._forget_name(owner, name)

    def _forget_name(self, owner: str | None, name: str) -> None:
        """Drop the numbering of a name nothing holds or is uploading any more (an upload and
        delete loop of new names grew it without bound)."""
        if (owner, name) in self._pending:
            return
        if not any(e.owner == owner and e.name == name for e in self._by_id.values()):
            self._versions.pop((owner, name), None)

    def _next_version(self, name: str | None, owner: str | None) -> int:
        if not name:
            return 1
        version = self._versions[owner, name] = self._versions.get((owner, name), 0) + 1
        return version

    def add(
        self,
        digest: bytes,
        model: LoadedModel,
        name: str | None,
        pipeline: CompiledPipeline | None = None,
        *,
        source: bytes | ModelFile | None = None,
        queue: ModelQueue | None = None,
        model_id: str | None = None,
        version: int | None = None,
        owner: str | None = None,
        public: bool = False,
        uploaded_ns: int | None = None,
        most_owned: int | None = None,
    ) -> ModelEntry:
        """Register a compiled model, under a fresh UUID4 unless ``model_id`` is given (a model
        restored from the store); reuses a session (and its queue) compiled meanwhile. Newest
        last.

        ``source``: the model's bytes (or the server's file of them), kept so that an unloaded
        model can be loaded again. ``queue``: the runs' queue for this session. ``version``:
        from :meth:`reserve` or the store (else the next number of ``owner``'s uploads of the
        name). ``most_owned``: how many models ``owner`` may hold (None: no bound but
        ``max_models``).
        """
        with self._lock:
            self._check_room(owner, most_owned)
            if version is None:
                version = self._next_version(name, owner)
            elif name:
                self._versions[owner, name] = max(self._versions.get((owner, name), 0), version)
            share = share_key(owner, digest)
            shared = self._sessions.setdefault(share, model)
            if queue is not None and shared is model:
                self._queues[share] = queue
            entry = ModelEntry(
                model_id or str(uuid.uuid4()),
                digest,
                name,
                shared,
                pipeline,
                version,
                owner=owner,
                public=public,
                size=0 if source is None else _size(source),
                uploaded_ns=(
                    max(time.time_ns(), self._last_ns + 1) if uploaded_ns is None else uploaded_ns
                ),
                queue=self._queues.get(share),
            )
            if entry.model_id in self._by_id:
                raise ValueError(f"model id {entry.model_id} is taken")
            newest = next(reversed(self._by_id.values()), None)
            self._by_id[entry.model_id] = entry
            if newest is not None and entry.uploaded_ns < newest.uploaded_ns:
                # an upload that reserved its time (and version) first but was stored last:
                # in upload order, or a name meant its older version until a restart
                ordered = sorted(self._by_id.values(), key=lambda e: e.uploaded_ns)
                self._by_id = {e.model_id: e for e in ordered}
            self._last_ns = max(self._last_ns, entry.uploaded_ns)
            if source is not None:
                self._bytes.setdefault(share, source)
        if shared is not model:  # an identical model was compiled meanwhile
            model.unload()
            if queue is not None:
                queue.close()
        return entry

    def get(self, ref: ModelRef, visible: Visible, *, owner: str | None = None) -> ModelEntry:
        """The model ``ref`` means among those ``visible`` to the key ``owner``; ModelNotFound
        when there is none."""
        with self._lock:
            entry = self._find(ref, visible, owner)
            named = (
                entry is None
                and ref.version
                and self._find(replace(ref, version=None), visible, owner)
            )
        if named:
            raise ModelNotFound(f"model {ref.key!r} has no version {ref.version!r}")
        if entry is None:
            raise _not_found(ref)
        if not entry.has_version(ref.version):
            raise ModelNotFound(f"model {ref.key!r} has no version {ref.version!r}")
        return entry

    def _find(self, ref: ModelRef, visible: Visible, owner: str | None) -> ModelEntry | None:
        if ref.key:
            found = self._by_id.get(ref.key)
            if found is not None and visible(found):
                return found
            named = self._named(ref.key, visible, owner)
            return next((e for e in reversed(named) if e.has_version(ref.version)), None)
        if ref.hash:
            wanted = ref.hash.lower()

            def same(e: ModelEntry) -> bool:
                return e.hash.hex() == wanted and visible(e)

            return self._newest(lambda e: same(e) and e.owner == owner) or self._newest(same)
        mine = self._newest(lambda e: e.owner == owner and visible(e))
        return mine or self._newest(visible)

    def _newest(self, match: Callable[[ModelEntry], bool]) -> ModelEntry | None:
        return next((e for e in reversed(self._by_id.values()) if match(e)), None)

    def _named(self, name: str, visible: Visible, owner: str | None) -> list[ModelEntry]:
        """The uploads ``name`` means among those ``visible``, oldest first: ``owner``'s own
        when it has any, else those of the key that made the newest one."""
        found = [e for e in self._by_id.values() if e.name == name and visible(e)]
        own = [e for e in found if e.owner == owner]
        if own or not found:
            return own
        newest = found[-1].owner
        return [e for e in found if e.owner == newest]

    def remove(self, ref: ModelRef, visible: Visible, *, owner: str | None = None) -> ModelEntry:
        """Remove the model ``ref`` means among those ``visible`` to ``owner``; its session is
        unloaded once no other loaded model uses it (an unloaded one sharing it kept it held,
        with nothing loaded to run it), its bytes once no other model has them."""
        entry = self.get(ref, visible, owner=owner)
        with self._lock:
            if self._by_id.pop(entry.model_id, None) is None:
                raise _not_found(ref)  # removed meanwhile
            self._unloaded.discard(entry.model_id)
            self._unloads.pop(entry.model_id, None)
            if entry.name:
                self._forget_name(entry.owner, entry.name)
            others = [e for e in self._by_id.values() if e.share == entry.share]
            session = queue = None
            if all(e.model_id in self._unloaded for e in others):
                session = self._sessions.pop(entry.share, None)
                queue = self._queues.pop(entry.share, None)
            if not others:
                self._bytes.pop(entry.share, None)
        if queue is not None:
            queue.close()
        if session is not None:
            session.unload()
        return entry

    def versions(self, key: str, visible: Visible, *, owner: str | None = None) -> list[ModelEntry]:
        """The model with id ``key``, else every upload the name ``key`` means (oldest first)
        among those ``visible`` to ``owner``: its own, else those of the newest one's key."""
        with self._lock:
            found = self._by_id.get(key)
            if found is not None and visible(found):
                return [found]
            return self._named(key, visible, owner)

    def holds(self, model_id: str) -> bool:
        """Whether the model with id ``model_id`` is registered (not deleted)."""
        with self._lock:
            return model_id in self._by_id

    def entries(self, visible: Visible) -> list[ModelEntry]:
        """The models ``visible``, oldest first."""
        with self._lock:
            return [e for e in self._by_id.values() if visible(e)]

    def is_ready(self, entry: ModelEntry) -> bool:
        """Whether the model is loaded (its session can run)."""
        with self._lock:
            return entry.model_id not in self._unloaded

    def ready_count(self) -> int:
        """How many models are loaded."""
        with self._lock:
            return len(self._by_id) - len(self._unloaded)

    def current(self, entry: ModelEntry) -> ModelEntry | None:
        """The registered state of the model ``entry`` was found as (its session and queue
        may have changed since: an unload and a load); None once it is deleted."""
        with self._lock:
            return self._by_id.get(entry.model_id)

    def load_ticket(self, entry: ModelEntry) -> int:
        """What a load of ``entry`` must give :meth:`reload`, taken before it compiles: an
        unload that arrives meanwhile wins over the load (as Triton orders them)."""
        with self._lock:
            return self._unloads.get(entry.model_id, 0)

    def unload(self, entries: list[ModelEntry]) -> None:
        """Mark models unloaded; release each session no loaded model uses any more. A load
        of them under way (:meth:`load_ticket`) leaves them unloaded."""
        released = []
        with self._lock:
            for entry in entries:
                if entry.model_id in self._by_id:
                    self._unloaded.add(entry.model_id)
                    self._unloads[entry.model_id] = self._unloads.get(entry.model_id, 0) + 1
            for entry in entries:
                live = [
                    e
                    for e in self._by_id.values()
                    if e.share == entry.share and e.model_id not in self._unloaded
                ]
                if not live and entry.share in self._sessions:
                    released.append(self._sessions.pop(entry.share))
                    queue = self._queues.pop(entry.share, None)
                    if queue is not None:
                        queue.close()
        for session in released:
            session.unload()

    def source(self, entry: ModelEntry) -> bytes | ModelFile | None:
        """The bytes of a model, kept for loading it again (None if they were not kept)."""
        with self._lock:
            return self._bytes.get(entry.share)

    def reload(
        self,
        entry: ModelEntry,
        model: LoadedModel,
        queue: ModelQueue | None = None,
        *,
        ticket: int | None = None,
    ) -> ModelEntry | None:
        """Mark a model loaded with ``model`` and its ``queue`` (or the session loaded
        meanwhile for its bytes, and that session's queue). ``ticket``: :meth:`load_ticket`
        before the compile; when the model was unloaded since, it stays unloaded, ``model``
        and ``queue`` are released (unless another model loaded with them) and None is
        returned: the unload came last, and wins."""
        with self._lock:
            if entry.model_id not in self._by_id:
                raise ModelNotFound(f"no model with id {entry.model_id!r}")
            if ticket is not None and self._unloads.get(entry.model_id, 0) != ticket:
                loaded = None
                shared = self._sessions.get(entry.share)
            else:
                shared = self._sessions.setdefault(entry.share, model)
                if queue is not None and shared is model:
                    self._queues[entry.share] = queue
                shared_queue = self._queues.get(entry.share)
                loaded = replace(self._by_id[entry.model_id], model=shared, queue=shared_queue)
                self._by_id[entry.model_id] = loaded
                self._unloaded.discard(entry.model_id)
        if shared is not model:  # loaded meanwhile, or unloaded again: not this session
            model.unload()
            if queue is not None:
                queue.close()
        return loaded


def _size(source: bytes | ModelFile) -> int:
    return source.size if isinstance(source, ModelFile) else len(source)


def model_digest(model: bytes) -> bytes:
    """SHA-256 of the model bytes: the model's ``hash`` on the wire."""
    return hashlib.sha256(model).digest()
