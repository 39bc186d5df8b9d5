"""Blocking work off the event loop: one helper, a named pool of worker threads.

Every blocking call the server makes from a request (compiling a model, running it, decoding
a large body, collecting evidence) goes through :meth:`WorkerPool.run`. Separate pools keep
separate capacity: compiling a model never takes a thread that inference needs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["WorkerPool"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class WorkerPool:
    """Up to ``threads`` worker threads, started on demand (``name`` prefixes their names)."""

    def __init__(self, threads: int, *, name: str) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` in a worker thread; the caller's task waits without blocking."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[[], _T], /) -> asyncio.Future[_T]:
        """``fn()`` in a worker thread, as a future of the running loop (a caller that must
        know when the work really ends, even if it stops waiting, shields it)."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        """Stop taking work; work not yet started is cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)
