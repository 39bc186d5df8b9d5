"""Models coming back: the sealed store's at start-up, and unloaded ones from their kept bytes.

:meth:`Restorer.restore` loads and compiles the store's models before the server serves, each
with the settings it was uploaded with; :meth:`Restorer.load` compiles models unloaded since
(``POST /v2/repository/models/NAME/load``) again. Both compile through the data plane's
compiler (:class:`~blindai.server.compiler.Compiler`) and register through the intake
(:meth:`~blindai.server.intake.Intake.register`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pydantic

from blindai.errors import (
    ConfigurationError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ProtocolError,
    RegistryFull,
)
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import CompiledPipeline
from blindai.protocol import codec
from blindai.server._workers import WorkerPool
from blindai.server.abandon import Abandon
from blindai.server.access import Principal
from blindai.server.compiler import (
    Compiled,
    Compiler,
    release,
    released_if_cancelled,
)
from blindai.server.intake import Intake, compiling
from blindai.server.metrics import Metrics
from blindai.server.pipeline_run import invalid_input
from blindai.server.registry import ModelEntry, ModelRegistry, share_key
from blindai.server.runtime import LoadedModel
from blindai.server.schedules import Schedule, Schedules
from blindai.server.settings import ModelSettings, ServerSettings
from blindai.server.store import SealedStore, StoredModel

__all__ = ["OPENED_CLOSED_STORE", "Restorer"]

_log = logging.getLogger("blindai.server")

OPENED_CLOSED_STORE = (
    "the store holds {what} with access control; without --admin-key-sha256 anyone could run "
    "and export its tenants' models: start with the admin key's hash"
)
"""Why a server without access control refuses a store written with it (an open server would
serve its tenants' models to anyone: run, and export the bytes); ``what`` it holds."""

_Restored = tuple[
    StoredModel,
    Compiled,
    CompiledPipeline | None,
    dict[str, Any] | None,
]
"""A stored model on its way back: its record, session and queue, pipeline steps and wire."""


@dataclass
class _Restoring:
    """What a restore holds while it reads the store."""

    sessions: dict[bytes, Compiled] = field(default_factory=dict)
    oldest: dict[bytes, tuple[tuple[int, str], ModelSettings, bool]] = field(default_factory=dict)
    """Whose settings each session runs with: the oldest upload sharing it, as when uploaded
    (the store gives entries in file-name order, not upload order)."""
    loaded: list[_Restored] = field(default_factory=list)
    own: dict[str, Schedule] = field(default_factory=dict)


class Restorer:
    """Brings stored and unloaded models back (see the module)."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        *,
        store: SealedStore | None,
        metrics: Metrics,
        schedules: Schedules,
        compiler: Compiler,
        pool: WorkerPool,
        intake: Intake,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.schedules = schedules
        self.compiler = compiler
        self.pool = pool
        """The compile workers."""
        self.intake = intake

    def restore(self) -> int:
        """Load and compile the store's models and pipelines (before serving), oldest first;
        returns how many. A model that cannot be loaded any more is skipped with one log line,
        and so are those beyond ``max_models`` (the newest; they stay in the store).
        Models run with the settings they were uploaded with (those the server's limits still
        allow; else they are skipped too).
        """
        if self.store is None:
            return 0
        state = _Restoring()
        for record in self.store.load_models():
            if record.owner is not None and self.settings.admin_digest is None:
                # an open server lets anyone run and export every model: not a tenant's
                raise ConfigurationError(
                    OPENED_CLOSED_STORE.format(what="models uploaded")
                    + f" (model {record.model_id})"
                )
            self._restored(state, record)
        return self._registered(state)

    def _restored(self, state: _Restoring, record: StoredModel) -> None:
        """Compile ``record`` (with its pipeline) into ``state``; the newest beyond
        ``max_models`` are left out."""
        try:
            compiled = self._session(state, record)
            wire, steps = self._stored_pipeline(record, compiled[0])
        except (InvalidInput, ModelNotReady, ProtocolError) as exc:
            if _overflowing(record, exc):
                return
            # the reason quotes the model (node, graph, initializer and pipeline names):
            # its owner's to read, never the server's log
            _log.error(
                "store: model %s cannot be loaded under this server's settings (%s); the "
                "reason names parts of the model, so it is not logged: uploading it again "
                "shows its owner why",
                record.model_id,
                type(exc).__name__,
            )
            return
        loaded = state.loaded
        loaded.append((replace(record, pipeline=None), compiled, steps, wire))
        loaded.sort(key=lambda item: (item[0].uploaded_ns, item[0].model_id))
        # more than fit (a lower --max-models, old entries put back by the host): the
        # newest are left in the store, and never held at once (memory: max_models)
        if len(loaded) > self.settings.max_models:
            self._not_restored(loaded.pop()[0])
            _release_unused(state.sessions, [item[1][0] for item in loaded])

    def _session(self, state: _Restoring, record: StoredModel) -> Compiled:
        """The session ``record`` runs with: one compiled for an identical model restored
        before, unless ``record`` is older with other settings (then its own replaces it)."""
        share = share_key(record.owner, record.hash)
        asked = _stored_settings(record)
        state.own[record.model_id] = self.schedules.schedule(asked, optimize=record.optimize)
        compiled = state.sessions.get(share)
        held = state.oldest.get(share) if compiled is not None else None
        order = (record.uploaded_ns, record.model_id)
        if held is None or order < held[0]:
            if held is None or (asked, record.optimize) != held[1:]:
                schedule = self.schedules.schedule(asked, optimize=record.optimize)
                fresh = self.compiler.checked(record.model, record.optimize, schedule)
                if compiled is not None:  # an older upload's settings replace them
                    state.loaded = [_swapped(item, compiled, fresh) for item in state.loaded]
                    release(compiled)
                compiled = state.sessions[share] = fresh
                self.schedules.by_share[share] = schedule
            state.oldest[share] = (order, asked, record.optimize)
        assert compiled is not None
        return compiled

    def _registered(self, state: _Restoring) -> int:
        """Register the restored models, oldest first, while they fit; how many."""
        registered = []
        for record, (session, queue), steps, wire in state.loaded:
            try:
                self.registry.check_room()
            except RegistryFull:
                self._not_restored(record)
                continue
            self.intake.register(record, record.model, session, steps, wire, queue)
            self.schedules.own[record.model_id] = state.own[record.model_id]
            registered.append(session)
        _release_unused(state.sessions, registered)
        return len(registered)

    def _not_restored(self, record: StoredModel) -> None:
        _log.error(
            "store: model %s not restored, it stays in the store: --max-models %d reached",
            record.model_id,
            self.settings.max_models,
        )

    def _stored_pipeline(
        self, record: StoredModel, model: LoadedModel
    ) -> tuple[dict[str, Any] | None, CompiledPipeline | None]:
        if record.pipeline is None:
            return None, None
        limits = self.settings.pipeline_limits()
        with invalid_input():
            pipeline = Pipeline.from_wire(
                codec.loads(record.pipeline, what="stored pipeline"), limits=limits
            )
            return pipeline.to_wire(), self.compiler.pipeline(_stored_as_run(pipeline), model)

    async def load(self, entries: list[ModelEntry], *, caller: Principal) -> list[ModelEntry]:
        """Compile unloaded models again from their kept bytes (loaded ones are left alone, and
        so are those deleted while they compiled), in turn with other keys' compiles as
        ``caller``'s uploads are (:func:`~blindai.server.intake.compiling`)."""
        loaded = []
        for entry in entries:
            if self.registry.is_ready(entry):
                loaded.append(entry)
                continue
            reloaded = await self._loaded(entry, caller)
            if reloaded is not None:
                loaded.append(reloaded)
        return loaded

    async def _loaded(self, entry: ModelEntry, caller: Principal) -> ModelEntry | None:
        """``entry`` compiled again and back in the registry (None: deleted or unloaded again
        while it compiled)."""
        source = self.registry.source(entry)
        if source is None:
            raise ModelNotFound(f"the bytes of model {entry.label!r} were not kept")
        started = time.perf_counter()
        ticket = self.registry.load_ticket(entry)
        shared = self.registry.session_for(entry.share)
        queue = None
        schedule = self.schedules.for_load(entry)
        if shared is None:
            abandon = Abandon()
            session, queue = await released_if_cancelled(
                compiling(
                    self.pool,
                    functools.partial(
                        self.compiler.compiled, source, schedule.optimize, schedule, abandon
                    ),
                    caller,
                ),
                abandon,
            )
            session.empty_unsafe = entry.model.empty_unsafe  # what its upload's check found
        else:
            session = shared
        try:
            reloaded = self.registry.reload(entry, session, queue, ticket=ticket)
        except ModelNotFound:
            # deleted while it compiled: nothing to load, and the other versions still are
            # (the whole load answered 404 "no model with id ...", the rest left unloaded)
            if shared is None:
                release((session, queue))
            return None
        if reloaded is None:
            # unloaded again while it compiled: the unload, which came last, wins (Triton
            # applies a model's loads and unloads in the order they arrive); the model
            # stays unloaded and the session this load compiled is freed
            return None
        if shared is None and reloaded.model is session:
            self.schedules.adopt(entry.share, schedule)
        self.metrics.upload_seconds.observe(time.perf_counter() - started)
        return reloaded


def _swapped(item: _Restored, old: Compiled, new: Compiled) -> _Restored:
    record, compiled, steps, wire = item
    return (record, new if compiled is old else compiled, steps, wire)


def _release_unused(sessions: dict[bytes, Compiled], used: Sequence[LoadedModel]) -> None:
    """Unload (and forget) the restored sessions that none of ``used`` is."""
    for share, compiled in list(sessions.items()):
        if not any(compiled[0] is u for u in used):
            del sessions[share]
            release(compiled)


def _overflowing(record: StoredModel, exc: Exception) -> bool:
    """Whether ``exc`` is the image step's normalisation check (logged, with its reason: it
    names no part of the model). Such a model is skipped rather than restored as a stored
    dtype is (:func:`_stored_as_run`): relaxed, the check would let it run on infinities and
    answer them, or NaN scores, without an error, as it did before uploads refused it."""
    from blindai.pipeline._image import NormalisationOverflow  # Pillow: on this path only

    cause = exc.__cause__
    if not isinstance(cause, NormalisationOverflow):
        return False
    _log.error(
        "store: model %s is not restored, it stays in the store: its pipeline's image "
        "normalisation (scale, mean, std) makes values its model input's type (%s) cannot hold "
        "for pixels of 0 or 255, which uploads refuse; run, it would feed the model infinities "
        "and answer non-finite results without an error",
        record.model_id,
        cause.dtype,
    )
    return True


def _stored_as_run(pipeline: Pipeline) -> Pipeline:
    """A stored pipeline without its image step's ``dtype``, which only an upload checks
    against the model input (the input's own type is what the step makes, whatever it says):
    a model stored before uploads checked it, with a dtype its input lacks, ran and is still
    restored (it was skipped as 'cannot be loaded', gone from the server after an upgrade)."""
    step = pipeline.spec.get("input")
    if not isinstance(step, Mapping) or step.get("kind") != "image" or "dtype" not in step:
        return pipeline
    unchecked = {key: value for key, value in step.items() if key != "dtype"}
    return Pipeline({**pipeline.spec, "input": unchecked}, pipeline.files)


def _stored_settings(record: StoredModel) -> ModelSettings:
    """The run settings a stored model was uploaded with; InvalidInput when they no longer
    validate."""
    try:
        return ModelSettings.model_validate(dict(record.settings))
    except pydantic.ValidationError as exc:
        raise InvalidInput(f"its stored settings are invalid ({exc.error_count()} errors)") from exc
