"""Pure-ASGI middleware of the attested ports: authenticate every request, audit it when done.

Deny by default: every path needs a valid key when access control is on, except the v2 health
routes and server metadata (Kubernetes probes call them; they say nothing about models), and
the evidence a client checks on each connection before it sends anything (``/attestation``,
``/gpu-evidence``). The
caller goes into ``scope["state"]["principal"]`` for the routes (:func:`caller_of`); a request
without a valid key is answered 401 here, before any route runs. A request that touches a model
or a key is written to the audit log (its key's name, action, the id of the model it resolved
to, status, duration) as its response starts, before the client can see the answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blindai.errors import AuthenticationError
from blindai.server._connection_limits import answered
from blindai.server.access.audit import AuditAction
from blindai.server.access.control import AccessControl
from blindai.server.access.principal import Principal

__all__ = [
    "OPEN_PATHS",
    "TARGET_KEY",
    "AccessMiddleware",
    "ErrorRenderer",
    "audit_action",
    "caller_of",
]

#: paths that need no key
OPEN_PATHS = frozenset(
    {"/v2", "/v2/health/live", "/v2/health/ready", "/attestation", "/gpu-evidence"}
)

TARGET_KEY = "target_key"
"""The request state's entry a key route sets to the id of the key it created or revoked (the
audit line's ``target_key``), as a model route sets ``model_id``."""

ErrorRenderer = Callable[[str, str, int, str], Response]
"""``render(path, message, status, error_type)``: the error reply of the protocol at ``path``."""

_MODEL = r"/v2/models/[^/]+(?:/versions/[^/]+)?"
_ACTIONS: tuple[tuple[str, re.Pattern[str], AuditAction], ...] = tuple(
    (method, re.compile(pattern), action)
    for method, pattern, action in (
        ("POST", "/upload", AuditAction.UPLOAD),
        ("POST", "/run", AuditAction.RUN),
        ("POST", "/delete", AuditAction.DELETE),
        ("POST", "/export", AuditAction.EXPORT),
        ("GET", "/models", AuditAction.LIST),
        ("GET", "/keys", AuditAction.KEY_LIST),
        ("POST", "/keys/create", AuditAction.KEY_CREATE),
        ("POST", "/keys/revoke", AuditAction.KEY_REVOKE),
        ("GET", "/v2/models/stats", AuditAction.STATISTICS),
        ("GET", _MODEL + "/stats", AuditAction.STATISTICS),
        ("POST", _MODEL + "/infer", AuditAction.RUN),
        ("GET", _MODEL + "(?:/ready)?", AuditAction.METADATA),
        ("POST", "/v2/repository/index", AuditAction.LIST),
        ("POST", "/v2/repository/models/[^/]+/load", AuditAction.LOAD),
        ("POST", "/v2/repository/models/[^/]+/unload", AuditAction.UNLOAD),
    )
)


_EXACT: dict[tuple[str, str], AuditAction] = {
    (method, pattern.pattern): action
    for method, pattern, action in reversed(_ACTIONS)  # the first listed wins, as below
    if re.escape(pattern.pattern) == pattern.pattern  # no pattern syntax: a literal path
}
"""The literal paths of ``_ACTIONS``, looked up at once (most requests are on one of them)."""


def audit_action(method: str, path: str) -> AuditAction | None:
    """What a request does, for the audit log; None for requests that touch no model or key.

    A HEAD request is its GET's action: Starlette runs the GET route for it (the lookup, the
    listing) and drops only the body."""
    if method == "HEAD":
        method = "GET"
    exact = _EXACT.get((method, path))
    if exact is not None:
        return exact
    for wanted, pattern, action in _ACTIONS:
        if method == wanted and pattern.fullmatch(path):
            return action
    return None


def caller_of(scope: Scope) -> Principal:
    """The authenticated caller of a request; fails closed when the middleware did not run."""
    principal = (scope.get("state") or {}).get("principal")
    if not isinstance(principal, Principal):
        raise AuthenticationError("the request was not authenticated")
    return principal


def _authorization(scope: Scope) -> str | None:
    """The request's Authorization header (None when absent); AuthenticationError when it is
    given more than once: which one a proxy in front read (to route or count by key) is a
    guess, and the server used the first."""
    given = [v for name, v in scope.get("headers", ()) if name == b"authorization"]
    if len(given) > 1:
        raise AuthenticationError("the Authorization header is given more than once; give it once")
    return bytes(given[0]).decode("latin-1") if given else None


class AccessMiddleware:
    """Authenticates each request with ``access``; renders refusals with ``render``."""

    def __init__(self, app: ASGIApp, *, access: AccessControl, render: ErrorRenderer) -> None:
        self.app = app
        self.access = access
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        action = audit_action(scope.get("method", ""), path)
        start = time.perf_counter()
        principal: Principal | None = None
        audited = False

        def audit(status: int) -> None:
            nonlocal audited
            if action is None or audited:
                return
            audited = True
            status = answered(scope, status)
            state = scope.get("state") or {}
            model, target = state.get("model_id"), state.get(TARGET_KEY)
            self.access.audit.record(
                caller=principal,
                action=action,
                model=model if isinstance(model, str) else None,
                status=status,
                duration_s=time.perf_counter() - start,
                target_key=target if isinstance(target, str) else None,
            )

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                audit(message["status"])
            await send(message)

        try:
            if path in OPEN_PATHS:
                await self.app(scope, receive, send_wrapper)
                return
            header = None
            try:
                header = _authorization(scope)
                principal = self.access.authenticate(header)
            except AuthenticationError as exc:
                principal = self.access.refused_caller(header)  # a revoked key, for the audit
                reply = self.render(path, exc.message, exc.http_status, type(exc).__name__)
                reply.headers["WWW-Authenticate"] = "Bearer"
                await reply(scope, receive, send_wrapper)
                return
            state: dict[str, Any] = scope.setdefault("state", {})
            state["principal"] = principal
            await self.app(scope, receive, send_wrapper)
        finally:
            audit(500)  # no response started: the request failed
