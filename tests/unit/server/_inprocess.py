"""The server's three ASGI apps in this process, each behind an httpx ASGI transport.

Route and protocol code runs here (so it shows in coverage); the real-server tests in
tests/integration cover sockets, TLS and processes end to end.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cbor2
import httpx
from starlette.types import ASGIApp

from blindai.server.access import AccessControl, AuditLog, KeyRing
from blindai.server.app import Apps, create_apps
from blindai.server.attesters.simulation import SimulationAttester
from blindai.server.evidence import EvidenceService
from blindai.server.registry import ModelRegistry
from blindai.server.settings import ServerSettings
from blindai.server.tls import TlsIdentity

__all__ = ["AppClient", "InProcess", "in_process", "post_scope"]


class AppClient:
    """Synchronous requests to an ASGI app through httpx's ASGI transport (no socket)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, on an event loop of its own."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET ``path``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST ``path``."""
        return self.request("POST", path, **kwargs)


@dataclass
class InProcess:
    """Test clients for the unattested, attested and management apps."""

    apps: Apps
    service: EvidenceService
    unattested: AppClient
    attested: AppClient
    management: AppClient

    def upload(self, model: bytes, **fields: Any) -> dict[str, Any]:
        """POST /upload on the management app; the decoded reply (asserting a 200)."""
        body = {"model": model, "length": len(model), **fields}
        resp = self.management.post("/upload", content=cbor2.dumps(body))
        assert resp.status_code == 200, resp.content
        reply: dict[str, Any] = cbor2.loads(resp.content)
        return reply


@contextmanager
def in_process(registry: ModelRegistry | None = None, **settings: Any) -> Iterator[InProcess]:
    """The apps for a simulation server with ``settings`` (and ``registry``, else a fresh
    one); worker threads stopped afterwards."""
    config = ServerSettings(tee="simulation", **settings)
    service = EvidenceService(TlsIdentity.generate(), SimulationAttester(measurement=b"\1" * 32))
    registry = registry or ModelRegistry(max_models=config.max_models)
    keyring = KeyRing(admin_key_sha256=config.admin_digest, secret=os.urandom(32))
    access = AccessControl(keyring, AuditLog(io.StringIO()))
    apps = create_apps(config, registry, service, access=access)
    clients = [AppClient(app) for app in (apps.unattested, apps.attested, apps.management)]
    try:
        yield InProcess(apps, service, *clients)
    finally:
        apps.close()


def post_scope(path: str, *, content_length: int) -> dict[str, Any]:
    """The ASGI scope of a POST to ``path`` declaring a body of ``content_length`` bytes, for
    tests that drive an app's messages themselves (a client leaving, a reply in pieces)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x"), (b"content-length", str(content_length).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 9925),
        "state": {},
    }
