"""Run scheduling and dynamic batching for one model: a :class:`ModelQueue` per session.

Every run of a model goes through its queue, first in, first out. At most
``max_concurrent_runs`` runs are in flight at once; a request waits in the queue until one of
them ends. When a run slot frees up, the queue takes the oldest request and, if batching is on
(``max_batch_size`` > 1), the requests behind it whose inputs fit with it (same names, dtypes
and dimensions after the first), up to ``max_batch_size`` rows; it waits at most
``max_queue_delay_us`` after the oldest request arrived for more to come. Under load requests
pile up while the slots are busy and are batched without any added wait; with one client each
request runs alone at once.

Isolation, a hard requirement:

- a batch holds the requests of one caller only (``predict``'s ``caller``: the access key, one
  for every anonymous caller): a model's rows may interact however its author chose (the
  probe at upload is a check, not a proof), so a batch that mixed callers could show one of
  them another's inputs;
- requests are validated (names, dtypes, shapes) before they reach the queue: a malformed one
  never joins a batch;
- a batch's inputs are stacked along the first axis, run once, and every output is split back
  along its first axis exactly (views of the batch's output: the same bytes a run alone gives
  for models whose rows do not interact, which the tests check bit for bit for every datum
  type); an output whose first dimension is not the batch's row count cannot be split, so the
  members are rerun one by one and batching is turned off for that model;
- when a batch fails, each member is rerun alone: a request that fails gets its own error,
  its neighbours their own results;
- a request whose client went away (its task cancelled: its run timeout passed, its gRPC call
  was cancelled) is dropped from the queue, or its result ignored; a run is stopped (its
  ``RunOptions.terminate``) once every request in it has gone: a run that nobody waits for
  any more does not keep a worker and the model's run slot for as long as the model likes.

Batching is only for models whose first dimension is a batch axis: :func:`batch_axis_problem`
says why a model is not (an input or output of rank 0, a fixed first dimension, or first
dimensions with different symbolic names).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import onnxruntime as ort

from blindai.errors import ModelNotReady
from blindai.server._shown import shown, shown_names
from blindai.server.run_guard import RunControl
from blindai.server.runtime import TensorSpec

__all__ = [
    "BatchPolicy",
    "ModelQueue",
    "Offload",
    "Outputs",
    "Predictor",
    "batch_axis_problem",
    "probe_batching",
]

_log = logging.getLogger("blindai.server")
_T = TypeVar("_T")

Outputs = list[tuple[str, np.ndarray]]
"""A run's outputs: (output name, array), in the order asked for."""

Offload = Callable[[Callable[[], _T], str | None], "asyncio.Future[_T]"]
"""Starts a blocking call in a worker thread (the data plane's inference pool), for a caller
(who takes turns for a worker with the others: ``_workers.WorkerPool``); its future."""


class Predictor(Protocol):
    """What the queue needs of a model (:class:`~blindai.server.runtime.OnnxModel` is one)."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs."""

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs."""

    def predict(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        run_options: ort.RunOptions | None = None,
        caller: str | None = None,
    ) -> Outputs:
        """Run the model (blocking); ``run_options.terminate`` stops it; ``caller``: the key
        id that sent the inputs."""


@dataclass(frozen=True)
class BatchPolicy:
    """How one model's runs are scheduled."""

    max_batch_size: int = 1
    """Most rows (first-axis entries) run together; 1 turns batching off."""
    max_queue_delay_us: int = 0
    """Longest a request waits for others to batch with, once a run slot is free."""
    max_concurrent_runs: int = 1
    """Most runs of this model in flight at once."""
    max_queued: int = 1024
    """Most requests waiting; beyond it a request is refused at once (503)."""

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_concurrent_runs", "max_queued"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must not be negative")


