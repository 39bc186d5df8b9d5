"""A loopback HTTP server playing a BlindAI server's unattested port (plus a PCCS or KDS).

Routes map a request path to ``(body, headers)``; they may be changed while it runs. Every
path asked is recorded in ``asked``.
"""

from __future__ import annotations

import datetime as dt
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from blindai.cli import main as cli_main
from blindai.client._transport import PlainTransport

Route = tuple[bytes, dict[str, str]]


def certificate() -> bytes:
    """A self-signed ``blindai-srv`` certificate that no evidence binds."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "blindai-srv")])
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


@dataclass
class LoopbackServer:
    """Where the server listens, what it answers, and what it was asked."""

    port: int
    routes: dict[str, Route]
    asked: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def plain(self) -> PlainTransport:
        return PlainTransport("127.0.0.1", self.port, 10)


@contextmanager
def serve(routes: dict[str, Route]) -> Iterator[LoopbackServer]:
    """Serve ``routes`` on a free loopback port for the ``with`` block."""
    state = LoopbackServer(0, routes)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.asked.append(self.path)
            body, headers = state.routes.get(self.path, (b"not found", {}))
            self.send_response(200 if self.path in state.routes else 404)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_policy(tmp_path: Path, text: str) -> Path:
    """A policy file holding ``text``."""
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``blindai ARGS...`` in-process; its exit status."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    return cli_main(list(args))
