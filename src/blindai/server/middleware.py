"""Pure-ASGI middleware: the Server header, and one access-log line per request.

The log line holds route, status, duration and model id: never bodies, inputs, outputs or
client_info.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ServerHeaderAndAccessLog"]

_log = logging.getLogger("blindai.access")


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
                _log.info(
                    "%s %s %s %d %.2fms%s",
                    self._label,
                    scope.get("method", ""),
                    scope.get("path", ""),
                    status,
                    (time.perf_counter() - start) * 1e3,
                    f" model={state['model_id']}" if state.get("model_id") else "",
                )
