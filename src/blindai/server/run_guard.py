"""Run-time limits on inference: memory, time, reply size, and clients that went away.

- **Memory.** onnxruntime's CPU arena is replaced, for the whole process, by one shared arena
  capped at ``max_bytes`` (``cap_arena``; sessions opt in with ``session.use_env_allocators``).
  A run whose tensors would take the arena past the cap fails alone with a clear error; the
  memory is given back after every run (``memory.enable_memory_arena_shrinkage``), so one large
  request does not leave gigabytes behind. Weights are not counted: onnxruntime keeps
  initializers outside the arena. The cap is shared by the runs in flight (``RunCounter``
  counts them), so a request that fails while others were running gets 503 (try again), one
  that fails alone 422.
- **Time.** ``RunControl.terminate`` sets ``RunOptions.terminate``: onnxruntime stops between two
  kernels (inside ``Loop`` bodies too), the worker thread is free again, and the client gets 504.
  The same happens when the client disconnects before its reply.
- **Reply size.** ``check_reply_size`` computes the reply's size from the outputs' shapes and
  dtypes (an upper bound for JSON) and refuses it before anything is encoded.

Not bounded here: memory a kernel takes outside the arena (the characters of string tensors).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from blindai.errors import InferenceFailed, InferenceTimeout, ServerBusy, ServerError

__all__ = [
    "WATCH_AFTER_S",
    "HostArenaError",
    "RunControl",
    "RunCounter",
    "cap_arena",
    "check_reply_size",
    "failure_for",
    "json_bytes_bound",
    "may_fit_again",
    "run_guarded",
]

_T = TypeVar("_T")

_ASKED = re.compile(r"(?:requested bytes of|requested buffer of size) (\d+)")
"""The size of the allocation that failed, in onnxruntime's message."""
WATCH_AFTER_S = 0.05
"""A run still going after this long starts watching for its client going away."""
_OOM_MARKERS = ("Available memory of", "Failed to allocate memory", "bad_alloc")
_JSON_CHARS: dict[str, int] = {"b": 6, "f": 25, "i": 21, "u": 21}
"""Most characters one JSON number of each numpy kind takes, with its separator."""


class HostArenaError(RuntimeError):
    """onnxruntime's allocation failure in a model host (``--run-isolation process``), its text
    as onnxruntime wrote it, with ``others``: how many other runs shared that host's arena when
    it failed (each host has its own, so the server's other runs did not)."""

    def __init__(self, text: str, *, others: int) -> None:
        super().__init__(text)
        self.others = others


def cap_arena(max_bytes: int) -> None:
    """Register the process-wide CPU arena, capped at ``max_bytes``.

    onnxruntime keeps one environment per process; a later call replaces the arena for the
    sessions created after it (a server is one process and calls this once, at start).
    """
    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    # kSameAsRequested (1): regions fit the requests, so that shrinking gives them all back
    config = ort.OrtArenaCfg({"max_mem": max_bytes, "arena_extend_strategy": 1})
    ort.create_and_register_allocator(info, config)


@dataclass
class RunControl:
    """One run's options, and why it was stopped (if it was)."""

    shrink_arena: bool = True
    options: ort.RunOptions = field(init=False)
    reason: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # failures are reported to the client, not logged
        if self.shrink_arena:
            self.options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def terminate(self, reason: str) -> None:
        """Ask onnxruntime to stop this run at the next kernel boundary."""
        if self.reason is None:
            self.reason = reason
        self.options.terminate = True


def failure_for(
    exc: Exception, control: RunControl, *, timeout_s: float, memory_bytes: int, shared: bool
) -> ServerError:
    """The error to answer for an exception onnxruntime raised during a run.

    InferenceTimeout (504) for a run stopped at its timeout; for a run whose tensors went past
    the arena cap, ServerBusy (503) when others were running (``shared``) and the allocation
    that failed would have fit alone (they may have taken the memory it needed), else
    InferenceFailed (422).
    """
    if control.reason == "timeout":
        return _timed_out(timeout_s)
    if control.reason is not None:
        return InferenceFailed(f"the run was stopped: {control.reason}")
    text = str(exc)
    if any(marker in text for marker in _OOM_MARKERS):
        asked = [int(n) for n in _ASKED.findall(text)]
        if shared and not any(n > memory_bytes for n in asked):
            return ServerBusy(
                f"the runs in progress used the server's run memory ({memory_bytes} bytes, "
                "--max-run-memory); try again"
            )
        return InferenceFailed(
            f"this run needs more memory than the server allows ({memory_bytes} bytes, "
            "--max-run-memory)"
        )
    return InferenceFailed(f"the model failed on these inputs: {type(exc).__name__}")


def may_fit_again(exc: BaseException | None, memory_bytes: int) -> bool:
    """Whether a run that raised ``exc`` failed only to allocate, and asked for no more than
    the cap: tried again at once, it may fit. An earlier run's outputs stay in the shared arena
    until they are dropped, and a concurrent small run can then split that free region so that
    the next large run finds no room; both the failed run and the small one give the arena
    back when they end (issue 10's cap once answered 422 to a run that fitted alone)."""
    text = str(exc) if exc is not None else ""
    if not any(marker in text for marker in _OOM_MARKERS):
        return False
    return all(int(n) <= memory_bytes for n in _ASKED.findall(text))


