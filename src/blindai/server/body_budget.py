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

A v2 inference request's JSON counts :data:`JSON_WEIGHT` times its length (its whole body,
or the JSON head before the binary data): parsing it makes an object per element, up to 23
times the JSON's size beside it (measured: 60 MiB of ``["a","a",...]`` took 1.4 GB, 30 MiB
of ``[0,0,...]`` 570 MB), so 64 bodies of 64 MiB, within the budget counted by their length,
would have taken 90 GB. A request is charged at most a tenant's share of the budget, so that
the largest JSON request still fits when alone.

Answers count too: a large answer (over 64 KiB) waits in the server's memory until its client
takes it, and the connection layer holds its bytes in the same budget meanwhile
(``connections.AnswerBudget``): while clients leave answers unread, new requests with bodies
find less room. An answer counts for the tenant's key of the request it answers (the
middleware names it in the scope, ``connections.BUDGET_KEY``): a tenant leaving its answers
unread fills its own share, not the others'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from blindai.errors import ServerBusy
from blindai.server.access.middleware import ErrorRenderer
from blindai.server.access.principal import Principal
from blindai.server.connections import BUDGET_KEY
from blindai.server.key_shares import KeyShares
from blindai.server.protocols._http import header_int

__all__ = ["JSON_WEIGHT", "BodyBudget", "BodyBudgetMiddleware", "charge", "weighted"]

JSON_WEIGHT = 24
"""What a byte of a v2 inference request's JSON counts for in the budget (see the module)."""
_JSON_HEAD = b"inference-header-content-length"


class BodyBudget(KeyShares):
    """``total`` bytes of request bodies, taken and given back (on the event loop only); one
    tenant's key may hold at most ``per_key`` of them at once (default: half), so that one
    tenant sending bodies slowly cannot hold the whole budget for the others (a body declares
    its length before it comes, at the pace its client likes: --body-min-rate lets a 1 GiB
    upload take hours). :meth:`hold` takes memory already in use (an answer its client has
    not taken yet, counted by the connection layer) for the key of the request it answers: a
    tenant whose answers wait unread then finds its own share full, not the others'."""

    def take(self, size: int, key: str | None = None) -> str | None:
        """Take ``size`` bytes if they fit (None), else take nothing and say why; ``key``: the
        tenant's key taking them (None: the admin key, or an open server's callers). A tenant
        is told what its own key holds, never what the others' requests hold (the server's
        load, which /metrics keeps from tenants)."""
        held, mine = self.held, self.of(key)
        full = self.fit(size, key)
        if full == "total" and key is not None:  # not what the other tenants' requests hold
            return (
                f"the requests in progress leave no room for this one's {size} bytes in "
                f"--max-body-memory ({self.total} bytes, of which this key holds {mine} bytes); "
                "try again"
            )
        if full == "total":
            return (
                f"the server holds {held} bytes of other requests' bodies and unread "
                f"answers, and may hold {self.total} (--max-body-memory); try again"
            )
        if full == "key":
            return (
                f"this key's requests in progress hold {mine} bytes of bodies, and one "
                f"key may hold {self.per_key} (half of --max-body-memory, at least the largest "
                "body); try again"
            )
        return None


def charge(path: str, headers: Iterable[tuple[bytes, bytes]], declared: int, most: int) -> int:
    """What a request of ``declared`` body bytes takes from the budget: its JSON counted
    :data:`JSON_WEIGHT` times on a v2 inference route (the whole body, or the length its
    ``Inference-Header-Content-Length`` gives), at most ``most``."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return declared
    json = declared
    for name, value in headers:
        if name == _JSON_HEAD:
            given = header_int(value.decode("latin-1"))
            json = declared if given is None else max(0, min(given, declared))
            break
    return weighted(declared, JSON_WEIGHT, most, part=json)


def weighted(size: int, weight: int, most: int, *, part: int | None = None) -> int:
    """What ``size`` bytes take from the budget when ``part`` of them (all by default) count
    ``weight`` times: capped at ``most`` (a tenant's share, so that the largest request still
    fits when alone), never less than ``size``."""
    part = size if part is None else part
    return max(size, min(size + (weight - 1) * part, most))


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
        key = None  # the admin key and an open server's callers: no share of their own
        if scope["type"] == "http":
            size = _declared(scope, self.most_at.get(scope.get("path", ""), self.most))
            principal = (scope.get("state") or {}).get("principal")
            if isinstance(principal, Principal) and principal.kind == "tenant":
                key = principal.key_id
                scope[BUDGET_KEY] = key  # the connection layer counts its answer for the key
        if not size:
            await self.app(scope, receive, send)
            return
        budget = self.budget
        path = scope.get("path", "")
        size = charge(path, scope["headers"], size, budget.per_key)
        refusal = budget.take(size, key)
        if refusal is not None:
            reply = self.render(scope.get("path", ""), refusal, 503, ServerBusy.__name__)
            await reply(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            budget.give(size, key)
