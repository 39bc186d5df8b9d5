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
backlog. A group may also be held to a ``share`` of the threads (``submit``'s ``share``: the
server holds each tenant's key to half of them): its work beyond that waits, even with threads
free, so that runs which last long (one long kernel) cannot take every thread from the others.
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


class _Waiting(collections.deque[_Job]):
    """A group's waiting work, and how many of its jobs may run at once (None: any)."""

    def __init__(self, share: int | None) -> None:
        super().__init__()
        self.share = share


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
        self._groups: dict[str | None, _Waiting] = {}
        self._turns: collections.deque[str | None] = collections.deque()
        """The groups with work waiting, in the order they take their next turn."""
        self._running: dict[str | None, int] = {}
        """Jobs running per group held to a share."""
        self._held = 0
        """Tokens taken for jobs whose groups were at their share: one is put back each time
        such a job ends."""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` in a worker thread; the caller's task waits without blocking."""
        return await self.submit(functools.partial(fn, *args, **kwargs))

    def submit(
        self, fn: Callable[[], _T], /, *, group: str | None = None, share: int | None = None
    ) -> asyncio.Future[_T]:
        """``fn()`` in a worker thread, as a future of the running loop (a caller that must
        know when the work really ends, even if it stops waiting, shields it). Cancelling the
        future before a worker takes it means it never runs. Waiting work is taken in turns
        between ``group``s; a group given a ``share`` runs at most that many jobs at once (see
        the module; a group's share is the one its waiting work was submitted with)."""
        if share is not None and share < 1:
            raise ValueError("a group's share is at least one thread")
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
                waiting = self._groups[group] = _Waiting(share)
                self._turns.append(group)
            waiting.append((fn, future, loop))
        self._tokens.put(True)
        return future

    def _next(self) -> tuple[_Job, str | None, bool] | None:
        """The next job, its group and whether that group is held to a share: the oldest job
        of the first group in turn below its share. None once closed, or when every group
        with work waiting is at its share (the token is then held until one of theirs ends)."""
        with self._lock:
            turns = self._turns
            for _ in range(len(turns)):
                group = turns.popleft()
                waiting = self._groups[group]
                share = waiting.share
                if share is not None and self._running.get(group, 0) >= share:
                    turns.append(group)  # its turn comes again once one of its jobs ends
                    continue
                job = waiting.popleft()
                if waiting:
                    turns.append(group)
                else:
                    del self._groups[group]
                if share is not None:
                    self._running[group] = self._running.get(group, 0) + 1
                return job, group, share is not None
            if turns:
                self._held += 1
            return None

    def _ended(self, group: str | None) -> None:
        """A job of a group held to a share ended: a held token can start one now."""
        with self._lock:
            left = self._running[group] - 1
            if left:
                self._running[group] = left
            else:
                del self._running[group]
            if not self._held:
                return
            self._held -= 1
        self._tokens.put(True)

    def _work(self) -> None:
        tokens = self._tokens
        while tokens.get():
            taken = self._next()
            if taken is None:
                continue  # closed, or held: this thread waits for the next token, not idle
            job, group, shared = taken
            loop = job[2]
            try:
                settle = _run(*job)
            finally:
                del job, taken  # nothing of a request outlives it in this thread
                if shared:  # before its result is seen: the group's next job finds room
                    self._ended(group)
            if settle is not None:
                _call(loop, settle)
                del settle
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
) -> Callable[[], None] | None:
    """Run ``fn``; what settles ``future`` with its result or error, to be called on ``loop``
    (None when the future was cancelled before: nothing ran)."""
    if future.cancelled():  # a stale read at worst: the result is then dropped
        return None
    try:
        result = fn()
    except BaseException as exc:  # handed to the waiting task, never lost
        return _settler(future, None, exc)
    return _settler(future, result, None)


def _settler(
    future: asyncio.Future[Any], result: object, error: BaseException | None
) -> Callable[[], None]:
    def settle() -> None:
        if future.cancelled():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    return settle


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """``fn()`` on ``loop``'s thread; nothing when that loop is closed (the server stopped)."""
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:
        pass
