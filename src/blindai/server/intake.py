"""Uploads: a model checked, compiled, stored and registered.

An upload is compiled (or reuses the session of identical bytes the same owner loaded), its
pipeline checked against it, then written to the sealed store (when there is one) before it is
registered and acknowledged (:meth:`Intake.upload`). Compiling runs in the compile workers,
each key's uploads taking turns with the other keys', through the data plane's compiler
(:meth:`Compiler.checked <blindai.server.compiler.Compiler.checked>`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from blindai.errors import InvalidInput, PayloadTooLarge, ServerError
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import CompiledPipeline
from blindai.protocol import codec
from blindai.server._text import limit
from blindai.server._workers import WorkerPool
from blindai.server.abandon import Abandon, ClientGone
from blindai.server.access import Principal
from blindai.server.batching import ModelQueue
from blindai.server.compiler import Compiled, Compiler, released_if_cancelled
from blindai.server.metrics import Metrics
from blindai.server.model_file import ModelFile
from blindai.server.registry import ModelEntry, ModelRegistry, model_digest, share_key
from blindai.server.replication import UploadOptions
from blindai.server.runtime import LoadedModel
from blindai.server.schedules import Schedule, Schedules
from blindai.server.settings import ModelSettings, ServerSettings
from blindai.server.store import SealedStore, StoredModel

__all__ = ["Intake", "compiling"]

_T = TypeVar("_T")
_log = logging.getLogger("blindai.server")


@dataclass(frozen=True)
class _Upload:
    """What an upload asks for (see :meth:`Intake.upload`)."""

    model: bytes | ModelFile
    name: str | None
    optimize: bool
    caller: Principal
    public: bool
    pipeline: Pipeline | None
    settings: ModelSettings
    abandon: Abandon


@dataclass
class _Session:
    """The session an upload registers with: ``fresh``, compiled for it (not shared)."""

    share: bytes
    model: LoadedModel
    queue: ModelQueue | None
    fresh: bool


class Intake:
    """Checks, compiles, stores and registers uploaded models."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        *,
        store: SealedStore | None,
        metrics: Metrics,
        exports: UploadOptions | None,
        schedules: Schedules,
        compiler: Compiler,
        pool: WorkerPool,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.exports = exports
        self.schedules = schedules
        self.compiler = compiler
        self.pool = pool
        """The compile workers (compiling, and writing to the store)."""

    def check_model_size(self, size: int) -> None:
        """PayloadTooLarge when a model of ``size`` bytes is over ``max_model_bytes``."""
        most = self.settings.max_model_bytes
        if size > most:
            raise PayloadTooLarge(
                f"the model is {size} bytes, over {limit(most, 'max_model_bytes')}"
            )

    async def upload(
        self,
        model: bytes | ModelFile,
        *,
        name: str | None,
        optimize: bool,
        caller: Principal,
        public: bool = False,
        pipeline: Pipeline | None = None,
        settings: ModelSettings | None = None,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> ModelEntry:
        """Compile (or reuse) a model, check its pipeline against it (InvalidInput when they do
        not fit), keep both in the store, and register the model under a fresh id owned by
        ``caller``; ``public``: every valid API key may run it. ``disconnected()`` completes
        when the client goes away: until the model is registered, that stops the upload
        (its compile child killed, nothing kept) with ClientGone.

        ``model``: its bytes, or the server's file of them (streamed as it arrived).
        ``settings`` (how it runs: threads, runs at once, batching) default to the server's;
        batching asked for a model that cannot be batched is InvalidInput. Identical bytes
        already loaded by the same owner share that session, with the settings they were loaded
        with (another key's identical upload has its own: ``registry.share_key``).
        """
        abandon = Abandon()
        watch = None
        if disconnected is not None:
            watch = asyncio.ensure_future(disconnected())
            watch.add_done_callback(lambda w: None if w.cancelled() else abandon.set())
        try:
            return await self._upload(
                _Upload(
                    model,
                    name,
                    optimize,
                    caller,
                    public,
                    pipeline,
                    settings or ModelSettings(),
                    abandon,
                )
            )
        except ClientGone:
            _log.info("an upload was stopped: its client went away before it was registered")
            raise
        finally:
            if watch is not None:
                watch.cancel()

    async def _upload(self, upload: _Upload) -> ModelEntry:
        most_owned = self._admitted(upload.model, upload.caller)
        started = time.perf_counter()
        digest = _digest(upload.model)
        schedule = self.schedules.schedule(upload.settings, optimize=upload.optimize)
        session = await self._session(upload, digest, schedule)
        try:
            entry = await self._kept(upload, digest, schedule, session, most_owned)
        except BaseException:
            self._dropped(session)
            raise
        self.metrics.upload_seconds.observe(time.perf_counter() - started)
        return entry

    def _admitted(self, model: bytes | ModelFile, caller: Principal) -> int | None:
        """Check the model's size and that ``caller`` may hold one more model; how many it may
        hold (:meth:`_most_owned`)."""
        size = _size(model)
        self.check_model_size(size)
        if not size:
            raise InvalidInput("the model is empty")
        most_owned = self._most_owned(caller)
        self.registry.check_room(caller.key_id, most_owned=most_owned)
        return most_owned

    async def _session(self, upload: _Upload, digest: bytes, schedule: Schedule) -> _Session:
        """The session of identical bytes ``upload.caller`` loaded, else one compiled now."""
        share = share_key(upload.caller.key_id, digest)
        shared = self.registry.session_for(share)
        if shared is not None:
            return _Session(share, shared, None, fresh=False)
        compiled, queue = await self._checked(upload, schedule)
        return _Session(share, compiled, queue, fresh=True)

    async def _checked(self, upload: _Upload, schedule: Schedule) -> Compiled:
        """The upload checked and compiled in a compile worker (released when the awaiting
        task is cancelled meanwhile)."""
        # uploads waiting for a compile worker take turns between keys, as runs do
        return await released_if_cancelled(
            self._compiling(
                functools.partial(
                    self.compiler.checked,
                    upload.model,
                    upload.optimize,
                    schedule,
                    upload.abandon,
                ),
                upload.caller,
            ),
            upload.abandon,
        )

    async def _kept(
        self,
        upload: _Upload,
        digest: bytes,
        schedule: Schedule,
        session: _Session,
        most_owned: int | None,
    ) -> ModelEntry:
        """The compiled upload with its pipeline, stored and registered."""
        steps = None
        if upload.pipeline is not None:
            steps = await self._compiling(
                functools.partial(
                    self.compiler.pipeline, upload.pipeline, session.model, upload.abandon
                ),
                upload.caller,
            )
        upload.abandon.check()  # the client went away while it compiled: nothing to keep
        name, owner = upload.name, upload.caller.key_id
        version, uploaded_ns = self.registry.reserve(name, owner)
        try:
            record = _record(upload, digest, version=version, uploaded_ns=uploaded_ns)
            await self.persist(record, upload.model)
            await self._still_shared(upload, schedule, session, record)
            wire = None if upload.pipeline is None else upload.pipeline.to_wire()
            try:
                entry = self.register(
                    record,
                    upload.model,
                    session.model,
                    steps,
                    wire,
                    session.queue,
                    most_owned=most_owned,
                )
            except BaseException:  # its stored copy must not come back (the registry was full)
                await self.unstore(record)
                raise
            self.schedules.own[entry.model_id] = schedule
            if session.fresh and entry.model is session.model:
                # the first of identical uploads to register keeps its session, which runs
                # with its settings (those of a model unloaded before held, at a re-compile)
                self.schedules.adopt(session.share, schedule)
        finally:  # registered, or failed: the name's numbering may go with its last model
            self.registry.settle(name, owner)
        return entry

    async def _still_shared(
        self, upload: _Upload, schedule: Schedule, session: _Session, record: StoredModel
    ) -> None:
        """Compile the upload after all when the session it shares is gone."""
        if session.fresh or self.registry.session_for(session.share) is session.model:
            return
        # the identical model whose session this upload shares was deleted (or
        # unloaded) meanwhile, and its session with it: registered with it, this
        # upload answered every run 404 ("deleted") while the index said READY
        try:
            session.model, session.queue = await self._checked(upload, schedule)
        except BaseException:
            await self.unstore(record)
            raise
        session.fresh = True

    def _dropped(self, session: _Session) -> None:
        """Release the session a failed upload compiled (not one it shared)."""
        if not session.fresh:
            return
        if self.registry.session_for(session.share) is None:
            self.schedules.by_share.pop(session.share, None)
        if session.queue is not None:
            session.queue.close()
        session.model.unload()

    async def persist(self, record: StoredModel, model: bytes | ModelFile) -> None:
        """Write ``record`` with ``model``'s bytes to the store (a streamed model is read back
        from its file for it, in a worker: the store seals one entry in memory)."""
        if self.store is None:
            return
        store = self.store

        def put() -> None:
            data = model.read() if isinstance(model, ModelFile) else model
            store.put_model(replace(record, model=data))

        try:
            await self.pool.run(put)
        except (OSError, ValueError) as exc:
            _log.error("store: the model could not be written: %s", type(exc).__name__)
            raise ServerError("the model could not be stored; it was not uploaded") from exc

    async def unstore(self, record: StoredModel) -> None:
        """Take a refused upload's copy out of the store (it must not come back); called while
        the upload's own error goes up, which a store error must not replace: when the store
        cannot remove it now (a full disk), it goes with the store's next write.

        In a compile worker, as :meth:`persist` writes it: the removal writes the manifest (an
        ``fsync``, and up to ``LOCK_WAIT_S`` waiting for the manifest file's lock another
        process holds), which on the event loop stood every port still. Shielded: the removal
        ends even if the upload's task is cancelled while it waits."""
        if self.store is None:
            return
        remove = functools.partial(self.store.delete_model, record.model_id, at_next_write=True)
        try:
            try:
                removal = self.pool.submit(remove)
            except RuntimeError:  # the workers are stopped (the server is stopping)
                remove()
            else:
                await asyncio.shield(removal)
        except OSError as exc:
            _log.error(
                "store: a refused upload's copy could not be removed yet (%s); it goes with "
                "the store's next write",
                type(exc).__name__,
            )

    def register(
        self,
        record: StoredModel,
        source: bytes | ModelFile,
        compiled: LoadedModel,
        steps: CompiledPipeline | None,
        wire: dict[str, Any] | None,
        queue: ModelQueue | None,
        *,
        most_owned: int | None = None,
    ) -> ModelEntry:
        """Add the model to the registry (and its upload options to the exports). A refused
        upload's stored copy is its caller's to remove (:meth:`unstore`, awaited); a restore's
        is the model itself (a signal while restoring must not delete it)."""
        entry = self.registry.add(
            record.hash,
            compiled,
            record.name,
            steps,
            source=source,
            queue=queue,
            model_id=record.model_id,
            version=record.version,
            owner=record.owner,
            public=record.public,
            uploaded_ns=record.uploaded_ns,
            most_owned=most_owned,
        )
        if self.exports is not None:
            self.exports.keep(entry.model_id, optimize=record.optimize, pipeline=wire)
        return entry

    def _most_owned(self, caller: Principal) -> int | None:
        """How many models ``caller`` may hold: ``max_models_per_key`` for a tenant's key (one
        tenant must not fill the server for the others); the admin key and an open server's
        anonymous callers are held to ``max_models`` only."""
        return self.settings.max_models_per_key if caller.kind == "tenant" else None

    def _compiling(self, fn: Callable[[], _T], caller: Principal) -> asyncio.Future[_T]:
        return compiling(self.pool, fn, caller)


def compiling(pool: WorkerPool, fn: Callable[[], _T], caller: Principal) -> asyncio.Future[_T]:
    """``fn()`` (an upload's or a load's compile) in a compile worker of ``pool``, in turn with
    the other keys' compiles; a tenant's key compiles one model at a time (the other worker
    stays free for the other keys)."""
    share = 1 if caller.kind == "tenant" else None
    return pool.submit(fn, group=caller.key_id, share=share)


def _record(upload: _Upload, digest: bytes, *, version: int, uploaded_ns: int) -> StoredModel:
    """What the store keeps of ``upload`` (its bytes added when it is written)."""
    pipeline = upload.pipeline
    return StoredModel(
        model_id=str(uuid.uuid4()),
        name=upload.name,
        owner=upload.caller.key_id,
        public=upload.public,
        hash=digest,
        uploaded_ns=uploaded_ns,
        optimize=upload.optimize,
        model=b"",  # the store's copy is read from ``model`` by Intake.persist
        pipeline=None if pipeline is None else codec.dumps(pipeline.to_wire()),
        version=version,
        settings=upload.settings.model_dump(exclude_none=True),
    )


def _digest(model: bytes | ModelFile) -> bytes:
    """The model's digest (a streamed one's, taken as it arrived: InvalidInput when it did not
    all arrive)."""
    if isinstance(model, ModelFile):
        if not model.complete:
            raise InvalidInput("the model's bytes did not all arrive")
        return model.digest
    return model_digest(model)


def _size(source: bytes | ModelFile) -> int:
    return source.size if isinstance(source, ModelFile) else len(source)
