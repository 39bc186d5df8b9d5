"""The transport of a limited HTTP connection (``connections``): a small response leaves whole,
and what the client has not taken yet is counted.

uvicorn writes a response's head and body apart: two TLS records in two socket writes, and a
client that wakes up twice. Here the head waits (until the body's write, or the end of the
event loop's turn) so that a small response leaves whole.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
from collections.abc import Callable
from typing import Any

__all__ = ["HeadWaits"]

_JOINED_BYTES = 64 << 10
"""Writes up to this size are joined with a waiting head; larger ones go as they are."""
_SIOCOUTQNSD = 0x894B
"""Linux: bytes of a TCP socket's send queue not yet sent (held back by the peer's receive
window). Sent bytes not yet acknowledged are not counted (SIOCOUTQ counts them): a client
that has read everything may delay its acknowledgement 40 ms, and its connection looked busy
meanwhile."""


class HeadWaits:
    """A transport whose writes of up to ``_JOINED_BYTES`` wait, joined with the next write or
    sent at the end of the event loop's turn (whichever comes first); closing sends them
    first. Everything else is the wrapped transport's.

    It also keeps the count that bounds how long a client may take to read: the bytes written
    since all that was written before had been taken (a *backlog*, which starts then), and how
    many of them the client has taken. What is not taken yet is what waits in the transport's
    buffer and in the kernel's, unsent: a TLS transport hands what it has
    encrypted to the TCP one, whose buffer it does not count, so on its own it could say that
    nothing waits while megabytes still did.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        closing: Callable[[], None],
        large: Callable[[int], None] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._closing = closing
        self._large = large
        """Called with the size of each write larger than ``_JOINED_BYTES``."""
        self._waiting: list[bytes] = []
        sock = transport.get_extra_info("socket")
        self._fd: int | None = sock.fileno() if sock is not None else None
        self.backlog_start = loop.time()
        """When the server last wrote after the client had taken all it had written."""
        self._written = 0  # bytes handed to the transport since backlog_start

    def write(self, data: bytes) -> None:
        """Write ``data`` after what waits; a small write waits too."""
        waiting = self._waiting
        if len(data) <= _JOINED_BYTES:
            if not waiting:
                self._loop.call_soon(self.flush)
            waiting.append(data)
            if len(waiting) > 1:  # a head and its body: together, now
                self.flush()
            return
        self.flush()
        self._send(data)

    def _send(self, data: bytes) -> None:
        self._transport.write(data)  # first: counting must not delay the answer
        if len(data) <= _JOINED_BYTES and not self._transport.get_write_buffer_size():
            # a small answer the transport handed on whole (most of them): a new backlog,
            # without asking the kernel (a system call an answer). Only the clock's start
            # may come later than it should: a client that takes nothing fills the kernel's
            # buffer, then the transport's, and writes are counted again.
            self.backlog_start = self._loop.time()
            self._written = len(data)
        elif self.backlog() <= len(data):  # the client had taken all before: a new backlog
            self.backlog_start = self._loop.time()
            self._written = len(data)
        else:
            self._written += len(data)
        if self._large is not None and len(data) > _JOINED_BYTES:
            self._large(len(data))

    def backlog(self) -> int:
        """Bytes written and not yet taken by the client: in the transport's buffer and in the
        kernel's send queue, not yet sent."""
        pending = self._transport.get_write_buffer_size()
        if self._fd is not None and not self._transport.is_closing():
            queue = array.array("i", [0])
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, _SIOCOUTQNSD, queue)
                pending += queue[0]
        return pending

    def taken(self) -> int:
        """Bytes of the current backlog the client has taken."""
        return self._written - self.backlog()

    def flush(self) -> None:
        """Send what waits."""
        if self._waiting:
            data = self._waiting[0] if len(self._waiting) == 1 else b"".join(self._waiting)
            self._waiting = []
            if not self._transport.is_closing():
                self._send(data)

    def close(self) -> None:
        """Send what waits, then close (once the client has taken what was written)."""
        self.flush()
        self._transport.close()
        self._closing()

    def abort(self) -> None:
        """Close at once; what waits is dropped."""
        self._waiting = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
