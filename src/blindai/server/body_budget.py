"""One bound on the request bodies the server holds at once, every HTTP port together.

Each port bounds one body (``--max-request-bytes``, an upload's ``--max-model-bytes``), and
``--max-connections`` how many connections a port takes; their product is no bound a server
can hold: a thousand clients each sending a 64 MiB ``/run`` body (or, on an open server, a
1 GiB upload, which waits in a memory file while it compiles) took gigabytes, until the kernel
killed the server for everyone.

:class:`BodyBudgetMiddleware` takes, before a request's body is read, the bytes its
``Content-Length`` declares (a chunked body: the most its port takes) from one
:class:`BodyBudget` shared by the ports, and gives them back when the request has been
answered. A request that does not fit gets ``503 ServerBusy`` at once, its body unread (the
connection layer drops what the client still sends); the client may try again. With access
control on, the middleware runs after authentication: a request without a valid key never
takes any of it.

Answers count too: a large answer (over 64 KiB) waits in the server's memory until its client
takes it, and the connection layer holds its bytes in the same budget meanwhile
(``connections.AnswerBudget``): while clients leave answers unread, new requests with bodies
find less room.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from blindai.errors import ServerBusy
from blindai.server.access.middleware import ErrorRenderer
from blindai.server.protocols._http import header_int

__all__ = ["BodyBudget", "BodyBudgetMiddleware"]


class BodyBudget:
    """``total`` bytes of request bodies, taken and given back (on the event loop only)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        """Bytes taken by the requests in progress."""

    def take(self, size: int) -> bool:
        """Take ``size`` bytes if they fit (True), else take nothing (False)."""
        if self.held + size > self.total:
            return False
        self.held += size
        return True

    def hold(self, size: int) -> None:
        """Take ``size`` bytes even beyond the total (memory already in use: an answer that
        its client has not taken yet, counted by the connection layer)."""
        self.held += size

    def give(self, size: int) -> None:
        """Give back what :meth:`take` took."""
        self.held -= size


def _declared(scope: Scope, most: int) -> int:
    """The body bytes a request will bring: its Content-Length (at most ``most``: a larger
    one is refused by its route before its body is read), ``most`` for a chunked body."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = header_int(value.decode("latin-1"))
            return most if declared is None else min(declared, most)
        if name == b"transfer-encoding":
            return most
    return 0


class BodyBudgetMiddleware:
    """Holds each request's body bytes in ``budget`` while it is served (see the module).

    ``most``: the largest body a request may bring, ``most_at`` for the paths that take larger
    ones (``/upload``); ``render`` writes the 503 in the protocol of the request's path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        budget: BodyBudget,
        most: int,
        most_at: Mapping[str, int],
        render: ErrorRenderer,
    ) -> None:
        self.app = app
        self.budget = budget
        self.most = most
        self.most_at = dict(most_at)
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = 0
        if scope["type"] == "http":
            size = _declared(scope, self.most_at.get(scope.get("path", ""), self.most))
        if not size:
            await self.app(scope, receive, send)
            return
        budget = self.budget
        if not budget.take(size):
            message = (
                f"the server holds {budget.held} bytes of other requests' bodies and may hold "
                f"{budget.total} (--max-body-memory); try again"
            )
            reply = self.render(scope.get("path", ""), message, 503, ServerBusy.__name__)
            await reply(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            budget.give(size)
