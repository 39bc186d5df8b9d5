"""Compiling a model: the compile guard's checks, then its session, queue and pipeline.

Every upload is checked and trial-compiled first in a limited child process
(:mod:`blindai.server.compile_guard`), then compiled in the server's process, or in a model
host of its own (``--run-isolation process``). A model that batches gets its queue here
(batching is probed on the session), and one that may run on the event loop its gate
(:mod:`blindai.server._inline`). These run in a compile worker, never on the event loop.

The intake and the restorer call :meth:`Compiler.checked` (an upload, a stored model) and
:meth:`Compiler.compiled` (an unloaded model loaded again); each step calls the next on the
compiler itself (:meth:`Compiler.checked`, then :meth:`Compiler.compiled`, then
:meth:`Compiler.session`), so that the data plane's parts, which share one compiler, all see a
step wrapped on it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

from blindai.errors import BlindAIError, InvalidInput
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import CompiledPipeline, compile_pipeline
from blindai.server._inline import InlineGate, inline_gate
from blindai.server.abandon import Abandon
from blindai.server.batching import ModelQueue, Offload, probe_batching
from blindai.server.compile_guard import CompileGuard
from blindai.server.metrics import Metrics
from blindai.server.model_file import ModelFile
from blindai.server.model_host import ModelHosts
from blindai.server.pipeline_run import invalid_input
from blindai.server.runtime import LoadedModel, OnnxModel
from blindai.server.schedules import Schedule
from blindai.server.settings import ServerSettings
from blindai.server.tokenizer_host import TokenizerHosts

__all__ = [
    "Compiled",
    "Compiler",
    "release",
    "released_if_cancelled",
]

Compiled = tuple[LoadedModel, ModelQueue | None]
"""A compiled model: its session and, for a model that batches, its queue."""


class Compiler:
    """Checks and compiles models (see the module); the steps of one compile are separate
    methods, each calling the next on ``self``."""

    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics,
        *,
        guard: CompileGuard,
        hosts: ModelHosts | None,
        offload: Offload[Any],
        tokenizers: TokenizerHosts | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.guard = guard
        self.hosts = hosts
        self.tokenizers = tokenizers
        """Where text pipelines' tokenizers are compiled and run (None: in this process)."""
        self.offload = offload
        """Runs a batching model's blocking calls in an inference worker (its queue's)."""

    def checked(
        self,
        model: bytes | ModelFile,
        optimize: bool,
        schedule: Schedule,
        abandon: Abandon | None = None,
    ) -> Compiled:
        """The compile guard's checks and trial compile, then the server's own compile
        (:meth:`compiled`; not begun once ``abandon`` is set: the client went away; a model's
        host being started for it is killed then, ClientGone)."""
        abandon = abandon or Abandon()
        abandon.check()  # waited for a worker for a caller that is gone: not the guard's child
        try:
            # a streamed model's file goes to the guard's child as a read-only descriptor
            report = self.guard.check(model, optimize=optimize, abandon=abandon)
            abandon.check()
            try:
                made = self.compiled(model, optimize, schedule, abandon)
            except BlindAIError:
                abandon.check()  # stopped because the client went away: not the model's fault
                raise
        finally:  # the next child starts once both compilations no longer need the CPU
            self.guard.replenish()
        made[0].empty_unsafe = report.empty_unsafe
        return made

    def compiled(
        self,
        model: bytes | ModelFile,
        optimize: bool,
        schedule: Schedule,
        abandon: Abandon | None = None,
    ) -> Compiled:
        """The session (:meth:`session`, with the schedule's ``intra_op_threads``) and, for a
        model that batches, its queue (batching is probed here). ``abandon`` set while a
        model's host starts kills it (ModelNotReady); a session built in the server's process
        cannot be stopped (the guard bounded its time)."""
        if abandon is not None:
            abandon.check()  # waited for a worker for a caller that is gone: nothing to compile
        started = time.perf_counter()
        try:
            compiled = self.session(model, optimize, schedule.intra_op_threads, abandon)
        finally:
            self.metrics.compile_seconds.observe(time.perf_counter() - started)
        policy = schedule.policy
        if policy.max_batch_size <= 1:
            compiled.inline = self.inline_gate(model)
            return compiled, None
        problem = probe_batching(compiled)
        if problem is not None:
            if schedule.batch_asked:
                compiled.unload()
                raise InvalidInput(f"max_batch_size: this model cannot be batched: {problem}")
            compiled.inline = self.inline_gate(model)
            return compiled, None
        return compiled, ModelQueue(compiled, policy=policy, offload=self.offload, label="a model")

    def inline_gate(self, model: bytes | ModelFile) -> InlineGate | None:
        """The gate of a model that may run on the event loop (``_inline``); None for others,
        on a GPU, and for models in a host process (a run there is never that short)."""
        if self.settings.device != "cpu" or self.hosts is not None:
            return None
        source = Path(model.path) if isinstance(model, ModelFile) else model
        return inline_gate(source, limit_us=self.settings.inline_run_us)

    def session(
        self,
        model: bytes | ModelFile,
        optimize: bool,
        threads: int,
        abandon: Abandon | None = None,
    ) -> LoadedModel:
        """The model's session, in its host process or in the server's; InvalidInput when
        onnxruntime cannot load it."""
        try:
            if self.hosts is not None:
                stop = abandon.is_set if abandon is not None else lambda: False
                return self.hosts.load(
                    model, optimize=optimize, intra_op_threads=threads, stop=stop
                )
            return OnnxModel(
                model.path if isinstance(model, ModelFile) else model,
                optimize=optimize,
                intra_op_threads=threads,
                device=self.settings.device,
                gpu_index=self.settings.gpu_index,
                shared_arena=True,
                max_map_bytes=self.settings.max_string_memory,
            )
        except BlindAIError:
            raise  # the GPU refused the session, or an output cannot be returned: its message
        except Exception as exc:  # onnxruntime raises several types for a bad model
            raise InvalidInput(
                "the model could not be loaded by onnxruntime (not a valid ONNX model, or "
                "it uses operators this runtime lacks)"
            ) from exc

    def pipeline(
        self, pipeline: Pipeline, model: LoadedModel, abandon: Abandon | None = None
    ) -> CompiledPipeline:
        """``pipeline`` compiled against the model's inputs and outputs (InvalidInput when
        they do not fit). ``abandon`` set (the upload's client went away) kills a tokenizer's
        process compiling for it: ClientGone."""
        tokenizers = None
        if self.tokenizers is not None:
            stop = abandon.is_set if abandon is not None else lambda: False
            tokenizers = functools.partial(self.tokenizers.load, stop=stop)
        try:
            with invalid_input():
                return compile_pipeline(
                    pipeline,
                    inputs=model.inputs,
                    outputs=model.outputs,
                    limits=self.settings.pipeline_limits(),
                    tokenizers=tokenizers,
                )
        except BlindAIError:
            if abandon is not None:
                abandon.check()  # stopped because the client went away: not the pipeline's fault
            raise


def release(compiled: Compiled) -> None:
    """Unload a session and close its queue."""
    session, queue = compiled
    session.unload()
    if queue is not None:
        queue.close()


async def released_if_cancelled(work: asyncio.Future[Compiled], abandon: Abandon) -> Compiled:
    """``work``'s session, compiled in a worker for the task awaiting this. That task cancelled
    (a gRPC client cancelled its call) while the worker compiles: ``abandon`` is set (the
    compile stops at its next step, a host being started for it is killed) and a session made
    all the same is released once the worker is done. Before, the worker's result was dropped
    with the task: a model's host process then ran for nobody until the server's end."""
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        abandon.set()
        work.add_done_callback(_release_made)
        raise


def _release_made(work: asyncio.Future[Compiled]) -> None:
    """Release what a compile made for a task that was cancelled (its error, if any, is read:
    nobody else will)."""
    if not work.cancelled() and work.exception() is None:
        release(work.result())
