"""``python -m tests._fakes.previous_server serve ...``: a server as BlindAI was before
``GET /attestation``.

The command is the real ``blindai serve`` with all its flags; only its attested and management
ports answer ``GET /attestation`` (and ``/attestation?...``) with a plain-text 404, as a server
without that route does, so clients must verify it the BlindAI 0.6 way, on the unattested port.
"""

from __future__ import annotations

import sys

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class WithoutAttestationRoute:
    """ASGI middleware: ``/attestation`` is not found (text/plain, as Starlette answers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == "/attestation":
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def main(argv: list[str]) -> int:
    """``blindai`` itself, its apps built without ``/attestation`` on the TLS ports."""
    import dataclasses

    import blindai.server.main as server_main
    from blindai.cli import main as cli_main

    create = server_main.create_apps

    def create_apps(*args: object, **kwargs: object) -> server_main.Apps:
        apps = create(*args, **kwargs)  # type: ignore[arg-type]
        return dataclasses.replace(
            apps,
            attested=WithoutAttestationRoute(apps.attested),
            management=WithoutAttestationRoute(apps.management),
        )

    server_main.create_apps = create_apps  # type: ignore[assignment]
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