class RunCounter:
    """The server's runs in progress, every model's (they share the capped arena)."""

    def __init__(self, max_run_memory: int) -> None:
        self.max_run_memory = max_run_memory
        self.running = 0
        """How many runs are in progress now."""
        self._lock = threading.Lock()

    def counted(
        self, fn: Callable[..., _T], /, *args: object
    ) -> tuple[_T | None, Exception | None, bool]:
        """``fn(*args)``, counted among the runs in progress: (its value, None, False), or
        (None, the InferenceFailed it raised, whether other runs were in progress then). A run
        that failed only to allocate what fits the cap alone runs once more at once
        (:func:`may_fit_again`)."""
        with self._lock:
            self.running += 1
        try:
            try:
                return fn(*args), None, False
            except InferenceFailed as first:
                if not may_fit_again(first.__cause__, self.max_run_memory):
                    raise
            return fn(*args), None, False  # once more: the arena was given back meanwhile
        except InferenceFailed as exc:
            with self._lock:
                shared = self.running > 1
            if isinstance(exc.__cause__, HostArenaError):  # a model host's arena is its own
                shared = exc.__cause__.others > 0
            return None, exc, shared
        finally:
            with self._lock:
                self.running -= 1


def _timed_out(timeout_s: float) -> InferenceTimeout:
    return InferenceTimeout(
        f"the run took longer than this server allows ({timeout_s:g} s, --run-timeout)"
    )


def _wide(item: object) -> bool:
    """Whether a string element may take more than one byte a character (not ASCII)."""
    return isinstance(item, str) and not item.isascii()


def json_bytes_bound(array: np.ndarray) -> int:
    """An upper bound on the characters of ``array`` written as a flat JSON list."""
    if array.dtype.kind == "O" or array.dtype.kind in "SU":
        # strings: each character may be escaped (6 chars; a character beyond the BMP is a
        # surrogate pair, 12, where the standard library writes the document) plus quotes and
        # separator
        items = array.ravel().tolist() if array.size else []
        chars = sum(len(s) * (2 if _wide(s) else 1) for s in items)
        return 6 * chars + 3 * array.size + 2
    return _JSON_CHARS.get(array.dtype.kind, 25) * array.size + 2


def _binary_bytes(array: np.ndarray) -> int:
    if array.dtype.kind == "O" or array.dtype.kind in "SU":
        # UTF-8: up to 4 bytes a character, then a 4-byte length
        return sum(len(s) * (4 if _wide(s) else 1) + 4 for s in array.ravel().tolist())
    return math.prod(array.shape) * array.dtype.itemsize


def check_reply_size(
    outputs: Sequence[tuple[str, np.ndarray]], *, limit: int, as_json: Callable[[str], bool]
) -> int:
    """Refuse (InferenceFailed) outputs whose reply would pass ``limit`` bytes; returns the bound.

    ``as_json(name)`` says whether an output is written as JSON (bounded per dtype) rather
    than as raw bytes. When refused, a list of outputs is emptied first: the arrays may live in
    onnxruntime's capped arena, and the error's traceback must not keep them there.
    """
    total = 0
    for name, array in outputs:
        total += json_bytes_bound(array) if as_json(name) else _binary_bytes(array)
        if total > limit:
            if isinstance(outputs, list):
                outputs.clear()
            raise InferenceFailed(
                f"the reply would be more than {limit} bytes (--max-response-bytes); ask for "
                "fewer or smaller outputs, or binary outputs"
            )
    return total


async def run_guarded(
    work: Awaitable[_T],
    control: RunControl,
    *,
    timeout_s: float,
    disconnected: Callable[[], Awaitable[object]] | None = None,
    grace_s: float = 1.0,
) -> _T:
    """Await ``work`` (a run using ``control.options``); terminate it after ``timeout_s`` or
    when ``disconnected()`` completes (the client went away).

    The timeout counts from the call (time waiting for a worker included). Once terminated,
    onnxruntime stops at the next kernel boundary, which frees the worker; the caller waits
    ``grace_s`` for that and then gets InferenceTimeout (504) even if one long kernel still
    runs. Exceptions of ``work`` are raised as they are (``failure_for`` turns them into
    answers). A run still going after WATCH_AFTER_S starts watching its client: short runs
    pay for no watcher. A caller whose task is cancelled terminates the run as well.
    """
    loop = asyncio.get_running_loop()
    future = asyncio.ensure_future(work)
    watcher: list[asyncio.Future[object]] = []

    def watch() -> None:
        assert disconnected is not None
        task = asyncio.ensure_future(disconnected())
        task.add_done_callback(lambda _: _wake(woken))
        watcher.append(task)

    woken = loop.create_future()
    future.add_done_callback(lambda _: _wake(woken))
    timers = [loop.call_later(timeout_s, _wake, woken)]
    if disconnected is not None and timeout_s > WATCH_AFTER_S:
        timers.append(loop.call_later(WATCH_AFTER_S, watch))
    try:
        try:
            await woken
        except asyncio.CancelledError:
            # the caller's task was cancelled (a gRPC call its client cancelled, or whose
            # deadline passed; the server stopping): the run stops too, as for a client gone
            # (it went on, past the run timeout, holding its worker and its model's slot)
            control.terminate("the client went away")
            future.add_done_callback(_retrieve)
            raise
        if future.done():
            return future.result()
        gone = bool(watcher) and watcher[0].done()
        control.terminate("the client went away" if gone else "timeout")
        ended = loop.create_future()
        future.add_done_callback(lambda _: _wake(ended))
        timers.append(loop.call_later(grace_s, _wake, ended))
        await ended
        if future.done():
            return future.result()
        # still waiting for a worker, or one kernel still runs: the answer does not wait
        future.cancel()
        future.add_done_callback(_retrieve)
        raise _timed_out(timeout_s)
    finally:
        for timer in timers:
            timer.cancel()
        for task in watcher:
            task.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` if nothing has yet."""
    if not waiter.done():
        waiter.set_result(None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
