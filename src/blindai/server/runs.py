"""Runs: a model found by the data plane run on named arrays, or on a raw input.

A run matches the inputs to the model's (by name in any order, or by position) and checks
their dtype and shape, then runs the model in an inference worker, under the run limits
(docs/limits.md): a timeout, a share of the workers (the model's ``max_concurrent_runs``, a
tenant's key's ``key_runs``), stopped when its client goes away, its tensors drawn from the
capped arena (:mod:`blindai.server.run_guard`), and its outputs refused when the reply would
pass ``max_response_bytes``. A model that batches runs through its queue
(:mod:`blindai.server.batching`); a model whose gate allows it runs on the event loop
(:mod:`blindai.server._inline`). A model with a pipeline (:mod:`blindai.pipeline`) given its
raw input runs the pipeline; pipeline errors caused by a request are InvalidInput (400).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

import numpy as np
import onnxruntime as ort

from blindai.errors import (
    BlindAIError,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
)
from blindai.pipeline.compiled import InputKind
from blindai.server._inline import InlineGate, Shapes, shapes_of
from blindai.server._workers import WorkerPool
from blindai.server.access import ADMIN_ID, Principal
from blindai.server.batching import ModelQueue
from blindai.server.inputs import Inputs, match_inputs, output_names, raw_input
from blindai.server.pipeline_run import Inference, run_pipeline
from blindai.server.preprocess_budget import PreprocessBudget
from blindai.server.registry import ModelEntry, ModelRegistry
from blindai.server.run_guard import (
    RunControl,
    RunCounter,
    check_reply_size,
    failure_for,
    run_guarded,
)
from blindai.server.schedules import Schedules
from blindai.server.settings import ServerSettings
from blindai.server.statistics import Timing

__all__ = ["Runs", "tenant"]

_T = TypeVar("_T")


class Runs:
    """Runs models the data plane found (see the module)."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        *,
        pool: WorkerPool,
        preprocess_budget: PreprocessBudget,
        schedules: Schedules,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool
        """The inference workers."""
        self.preprocess_budget = preprocess_budget
        self.schedules = schedules
        self.counter = RunCounter(settings.max_run_memory)
        """The server's runs in progress (each run is counted while it runs)."""

    def blocking(self, fn: Callable[[], _T], group: str | None) -> asyncio.Future[_T]:
        """``fn()`` in an inference worker, in turn with the other keys' runs; a tenant's key
        (``group``) runs at most ``key_runs`` at once."""
        share = None if group in (None, ADMIN_ID) else self.settings.key_runs
        return self.pool.submit(fn, group=group, share=share)

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
        """:meth:`DataPlane.infer <blindai.server.dataplane.DataPlane.infer>` for a model
        already found by :meth:`DataPlane.model <blindai.server.dataplane.DataPlane.model>`
        (no second lookup).
        ``caller`` sent the inputs: a batch holds one caller's requests only.

        A model unloaded and loaded again after it was found runs with its new session (see
        :meth:`_found_again`)."""
        run = functools.partial(
            self._run_found,
            inputs=inputs,
            caller=caller,
            outputs=outputs,
            reshape_flat=reshape_flat,
            timing=timing or Timing(),
            disconnected=disconnected,
        )
        return await self._on_current(entry, run)

    async def _on_current(
        self, entry: ModelEntry, run: Callable[[ModelEntry], Awaitable[Inference]]
    ) -> Inference:
        """``run(entry)``, once more on the model as it is now when its session was released
        meanwhile (:meth:`_found_again`)."""
        try:
            return await run(entry)
        except (ModelNotFound, ModelNotReady):
            again = self._found_again(entry)
            if again is None:
                raise
        return await run(again)

    def _found_again(self, entry: ModelEntry) -> ModelEntry | None:
        """The model ``entry`` was found as, loaded again, when its run failed because its
        session was released meanwhile (None: the failure was not that). ModelNotReady when it
        is still unloaded, as the lookup answers; ModelNotFound when it was deleted (a batching
        model's queue said 503 "removed").

        A request finds its model when it arrives, and runs later (the v2 routes read the body
        in between): one that found a model before an unload and a load answered 404 or, in a
        batching model's queue, 503 ("removed"), though the model was there and loaded."""
        if not entry.model.released:
            return None
        current = self.registry.current(entry)
        if current is None:
            raise ModelNotFound("the model was deleted before this request ran")
        if not self.registry.is_ready(current):
            raise ModelNotReady(
                f"model {entry.label!r} is unloaded; load it first "
                "(POST /v2/repository/models/NAME/load)"
            )
        return None if current.model.released else current

    async def _run_found(
        self,
        entry: ModelEntry,
        *,
        inputs: Inputs,
        caller: Principal,
        outputs: Sequence[str] | None,
        reshape_flat: bool,
        timing: Timing,
        disconnected: Callable[[], Awaitable[object]] | None,
    ) -> Inference:
        """:meth:`run` with the model's session and queue as ``entry`` has them."""
        raw = raw_input(entry, inputs)
        if raw is not None:
            return await self._preprocessed(entry, raw, caller, timing, disconnected)
        with timing.phase("decode"):
            feeds = match_inputs(
                entry.model.inputs,
                inputs,
                reshape_flat=reshape_flat,
                empty_unsafe=entry.model.empty_unsafe,
            )
            wanted = output_names(entry, outputs)
        submitted = time.perf_counter_ns()
        if entry.queue is not None:  # a model that batches: its queue, under the run timeout
            return Inference(
                entry,
                self._fits_reply(
                    await self._batched(
                        entry.queue, feeds, wanted, timing, submitted, caller.key_id, disconnected
                    )
                ),
            )
        gate = entry.model.inline
        shapes = None if gate is None else shapes_of(feeds)
        if gate is not None and gate.allows(shapes) and not self.schedules.slots(entry).locked():
            return Inference(
                entry,
                self._fits_reply(self._on_loop(entry, gate, shapes, feeds, wanted, timing)),
            )
        ran: list[int] = []

        def timed(run_options: ort.RunOptions) -> list[tuple[str, np.ndarray]]:
            started = time.perf_counter_ns()
            try:
                return entry.model.predict(
                    feeds, wanted, run_options=run_options, caller=caller.key_id
                )
            finally:
                ran.append(time.perf_counter_ns() - started)
                timing.add("queue", started - submitted)
                timing.add("infer", ran[0])

        done = await self._guarded(entry, timed, group=caller.key_id, disconnected=disconnected)
        if gate is not None:
            gate.observe(ran[0], shapes, on_loop=False)
        return Inference(entry, self._fits_reply(done))

    def _on_loop(
        self,
        entry: ModelEntry,
        gate: InlineGate,
        shapes: Shapes | None,
        feeds: dict[str, np.ndarray],
        wanted: list[str] | None,
        timing: Timing,
    ) -> list[tuple[str, np.ndarray]]:
        """Run a model whose gate says so on the event loop (see ``_inline``), under the same
        memory cap and with the same answers to failures as a run in a worker."""
        control = RunControl()
        started = time.perf_counter_ns()
        try:
            predict = functools.partial(entry.model.predict, run_options=control.options)
            done, error, shared = self.counter.counted(predict, feeds, wanted)
        finally:
            ran = time.perf_counter_ns() - started
            timing.add("queue", 0)
            timing.add("infer", ran)
        if error is not None:
            self._fail(error, control, shared)
        gate.observe(ran, shapes, on_loop=True)
        return done  # type: ignore[return-value]

    async def _batched(
        self,
        queue: ModelQueue,
        feeds: dict[str, np.ndarray],
        wanted: list[str] | None,
        timing: Timing,
        submitted: int,
        caller: str | None,
        disconnected: Callable[[], Awaitable[object]] | None,
    ) -> list[tuple[str, np.ndarray]]:
        """A run through a batching model's queue, batched with ``caller``'s requests only.
        The request gives up at the run timeout, or when its client goes away (it waited for
        its run to end, as if the client were still there); the run it joined is stopped once
        every request in it has given up (a batch is not stopped for one member)."""
        run_ns: list[int] = []
        # the queue's runs carry their own options: this control only says why the wait ended
        control = RunControl(shrink_arena=False)
        waiting = asyncio.ensure_future(queue.predict(feeds, wanted, caller=caller, run_ns=run_ns))
        try:
            return await run_guarded(
                waiting,
                control,
                timeout_s=self.settings.run_timeout,
                disconnected=disconnected,
                grace_s=0,
            )
        except InferenceTimeout:
            if control.reason not in (None, "timeout"):  # the client went away
                raise InferenceFailed(f"the run was stopped: {control.reason}") from None
            raise
        except asyncio.CancelledError:
            waiting.cancel()  # this request gives up (a gRPC call cancelled)
            raise
        finally:
            ran = sum(run_ns)
            timing.add("queue", time.perf_counter_ns() - submitted - ran)
            timing.add("infer", ran)

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
        found by :meth:`DataPlane.model <blindai.server.dataplane.DataPlane.model>`; ``timing``
        and ``disconnected`` as in :meth:`DataPlane.infer
        <blindai.server.dataplane.DataPlane.infer>`."""
        label = entry.name or entry.model_id
        if entry.pipeline is None:
            raise InvalidInput(f"model {label!r} has no pipeline: send tensors")
        if entry.pipeline.input_kind != kind:
            raise InvalidInput(f"model {label!r} takes {entry.pipeline.input_kind}, not {kind}")
        timing = timing or Timing()

        async def run(found: ModelEntry) -> Inference:
            return await self._preprocessed(found, raw, caller, timing, disconnected)

        return await self._on_current(entry, run)

    async def _preprocessed(
        self,
        entry: ModelEntry,
        raw: bytes | str,
        caller: Principal,
        timing: Timing,
        disconnected: Callable[[], Awaitable[object]] | None,
    ) -> Inference:
        """A raw input through ``entry``'s pipeline and model, in an inference worker, under
        the run limits and the preprocessing budget; without an output step, the outputs
        are held to ``max_response_bytes`` as a tensor run's are."""
        submitted = time.perf_counter_ns()
        done = await self._guarded(
            entry,
            run_pipeline,
            entry,
            raw,
            self.preprocess_budget,
            tenant(caller),
            caller.key_id,
            timing,
            submitted,
            group=caller.key_id,
            disconnected=disconnected,
        )
        if done.result is None:  # no output step: the model's outputs are the reply
            self._fits_reply(done.outputs)
        return done

    async def _guarded(
        self,
        entry: ModelEntry,
        fn: Callable[..., _T],
        *args: object,
        group: str | None,
        disconnected: Callable[[], Awaitable[object]] | None,
    ) -> _T:
        """``fn(*args, run_options)`` in an inference worker, under the run limits: at most
        ``model_runs`` of the model at once, the run timeout counting the wait for both.
        ``group`` (the caller's key) takes turns for a worker with the other callers'."""
        control = RunControl()
        settings = self.settings
        counted = functools.partial(self.counter.counted, fn, *args, control.options)
        slots = self.schedules.slots(entry)
        work: Awaitable[tuple[_T | None, Exception | None, bool]]
        if slots.locked():  # wait for a slot, under the run timeout

            async def queued() -> tuple[_T | None, Exception | None, bool]:
                async with slots:
                    return await self.blocking(counted, group)

            work = queued()
        else:  # a free slot: taken now, given back when the worker is done with the run
            await slots.acquire()
            work = self.blocking(counted, group)
            work.add_done_callback(lambda _: slots.release())
        value, error, shared = await run_guarded(
            work, control, timeout_s=settings.run_timeout, disconnected=disconnected
        )
        if error is not None:
            self._fail(error, control, shared)
        return value  # type: ignore[return-value]

    def _fail(self, error: Exception, control: RunControl, shared: bool) -> NoReturn:
        """Raise what to answer for a run that raised ``error`` (see ``failure_for``)."""
        cause = error.__cause__
        from_runtime = isinstance(cause, Exception) and not isinstance(cause, BlindAIError)
        if not from_runtime and control.reason is None:
            raise error  # our own refusal (a pipeline's, say): as it is
        raise failure_for(
            cause if isinstance(cause, Exception) else error,
            control,
            timeout_s=self.settings.run_timeout,
            memory_bytes=self.settings.max_run_memory,
            shared=shared,
        ) from error

    def _fits_reply(self, outputs: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
        """The outputs, or InferenceFailed when their raw bytes pass ``max_response_bytes``."""
        check_reply_size(outputs, limit=self.settings.max_response_bytes, as_json=lambda _: False)
        return outputs


def tenant(caller: Principal) -> str | None:
    """The key whose share of a server-wide budget ``caller`` takes: a tenant's; None for the
    admin key and an open server's callers (no share of their own)."""
    return caller.key_id if caller.kind == "tenant" else None
