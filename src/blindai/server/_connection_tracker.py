"""The open connections of one port (``connections``): admission at the cap, and eviction."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blindai.server._limited_http import LimitedHttpProtocol

__all__ = ["ConnectionTracker"]


class ConnectionTracker:
    """The open connections of one port: admission at the cap, eviction of the idlest (or else
    of the one whose TLS handshake started first)."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open: dict[object, LimitedHttpProtocol | None] = {}
        self._handshakes: dict[object, asyncio.Task[None]] = {}  # in the order they began
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, key: object) -> bool:
        """Take a slot for a new connection; False when none can be freed."""
        if len(self._open) >= self.max_connections and not self._evict_one():
            self.refused += 1
            return False
        self._open[key] = None
        return True

    def handshake(self, key: object, task: asyncio.Task[None]) -> None:
        """The task setting the connection up (its TLS handshake), until ``attach``."""
        if key in self._open:
            self._handshakes[key] = task

    def attach(self, key: object, protocol: LimitedHttpProtocol) -> None:
        """The connection's HTTP protocol, once TLS (if any) is set up."""
        self._handshakes.pop(key, None)
        if key in self._open:
            self._open[key] = protocol

    def release(self, key: object) -> None:
        """Free the connection's slot (idempotent)."""
        self._open.pop(key, None)
        self._handshakes.pop(key, None)

    def _evict_one(self) -> bool:
        """Make room: drop the connection idle the longest or, with none idle, the one whose
        TLS handshake began first. Handshakes could not be dropped: a client opening
        ``max_connections`` TCP connections and sending nothing, again every
        ``header_timeout_s``, had every other client refused for good. A real handshake takes
        milliseconds: to drop one, that many newer ones must have begun in the meantime."""
        idle = [p for p in self._open.values() if p is not None and p.is_idle()]
        if idle:
            min(idle, key=lambda p: p.last_active).evict()  # releases its slot
        elif self._handshakes:
            key, task = next(iter(self._handshakes.items()))
            task.cancel()  # its socket is closed as the task ends
            self.release(key)
        else:
            return False
        self.evicted += 1
        return True
