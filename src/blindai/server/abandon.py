"""Work whose client went away: a switch that stops it (an upload's compile child killed).

An upload's bytes are all read before its checks and compilation begin, which take seconds for
a large model (at most ``--compile-timeout`` in the child, then the server's own compile). A
client that leaves meanwhile will not read the answer; without this, its model was compiled,
stored and registered all the same, holding a compile worker and one of its key's
``--max-models-per-key`` places for an id nobody received (a client that retried after a
timeout held two). The upload watches its client; once it is gone, :meth:`Abandon.set` kills
the child checking the model, if there is one, a model host being started for it
(``--run-isolation process``: the start looks at :meth:`Abandon.is_set` every ``POLL_S``) is
killed, and the upload raises :class:`ClientGone` at its next step instead of registering the
model. A session built in the server's own process cannot be stopped: it runs to its end (the
guard bounded its time) and is then dropped.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

__all__ = ["Abandon", "ClientGone"]


class ClientGone(Exception):
    """The client of a request went away before its answer: nothing to answer (HTTP 499 in
    the access log), nothing kept."""


class Abandon:
    """Set, from the event loop, once a request's client has gone; read from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._stop: Callable[[], object] | None = None

    def is_set(self) -> bool:
        """Whether the client has gone."""
        return self._set

    def set(self) -> None:
        """The client has gone: stop what :meth:`stopping` guards now, and every later step."""
        with self._lock:
            self._set = True
            stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def check(self) -> None:
        """ClientGone once the client has gone (called between the steps of the work)."""
        if self._set:
            raise ClientGone("the client went away")

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], object]) -> Iterator[None]:
        """While in the block, :meth:`set` calls ``stop()`` (kills the child doing the work);
        ClientGone at once if the client has already gone."""
        with self._lock:
            if self._set:
                raise ClientGone("the client went away")
            self._stop = stop
        try:
            yield
        finally:
            with self._lock:
                self._stop = None
