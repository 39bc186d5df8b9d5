"""Stopping on SIGTERM or SIGINT: every port at once, requests in flight given time to finish.

Each uvicorn server takes the signals for itself. With several on one event loop they took a
signal in turn, and the last one re-raised it to the default handler: the process died of it
(exit status -15, nothing cleaned up), and only after each server had waited for its
connections, an idle TLS one for 30 s (a TLS close waits for the client's close_notify).

Here one handler, for the whole process, tells every HTTP server and the gRPC server to stop:
no new connections or calls, idle connections dropped at once
(``LimitedHttpProtocol.shutdown``), requests in flight answered (their connections then
close). What still runs ``timeout_s`` later is cut, and so is everything at a second signal:
a request not yet answered gets 503 (its run is terminated as for a client gone, and has
``CUT_GRACE_S`` to end) and every connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Protocol

from blindai.server.connections import LimitedServer

__all__ = ["CUT_GRACE_S", "GracefulStop"]

_log = logging.getLogger("blindai.server")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CUT_GRACE_S = 2.0
"""Seconds requests cut at the end are given to wind down (their runs terminated)."""


class _GrpcServer(Protocol):
    async def stop(self, grace: float | None) -> None: ...  # pragma: no cover - a protocol


class GracefulStop:
    """The process's SIGTERM and SIGINT handler (:meth:`install` it on the running loop, and
    :meth:`finish` once the HTTP servers have returned)."""

    def __init__(
        self,
        servers: Sequence[LimitedServer],
        *,
        timeout_s: float,
        grpc_server: _GrpcServer | None = None,
    ) -> None:
        self._servers = list(servers)
        self._timeout_s = timeout_s
        self._grpc = grpc_server
        self._grpc_stops: list[asyncio.Task[None]] = []
        self._deadline: asyncio.TimerHandle | None = None
        self.stopping = False

    def install(self) -> None:
        """Take SIGTERM and SIGINT (from the main thread's running loop)."""
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Begin to stop; the second time, stop at once."""
        name = signal.Signals(sig).name
        if self.stopping:
            _log.warning("%s again: stopping now, requests in flight are cut", name)
            self._cut()
            return
        self.stopping = True
        running = sum(len(s.server_state.tasks) for s in self._servers)
        _log.info(
            "%s: stopping; no new connections, %d HTTP request(s) in flight have up to %g s "
            "(a second signal stops at once)",
            name,
            running,
            self._timeout_s,
        )
        for server in self._servers:
            server.should_exit = True
        # grpc-core's own grace outlasts the deadline, which cuts the calls left (and says so)
        self._stop_grpc(self._timeout_s + CUT_GRACE_S)
        self._deadline = asyncio.get_running_loop().call_later(self._timeout_s, self._expired)

    async def finish(self) -> None:
        """Once the HTTP servers are done: stop gRPC (at once, unless a signal gave it time)
        and give the signals back."""
        cut = [task for server in self._servers for task in server.server_state.tasks]
        if cut:
            await asyncio.wait(cut, timeout=CUT_GRACE_S)
        if not self._grpc_stops:
            self._stop_grpc(None)
        for task in self._grpc_stops:  # the deadline may add one meanwhile
            await task
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    def _expired(self) -> None:
        running = sum(len(s.server_state.tasks) for s in self._servers)
        _log.warning(
            "shutdown timeout (%g s) reached: %d HTTP request(s) and any gRPC calls still in "
            "flight are cut",
            self._timeout_s,
            running,
        )
        self._cut()

    def _cut(self) -> None:
        for server in self._servers:
            server.should_exit = server.force_exit = True
            server.cut_connections()
        self._stop_grpc(None)

    def _stop_grpc(self, grace: float | None) -> None:
        if self._grpc is not None:
            self._grpc_stops.append(asyncio.ensure_future(self._grpc.stop(grace)))
