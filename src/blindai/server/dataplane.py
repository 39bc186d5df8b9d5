"""The data plane: models and numpy arrays, no wire format.

Each protocol (``protocols/v06``, ``protocols/v2``, ``protocols/grpc``) decodes its request
into a :class:`~blindai.server.registry.ModelRef` and named arrays, calls only this class, and
encodes what comes back; no protocol touches the registry. The data plane finds the model in
the registry (:meth:`DataPlane.model`, the one lookup), matches the inputs to the model's (by
name in any order, or by position) and checks their dtype and shape, then runs the model in a
worker thread: a request enters each layer once. :meth:`DataPlane.infer` does all of it;
the protocols, which need the model before they run it (a 404 before decoding a v2 body, and
the model's statistics for a request that fails), look it up with :meth:`DataPlane.model` and
run it with :meth:`DataPlane.run` (or :meth:`DataPlane.run_raw`), which look nothing up again.

Blocking work runs in worker threads, never on the event loop; compiling has its own pool so
that uploads never hold up inference on other models.

Every call names its caller (a :class:`~blindai.server.access.Principal`): a model the caller
may not run is reported exactly like a missing one (the rules: :mod:`blindai.server.access`).

:class:`DataPlane` is the one class the protocols import. It keeps delete (with a sealed
store, removed from it before it is acknowledged) and the per-model inference statistics
(:attr:`DataPlane.statistics`, every protocol's inferences, pipelines included:
:meth:`DataPlane.record`); the rest is done by the parts it holds, each given what it needs
(their limits: docs/limits.md):

* :mod:`blindai.server.catalog`: the lookups with access control (:func:`runnable`,
  :func:`listable`), the model list and export;
* :mod:`blindai.server.intake`: uploads checked, compiled, stored (before they are registered
  and acknowledged) and registered;
* :mod:`blindai.server.restore`: the store's models at start-up, and unloaded models (session
  released, bytes kept: :meth:`DataPlane.unload`; ModelNotReady, 503) loaded again;
* :mod:`blindai.server.compiler`: the compile guard's checks in a limited child process, then
  the session;
* :mod:`blindai.server.runs`: runs under the run limits, batched, on the event loop, or
  through a model's pipeline (its raw input: :meth:`DataPlane.run_raw`, or in
  :meth:`DataPlane.infer` one input named after the pipeline's kind holding one element);
* :mod:`blindai.server.schedules`: each model's run settings and share of the workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar

from blindai.errors import InvalidInput, ServerError
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import InputKind
from blindai.protocol.replication import ListedModel
from blindai.server._workers import WorkerPool
from blindai.server.access import Principal
from blindai.server.catalog import Catalog, every, listable, runnable
from blindai.server.compile_guard import CompileGuard
from blindai.server.compiler import Compiler
from blindai.server.inputs import Inputs, match_inputs
from blindai.server.intake import Intake
from blindai.server.metrics import Metrics
from blindai.server.model_file import ModelFile
from blindai.server.model_host import HostLimits, ModelHosts
from blindai.server.pipeline_run import Inference
from blindai.server.preprocess_budget import PreprocessBudget
from blindai.server.registry import ModelEntry, ModelRef, ModelRegistry, Visible
from blindai.server.replication import ModelExport, UploadOptions, required_models
from blindai.server.restore import OPENED_CLOSED_STORE, Restorer
from blindai.server.runs import Runs, tenant
from blindai.server.schedules import Schedules
from blindai.server.settings import ModelSettings, ServerSettings
from blindai.server.statistics import ModelStatistics, Snapshot, Timing
from blindai.server.store import SealedStore
from blindai.server.tokenizer_host import TokenizerHosts, TokenizerLimits

__all__ = [
    "OPENED_CLOSED_STORE",
    "DataPlane",
    "Inference",
    "Inputs",
    "listable",
    "match_inputs",
    "runnable",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_log = logging.getLogger("blindai.server")


class DataPlane:
    """Upload, look up, run and delete models; shared by every protocol."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        metrics: Metrics | None = None,
        *,
        store: SealedStore | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.metrics = metrics or Metrics()
        """The server's Prometheus metrics (upload and compile durations, models loaded)."""
        self.statistics = ModelStatistics()
        """Per-model inference statistics (the Open Inference Protocol's statistics)."""
        self.metrics.models_loaded.set_function(lambda: float(registry.ready_count()))
        self.exports: UploadOptions | None = (
            UploadOptions() if settings.allow_model_export else None
        )
        """How each model was uploaded (optimisation, pipeline), for export
        (``--allow-model-export``; the registry keeps the bytes)."""
        self.required = required_models(settings)
        """What this replica must hold to be ready (``--require-models``, ``-count``)."""
        self.catalog = Catalog(registry, exports=self.exports, required=self.required)
        """Finds the models a caller may run, list or change."""
        self._infer = WorkerPool(settings.inference_threads, name="blindai-infer")
        self.preprocess_budget = PreprocessBudget(settings.max_preprocess_memory)
        self._compile = WorkerPool(2, name="blindai-compile")
        self.compile_guard = CompileGuard(
            limits=settings.compile_limits(),
            enabled=settings.compile_isolation,
            spare=settings.spare_processes,
        )
        """Checks and trial-compiles each upload in a limited child process."""
        self.tokenizers = (
            TokenizerHosts(
                limits=TokenizerLimits(
                    timeout_s=settings.compile_timeout, memory_bytes=settings.compile_memory
                ),
                spare=settings.spare_processes,
            )
            if settings.compile_isolation
            else None
        )
        """Text pipelines' tokenizers, each in a limited process of its own; None
        (--no-compile-isolation): in the server's process."""
        self.hosts = _model_hosts(settings, self.metrics)
        """The model hosts (``--run-isolation process``): each model runs in a process of its
        own; None: models run in the server's process."""
        self.schedules = Schedules(settings, registry)
        """How each model and each session runs, and each session's run slots."""
        self.runs = Runs(
            settings,
            registry,
            pool=self._infer,
            preprocess_budget=self.preprocess_budget,
            schedules=self.schedules,
        )
        """Runs the models found (each run counted by its ``counter``)."""
        self.compiler = Compiler(
            settings,
            self.metrics,
            guard=self.compile_guard,
            hosts=self.hosts,
            tokenizers=self.tokenizers,
            offload=self.runs.blocking,
        )
        """Checks and compiles models (the intake's and the restorer's: one compiler)."""
        self.intake = Intake(
            settings,
            registry,
            store=store,
            metrics=self.metrics,
            exports=self.exports,
            schedules=self.schedules,
            compiler=self.compiler,
            pool=self._compile,
        )
        """Checks, compiles, stores and registers uploads."""
        self.restorer = Restorer(
            settings,
            registry,
            store=store,
            metrics=self.metrics,
            schedules=self.schedules,
            compiler=self.compiler,
            pool=self._compile,
            intake=self.intake,
        )
        """Brings stored and unloaded models back."""
        self._accounts = threading.Lock()
        """Held to account a request to a model and to forget a deleted model's accounts: a
        request that found a model before its delete must not bring its entries back."""

    def close(self) -> None:
        """Stop the worker threads, the compile guard's spare process and the model hosts."""
        self._infer.close()
        self._compile.close()
        self.compile_guard.close()
        if self.tokenizers is not None:
            self.tokenizers.close()
        if self.hosts is not None:
            self.hosts.close()

    async def offload(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a protocol's blocking step (decoding or encoding a large body) in a worker."""
        return await self._infer.run(fn, *args, **kwargs)

    def model(self, ref: ModelRef, *, caller: Principal) -> ModelEntry:
        """The model a request means among those ``caller`` may run (ModelNotFound when there
        is none, ModelNotReady when it is unloaded): :meth:`Catalog.model`."""
        return self.catalog.model(ref, caller=caller)

    def versions(self, key: str, *, caller: Principal) -> list[ModelEntry]:
        """The models with id or name ``key`` that ``caller`` may run: :meth:`Catalog.versions`."""
        return self.catalog.versions(key, caller=caller)

    def entries(self, visible: Visible) -> list[ModelEntry]:
        """The models ``visible`` (:func:`runnable` or :func:`listable` by a caller), oldest
        first."""
        return self.catalog.entries(visible)

    def is_ready(self, entry: ModelEntry) -> bool:
        """Whether the model is loaded (an unloaded one answers ModelNotReady)."""
        return self.catalog.is_ready(entry)

    def managed(self, ref: ModelRef, *, caller: Principal) -> ModelEntry:
        """The model ``caller`` means to delete: :meth:`Catalog.managed`."""
        return self.catalog.managed(ref, caller=caller)

    def managed_versions(self, name: str, *, caller: Principal) -> list[ModelEntry]:
        """The versions of ``name`` ``caller`` may change: :meth:`Catalog.managed_versions`."""
        return self.catalog.managed_versions(name, caller=caller)

    async def infer(
        self,
        ref: ModelRef,
        inputs: Inputs,
        *,
        caller: Principal,
        outputs: Sequence[str] | None = None,
        reshape_flat: bool = False,
        timing: Timing | None = None,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> Inference:
        """Run a model on named arrays; ``outputs`` names those to return (None: all).

        ``reshape_flat`` (the 0.6 protocol's flat lists): a 1-D array is given the shape of
        the model's input when that shape is static, or static but for a leading batch
        dimension. A model with a pipeline given its raw input (see the module) runs the pipeline.
        ``timing`` receives the phases ``decode`` (matching the inputs; a pipeline's
        preprocessing), ``queue`` (waiting for a worker), ``infer`` (running the model) and, for a
        pipeline, ``encode`` (its postprocessing). ``disconnected()`` completes when the
        client goes away: the run is then stopped.
        """
        entry = self.catalog.model(ref, caller=caller)  # the parts themselves: no more calls
        return await self.runs.run(
            entry,
            inputs,
            caller=caller,
            outputs=outputs,
            reshape_flat=reshape_flat,
            timing=timing,
            disconnected=disconnected,
        )

    async def run(
        self,
        entry: ModelEntry,
        inputs: Inputs,
        *,
        caller: Principal,
        outputs: Sequence[str] | None = None,
        reshape_flat: bool = False,
        timing: Timing | None = None,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> Inference:
        """:meth:`infer` for a model already found by :meth:`model` (no second lookup)
        (:meth:`Runs.run <blindai.server.runs.Runs.run>`)."""
        return await self.runs.run(
            entry,
            inputs,
            caller=caller,
            outputs=outputs,
            reshape_flat=reshape_flat,
            timing=timing,
            disconnected=disconnected,
        )

    async def run_raw(
        self,
        entry: ModelEntry,
        kind: InputKind,
        raw: bytes | str,
        *,
        caller: Principal,
        timing: Timing | None = None,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> Inference:
        """Run one raw input (text, or image or audio file bytes) through the pipeline of a model
        found by :meth:`model` (:meth:`Runs.run_raw <blindai.server.runs.Runs.run_raw>`)."""
        return await self.runs.run_raw(
            entry, kind, raw, caller=caller, timing=timing, disconnected=disconnected
        )

    def record(
        self, entry: ModelEntry, timing: Timing, *, success: bool, protocol: str, caller: Principal
    ) -> None:
        """Account one inference request of ``caller`` on ``entry``: its model's statistics
        (in all, and the caller's key's own) and, when it succeeded, the server's phase metrics
        (``protocol``: ``v06``, ``rest`` or ``grpc``). A model deleted meanwhile is not
        accounted: its statistics and series are gone for good (they came back, and stayed,
        for each request that had found it before)."""
        with self._accounts:
            if self.registry.holds(entry.model_id):
                self.statistics.record(entry.model_id, timing, success=success, key=tenant(caller))
                self.metrics.observe_model(
                    model_id=entry.model_id, public=entry.public, success=success, timing=timing
                )
        if success:
            self.metrics.observe_phases(protocol, timing)

    def snapshot(self, entry: ModelEntry, *, caller: Principal) -> Snapshot:
        """The statistics of ``entry`` that ``caller`` reads: a tenant's key, its own requests'
        (a public model's totals showed it when another tenant ran it, and how long that took);
        the admin key and an open server's callers, every request's."""
        return self.statistics.snapshot(entry.model_id, tenant(caller))

    def check_model_size(self, size: int) -> None:
        """PayloadTooLarge when a model of ``size`` bytes is over ``max_model_bytes``."""
        self.intake.check_model_size(size)

    def model_file(self, size: int) -> ModelFile:
        """A file for a model of ``size`` bytes arriving (see ``upload_dir``)."""
        return ModelFile(size, directory=self.settings.upload_dir)

    async def write_model(self, file: ModelFile, pieces: list[bytes]) -> None:
        """Hash and write the next pieces of an arriving model, in a worker thread."""
        await self._compile.run(file.write, pieces)

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
        """Compile, check, store and register a model owned by ``caller``
        (:meth:`Intake.upload <blindai.server.intake.Intake.upload>`)."""
        return await self.intake.upload(
            model,
            name=name,
            optimize=optimize,
            caller=caller,
            public=public,
            pipeline=pipeline,
            settings=settings,
            disconnected=disconnected,
        )

    def restore(self) -> int:
        """Load and compile the store's models before serving; how many
        (:meth:`Restorer.restore <blindai.server.restore.Restorer.restore>`)."""
        return self.restorer.restore()

    async def load(self, entries: list[ModelEntry], *, caller: Principal) -> list[ModelEntry]:
        """Compile unloaded models again from their kept bytes, in turn with other keys'
        compiles (:meth:`Restorer.load <blindai.server.restore.Restorer.load>`)."""
        return await self.restorer.load(entries, caller=caller)

    def unload(self, entries: list[ModelEntry]) -> None:
        """Release the sessions of models (their bytes stay, for :meth:`load`)."""
        self.registry.unload(entries)

    async def delete(self, ref: ModelRef, *, caller: Principal) -> ModelEntry:
        """Remove a model (by id, or the newest with that name) that ``caller`` may delete;
        it leaves the store first; its session is released."""
        if not ref.key:
            raise InvalidInput("give the id or name of the model to delete")
        found = self.managed(ref, caller=caller)
        if self.store is not None:
            try:
                await self._compile.run(self.store.delete_model, found.model_id)
            except OSError as exc:
                _log.error("store: a model could not be removed: %s", type(exc).__name__)
                raise ServerError("the model could not be removed from the store") from exc
        same: Visible = lambda e: e.model_id == found.model_id  # noqa: E731
        entry = self.registry.remove(ModelRef(key=found.model_id), same)
        self.schedules.forget_model(entry.model_id)
        with self._accounts:
            self.statistics.forget(entry.model_id)
            if entry.public:
                self.metrics.forget_model(entry.model_id)
        if self.exports is not None:
            self.exports.drop(entry.model_id)
        if not any(e.share == entry.share for e in self.registry.entries(every)):
            # the last model sharing this session (an unloaded one keeps its settings for load)
            self.schedules.forget_session(entry.share)
        return entry

    def missing_models(self) -> int:
        """How many required models this replica does not hold loaded yet (0: ready)."""
        return self.catalog.missing_models()

    def listed_models(self, *, caller: Principal) -> list[ListedModel]:
        """The models ``caller`` may list: :meth:`Catalog.listed_models`."""
        return self.catalog.listed_models(caller=caller)

    def export(self, ref: ModelRef, *, caller: Principal) -> ModelExport:
        """A model as uploaded, to its owner only: :meth:`Catalog.export`."""
        return self.catalog.export(ref, caller=caller)


def _model_hosts(settings: ServerSettings, metrics: Metrics) -> ModelHosts | None:
    if settings.run_isolation != "process":
        return None
    return ModelHosts(
        limits=HostLimits(
            memory_bytes=settings.max_run_memory,
            max_reply_bytes=settings.max_run_memory + settings.max_string_memory,
            keep_freed_memory=settings.keep_freed_memory,
            max_map_bytes=settings.max_string_memory,
        ),
        ended=lambda why: metrics.model_host_ends.labels(why).inc(),
        spare=settings.spare_processes,
    )
