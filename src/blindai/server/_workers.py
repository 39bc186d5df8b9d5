"""Blocking work off the event loop: one helper, a named pool of worker threads.

Every blocking call the server makes from a request (compiling a model, running it, decoding
a large body, collecting evidence) goes through :meth:`WorkerPool.run`. Separate pools keep
separate capacity: compiling a model never takes a thread that inference needs.

The pool hands each result straight to the event loop (``call_soon_threadsafe``) instead of
going through ``concurrent.futures`` (a second future, its condition variable and a chain of
callbacks on both threads): a request's trip to a worker and back is most of what serving a
tiny model costs (measured: about 100 µs of a 0.7 ms /run, of which this saves a part).

Work waiting for a thread is taken in turns between groups (``submit``'s ``group``: the server
passes the caller's API key), oldest first within a group: a tenant that sends many runs at
once delays another tenant's next run by at most one run per busy thread, not by its whole
backlog.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["WorkerPool"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class WorkerPool:
    """Up to ``threads`` worker threads, started on demand (``name`` prefixes their names)."""

    def __init__(self, threads: int, *, name: str) -> None:
        if threads < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._max = threads
        self._name = name
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()
        """One True per job submitted (a worker then takes the next job in turn), one False
        per thread to stop it."""
        self._groups: dict[str | None, collections.deque[_Job]] = {}
        self._turns: collections.deque[str | None] = collections.deque()
        """The groups with work waiting, in the order they take their next turn."""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` in a worker thread; the caller's task waits without blocking."""
        return await self.submit(functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[[], _T], /, *, group: str | None = None) -> asyncio.Future[_T]:
        """``fn()`` in a worker thread, as a future of the running loop (a caller that must
        know when the work really ends, even if it stops waiting, shields it). Cancelling the
        future before a worker takes it means it never runs. Waiting work is taken in turns
        between ``group``s (see the module)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self._name} workers are stopped")
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            waiting = self._groups.get(group)
            if waiting is None:
                waiting = self._groups[group] = collections.deque()
                self._turns.append(group)
            waiting.append((fn, future, loop))
        self._tokens.put(True)
        return future

    def _next(self) -> _Job | None:
        """The next job: the oldest of the group whose turn it is (None once closed)."""
        with self._lock:
            if not self._turns:
                return None
            group = self._turns.popleft()
            waiting = self._groups[group]
            job = waiting.popleft()
            if waiting:
                self._turns.append(group)
            else:
                del self._groups[group]
            return job

    def _work(self) -> None:
        tokens = self._tokens
        while tokens.get():
            job = self._next()
            if job is not None:
                _run(*job)
                del job  # nothing of a request outlives it in this thread
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Stop taking work; work not yet started is cancelled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = len(self._threads)
            jobs = [job for waiting in self._groups.values() for job in waiting]
            self._groups.clear()
            self._turns.clear()
        for _fn, future, loop in jobs:
            _call(loop, future.cancel)
        for _ in range(threads):
            self._tokens.put(False)


def _run(
    fn: Callable[[], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
) -> None:
    if future.cancelled():  # a stale read at worst: the result is then dropped
        return
    try:
        result = fn()
    except BaseException as exc:  # handed to the waiting task, never lost
        _deliver(loop, future, None, exc)
    else:
        _deliver(loop, future, result, None)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: object,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    _call(loop, settle)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """``fn()`` on ``loop``'s thread; nothing when that loop is closed (the server stopped)."""
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:
        pass
