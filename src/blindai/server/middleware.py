"""Pure-ASGI middleware: the Server header, and one access-log line per request.

The log line holds the port, the method, the route *template* (``/v2/models/{name}/infer``,
never the path a client sent: no user-chosen names, no raw or percent-decoded paths), the
status, the duration and the server-chosen model id. Never bodies, inputs, outputs, model
names or client_info. Every field is cut to ``FIELD_MAX`` characters and control characters
are escaped, so a request cannot forge a line or send escape sequences to a terminal.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blindai.server._connection_limits import answered

__all__ = ["FIELD_MAX", "ServerHeaderAndAccessLog", "log_field", "route_template"]

_log = logging.getLogger("blindai.access")
FIELD_MAX = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def log_field(value: object, limit: int = FIELD_MAX) -> str:
    """``value`` as one safe log field: control characters escaped, at most ``limit`` chars."""
    text = str(value)
    cut = text[:limit]
    safe = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", cut)
    return safe + ("..." if len(text) > limit else "")


def route_template(scope: Scope) -> str:
    """The template of the route that matched (``-`` when none did): never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return log_field(path) if isinstance(path, str) else "-"


class ServerHeaderAndAccessLog:
    """Sets ``Server`` on every response and logs the request when it completes."""

    def __init__(self, app: ASGIApp, *, server_header: str, port_label: str) -> None:
        self.app = app
        self._server = server_header.encode("latin-1")
        self._label = port_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"server"]
                headers.append((b"server", self._server))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if _log.isEnabledFor(logging.INFO):
                state: dict[str, Any] = scope.get("state") or {}
                model = state.get("model_id")
                _log.info(
                    "%s %s %s %d %.2fms%s",
                    self._label,
                    log_field(scope.get("method", ""), 16),
                    route_template(scope),
                    answered(scope, status),
                    (time.perf_counter() - start) * 1e3,
                    f" model={log_field(model)}" if model else "",
                )