def batch_axis_problem(model: Predictor) -> str | None:
    """Why the model's first dimension is not a batch axis (None when it is one).

    Every input and output must have a dynamic first dimension, and where onnxruntime knows
    their symbolic names they must all be the same name.
    """
    names: set[str] = set()
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        for spec in specs:
            if not spec.shape:
                return f"{kind} {shown(spec.name)} has no dimensions (or none onnxruntime knows)"
            if spec.shape[0] is not None:
                return f"{kind} {shown(spec.name)} has a fixed first dimension ({spec.shape[0]})"
            symbol = spec.symbols[0] if spec.symbols else None
            if symbol is not None:
                names.add(symbol)
    if len(names) > 1:
        return f"the first dimensions have different names {shown_names(sorted(names))}"
    return None


def _probe_rows(spec: TensorSpec) -> np.ndarray:
    """Two different rows for one input: dynamic dimensions after the first are 1."""
    shape = (2, *(1 if d is None else d for d in spec.shape[1:]))
    dtype = spec.dtype
    if dtype is None:
        raise ValueError(f"input {shown(spec.name)} has type {spec.onnx_type}")
    if dtype == np.dtype(object):
        return np.stack([np.full(shape[1:], "a", object), np.full(shape[1:], "b", object)])
    first = np.zeros(shape[1:], dtype)
    second = np.ones(shape[1:], dtype)  # 0 and 1: valid indices into any table
    if dtype.kind == "f":
        second = np.random.default_rng(0).standard_normal(shape[1:]).astype(dtype)
    return np.stack([first, second])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.dtype(object):
        return bool(a.tolist() == b.tolist())
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def probe_batching(model: Predictor) -> str | None:
    """Why batching this model would change results (None when a probe shows it does not).

    Beyond :func:`batch_axis_problem`: two different rows are run together and one by one,
    and every output must be the same bytes both ways. This catches models whose rows
    interact (statistics over the batch axis) on the probe's data; it is a check, not a proof.
    Blocking: call it where a model is compiled.
    """
    problem = batch_axis_problem(model)
    if problem is not None:
        return problem
    try:
        feeds = {spec.name: _probe_rows(spec) for spec in model.inputs}
        together = model.predict(feeds)
        alone = [model.predict({k: v[i : i + 1] for k, v in feeds.items()}) for i in (0, 1)]
    except Exception as exc:
        return f"a probe run failed ({type(exc).__name__})"
    for index, (name, array) in enumerate(together):
        if array.ndim == 0 or array.shape[0] != 2:
            return f"output {shown(name)} does not keep the batch axis"
        for row in (0, 1):
            if not _same(array[row : row + 1], alone[row][index][1]):
                return f"output {shown(name)} changes when rows are run together (rows interact)"
    return None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Request:
    feeds: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None
    future: asyncio.Future[Outputs]
    arrived: float
    caller: str | None
    run_ns: list[int] | None = None
    key: tuple[Any, ...] | None = field(init=False)
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.key, self.rows = _batch_key(self.feeds, self.outputs, self.caller)


def _batch_key(
    feeds: Mapping[str, np.ndarray], outputs: tuple[str, ...] | None, caller: str | None
) -> tuple[tuple[Any, ...] | None, int]:
    """What must match for two requests to share a batch (the caller, the outputs asked for,
    the inputs' names, dtypes and dimensions after the first), and the request's row count
    (None and 0 when the request cannot be batched: a scalar input, or first dimensions that
    differ between its inputs)."""
    firsts = {a.shape[0] if a.ndim else None for a in feeds.values()}
    if len(firsts) != 1:
        return None, 0
    rows = firsts.pop()
    if not rows:
        return None, 0
    parts = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items()))
    return (caller, parts, outputs), rows


