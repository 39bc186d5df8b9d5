"""The access log: route template, status, duration, model id; nothing a client chose."""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai.server.middleware import ServerHeaderAndAccessLog, log_field


async def _named(request: Request) -> Response:
    request.state.model_id = "0f2c-model-id"
    return Response(b"ok")


APP = ServerHeaderAndAccessLog(
    Starlette(routes=[Route("/v2/models/{name}/infer", _named, methods=["POST"])]),
    server_header="blindai/test",
    port_label="attested",
)


def _call(path: str, raw_path: bytes, method: str = "POST") -> list[tuple[bytes, bytes]]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw_path,
        "query_string": b"",
        "headers": [],
        "state": {},
    }
    asyncio.run(APP(scope, receive, send))
    return sent[0]["headers"]


def test_the_line_has_the_route_template_not_the_path(caplog):
    caplog.set_level(logging.INFO, logger="blindai.access")
    # the user-chosen name carries a forged line, an escape sequence and 60 KB
    name = "secret-name\n2026 attested POST - 200 forged\x1b[31m" + "A" * 60_000
    headers = _call(f"/v2/models/{name}/infer", b"/v2/models/secret-name%0a.../infer")
    assert (b"server", b"blindai/test") in headers
    [line] = [r.getMessage() for r in caplog.records if r.name == "blindai.access"]
    assert line.startswith("attested POST /v2/models/{name}/infer 200 ")
    assert line.endswith(" model=0f2c-model-id")
    assert "secret" not in line and "forged" not in line and "\x1b" not in line
    assert len(line) < 200


def test_unmatched_paths_are_not_logged(caplog):
    caplog.set_level(logging.INFO, logger="blindai.access")
    _call("/etc/passwd\n\x1b[2J", b"/etc/passwd%0a", method="GET")
    [line] = [r.getMessage() for r in caplog.records if r.name == "blindai.access"]
    assert line.startswith("attested GET - 404 ")
    assert "passwd" not in line


def test_log_field_escapes_and_bounds():
    assert log_field("a\nb\x1b[0m\\") == "a\\x0ab\\x1b[0m\\x5c"
    assert log_field("é∆") == "é∆"
    assert log_field("x" * 100) == "x" * 64 + "..."
    assert log_field("\x85\x9b") == "\\x85\\x9b"  # C1 controls (NEL, CSI) too
