"""Model host starts ahead of need (``model_host``): the spare child, and the restarter thread.

:class:`Spare` keeps one child started ahead for the whole server (its interpreter started and
onnxruntime imported), which has received nothing: no model, no setting, no request. A start
is handed it, then starts the next one once it handed over its model (the compile guard keeps
its spare child the same way): one fork per start, as before, and at most one spare.

:class:`Restarter` is the one thread that starts the hosts of crashed models again before
their next request: one start at a time for the whole server, each model queued once; what
it starts, and whether, is the model's to decide (``restart()``: the crash limit, an unload).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from blindai.server._host_process import Spawned, StartStopped, discard, spawn

__all__ = ["Restartable", "Restarter", "Spare"]

_log = logging.getLogger("blindai.server")
_CLOSE_WAIT_S = 10.0
"""Longest :meth:`Spare.close` and :meth:`Restarter.close` wait (a start looks at its stop
every ``POLL_S``; a fork takes milliseconds)."""


class Spare:
    """At most one child started ahead, handed to the next start (see the module)."""

    def __init__(self, *, enabled: bool = True, spawner: Callable[[], Spawned] = spawn) -> None:
        self._enabled = enabled
        """False (``--no-spare-processes``): none is started; each start forks its own."""
        self._spawn = spawner
        """Starts a child (a model host's; a tokenizer's for ``tokenizer_host``)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._spare: Spawned | None = None
        self._spawning = 0
        """Spares being forked now (:meth:`close` waits for them)."""
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The spare's process id (None: there is none now)."""
        spare = self._spare
        return None if spare is None else spare[0].pid

    def warm(self) -> None:
        """Start the spare now, unless there is one (at server start, and after each take)."""
        with self._lock:
            if self._spare is not None or self._closed or not self._enabled:
                return
            self._spawning += 1
        try:
            spawned: Spawned | None = self._spawn()  # not under the lock: no take waits for it
            with self._lock:
                if self._spare is None and not self._closed:
                    self._spare, spawned = spawned, None
            if spawned is not None:  # closed meanwhile, or another made one
                discard(spawned)
        finally:
            with self._lock:
                self._spawning -= 1
                self._idle.notify_all()

    def replenish(self) -> None:
        """Start the next spare once a start handed the last its model (a failure is the next
        start's to meet: it then forks a child of its own)."""
        try:
            self.warm()
        except OSError as exc:
            _log.warning("model host: the spare process could not be started (%s)", exc)

    def take(self) -> Spawned:
        """A child for a start: the spare when it is alive, else a new one (one that ends as it
        is handed over is replaced by ``Host.start``). StartStopped once closed (the server's
        end)."""
        with self._lock:
            if self._closed:
                raise StartStopped("the server is shutting down")
            spawned, self._spare = self._spare, None
        if spawned is not None and spawned[0].poll() is None:
            return spawned
        if spawned is not None:
            discard(spawned)
        return self._spawn()

    def close(self) -> None:
        """Kill and reap the spare, and wait for one being forked (its forker discards it)."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            discard(spare)
        with self._lock:
            self._idle.wait_for(lambda: not self._spawning, timeout=_CLOSE_WAIT_S)


class Restartable(Protocol):
    """A model whose host the restarter starts again."""

    def restart(self) -> None:
        """Start the host again if it should be (never raises)."""


class Restarter:
    """One thread starting hosts again in the background (see the module); started at the
    first model queued."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Restartable] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def soon(self, model: Restartable) -> None:
        """Queue ``model`` (once) for its ``restart()`` in the thread."""
        with self._lock:
            if self._closed or model in self._queue:
                return
            self._queue.append(model)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="blindai-host-restarts", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def forget(self, model: Restartable) -> None:
        """Drop ``model`` from the queue (it was unloaded)."""
        with self._lock, contextlib.suppress(ValueError):
            self._queue.remove(model)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                model = self._queue.popleft()
            model.restart()

    def close(self) -> None:
        """Start nothing more, and wait for the start under way (the caller has stopped its
        model first: the start gives up within ``POLL_S``)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(_CLOSE_WAIT_S)