class ModelQueue:
    """Schedules one model's runs (see the module's docstring); one per loaded session.

    ``offload`` runs a blocking call in a worker thread. ``label`` names the model in the
    server's log. Call :meth:`close` when the model goes.
    """

    def __init__(
        self,
        model: Predictor,
        *,
        policy: BatchPolicy,
        offload: Offload[Any],
        label: str = "model",
    ) -> None:
        self._model = model
        self._offload = offload
        self._label = label
        self.policy = policy
        self.batching = policy.max_batch_size > 1 and batch_axis_problem(model) is None
        """Whether requests may be batched (off for models without a batch axis, and turned
        off when a batch's outputs could not be split)."""
        self._waiting: collections.deque[_Request] = collections.deque()
        self._free = policy.max_concurrent_runs
        self._running: set[asyncio.Task[None]] = set()
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.runs = 0
        """Runs made so far (a batch counts once): for tests and metrics."""

    async def predict(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        caller: str | None,
        run_ns: list[int] | None = None,
    ) -> Outputs:
        """Queue validated inputs; the outputs asked for (all, in model order, when None).

        ``caller`` identifies who sent them (an access key's id; None for anonymous callers):
        only requests of the same caller share a batch. ``run_ns``, when given, receives the
        nanoseconds the run (or the batch) took.
        """
        if self._closed:
            raise ModelNotReady("the model is being removed")
        if len(self._waiting) >= self.policy.max_queued:
            raise ModelNotReady(
                f"{len(self._waiting)} requests are already waiting for this model; try again"
            )
        loop = asyncio.get_running_loop()
        wanted = None if outputs is None else tuple(outputs)
        if self._free > 0 and not self._waiting and not self._delays():
            # idle: run at once, without queueing (requests that come meanwhile queue up
            # behind this run and batch when it ends)
            self._free -= 1
            control = RunControl()
            work = self._offload(
                lambda: self._direct(feeds, wanted, run_ns, control.options, caller), caller
            )
            # the slot is given back when the run ends, not when this task stops waiting
            # (onnxruntime stops at its next kernel boundary, not at once)
            work.add_done_callback(self._slot_free)
            try:
                done: Outputs = await asyncio.shield(work)
            except asyncio.CancelledError:
                control.terminate("the client went away")
                work.add_done_callback(_retrieve)  # its error (stopped) goes to nobody
                raise
            return done
        arrived = self._arrived
        if self._loop is not loop or arrived is None:  # the first request, or a new loop
            self._loop, self._arrived = loop, (arrived := asyncio.Event())
        request = _Request(feeds, wanted, loop.create_future(), loop.time(), caller)
        request.run_ns = run_ns
        self._waiting.append(request)
        arrived.set()
        self._dispatch()
        try:
            return await request.future
        except asyncio.CancelledError:
            request.future.cancel()
            self._forget(request)
            raise

    def _delays(self) -> bool:
        """Whether a request may wait for batch partners even when a run slot is free."""
        return self.batching and self.policy.max_queue_delay_us > 0

    def _direct(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: tuple[str, ...] | None,
        run_ns: list[int] | None,
        options: ort.RunOptions,
        caller: str | None,
    ) -> Outputs:
        """In a worker thread: one request run alone."""
        started = time.perf_counter_ns()
        try:
            self.runs += 1
            return self._model.predict(feeds, outputs, run_options=options, caller=caller)
        finally:
            if run_ns is not None:
                run_ns.append(time.perf_counter_ns() - started)

    def _slot_free(self, _: object = None) -> None:
        self._free += 1
        self._dispatch()

    def _forget(self, request: _Request) -> None:
        try:
            self._waiting.remove(request)
        except ValueError:
            pass  # already taken into a run

    def _dispatch(self) -> None:
        """Start runs while there are free slots and waiting requests."""
        while self._free > 0 and self._waiting and not self._closed:
            self._free -= 1
            task = asyncio.ensure_future(self._one_run())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _one_run(self) -> None:
        try:
            batch = await self._gather()
            if batch:
                await self._run(batch)
        finally:
            self._free += 1
            self._dispatch()

    def _take(self, batch: list[_Request]) -> None:
        """Move the waiting requests that fit with ``batch`` (or start it) into it."""
        rows = sum(r.rows for r in batch)
        kept: collections.deque[_Request] = collections.deque()
        while self._waiting:
            request = self._waiting.popleft()
            if request.future.done():
                continue  # cancelled while waiting
            if not batch:
                batch.append(request)
                rows = request.rows
                if not (self.batching and request.key is not None):
                    break
                continue
            if (
                self.batching
                and request.key is not None
                and request.key == batch[0].key
                and rows + request.rows <= self.policy.max_batch_size
            ):
                batch.append(request)
                rows += request.rows
            else:
                kept.append(request)
            if rows >= self.policy.max_batch_size:
                break
        kept.extend(self._waiting)
        self._waiting = kept

    async def _gather(self) -> list[_Request]:
        """The next batch: the oldest request, those that fit with it, after the delay."""
        batch: list[_Request] = []
        self._take(batch)
        if not batch or not self.batching or batch[0].key is None:
            return batch
        delay = self.policy.max_queue_delay_us / 1e6
        loop = asyncio.get_running_loop()
        deadline = batch[0].arrived + delay
        assert self._arrived is not None
        while sum(r.rows for r in batch) < self.policy.max_batch_size:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
            self._take(batch)
        return [r for r in batch if not r.future.done()]

    async def _run(self, batch: list[_Request]) -> None:
        self.runs += 1
        control = RunControl()

        def gone(_: object) -> None:  # results are set after the run: until then, only a
            if all(r.future.done() for r in batch):  # request that went away is done
                control.terminate("every request of the run went away")

        for request in batch:
            request.future.add_done_callback(gone)
        try:
            results = await self._offload(
                lambda: self._work(batch, control.options), batch[0].caller
            )
        except BaseException as exc:  # the pool was shut down, or this task was cancelled
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(
                        exc if isinstance(exc, Exception) else asyncio.CancelledError()
                    )
            raise
        for request, result in zip(batch, results, strict=True):
            if request.future.done():
                continue
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)

    def _work(
        self, batch: list[_Request], options: ort.RunOptions
    ) -> list[Outputs | BaseException]:
        """In a worker thread: the batch run once and split, or each member alone."""
        started = time.perf_counter_ns()
        try:
            return self._results(batch, options)
        finally:
            took = time.perf_counter_ns() - started
            for request in batch:
                if request.run_ns is not None:
                    request.run_ns.append(took)

    def _results(
        self, batch: list[_Request], options: ort.RunOptions
    ) -> list[Outputs | BaseException]:
        if len(batch) == 1:
            return [self._alone(batch[0], options)]
        try:
            feeds = {
                name: np.concatenate([r.feeds[name] for r in batch]) for name in batch[0].feeds
            }
            # charged to nobody: a batch that fails is run again member by member, and a
            # member that crashes the model's process alone is charged to its caller then
            outputs = self._model.predict(feeds, batch[0].outputs, run_options=options)
        except Exception:
            return [self._alone(r, options) for r in batch]
        split = self._split(outputs, [r.rows for r in batch])
        if split is None:
            return [self._alone(r, options) for r in batch]
        return list(split)

    def _alone(self, request: _Request, options: ort.RunOptions) -> Outputs | BaseException:
        if request.future.done():  # cancelled meanwhile: not worth running
            return asyncio.CancelledError()
        try:
            return self._model.predict(
                request.feeds, request.outputs, run_options=options, caller=request.caller
            )
        except Exception as exc:
            return exc

    def _split(self, outputs: Outputs, rows: list[int]) -> list[Outputs] | None:
        total = sum(rows)
        for index, (_, array) in enumerate(outputs):
            if array.ndim == 0 or array.shape[0] != total:
                if self.batching:
                    self.batching = False
                    # the output's position, never its name: names are the model's bytes
                    _log.warning(
                        "batching turned off for %s: its output %d has no batch axis",
                        self._label,
                        index,
                    )
                return None
        bounds = itertools.accumulate(rows, initial=0)
        return [
            [(name, array[a:b]) for name, array in outputs] for a, b in itertools.pairwise(bounds)
        ]

    def close(self) -> None:
        """Refuse new requests and fail those waiting (ModelNotReady)."""
        self._closed = True
        while self._waiting:
            request = self._waiting.popleft()
            if not request.future.done():
                request.future.set_exception(
                    ModelNotReady("the model was removed before this request ran")
                )
