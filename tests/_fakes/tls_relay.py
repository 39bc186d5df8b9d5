"""A man in the middle of the attested ports: TLS ends at the attacker, who relays to a server.

The relay presents its own certificate (the attacker's :class:`TlsIdentity`), forwards every
request to the real server's TLS port (over TLS it does not verify) and passes the answer
back. ``rewrite_certificate`` also replaces the certificate named in ``GET /attestation``
replies by the attacker's, the way a smarter attacker would. It records every path it relays,
so a test sees that nothing but the attestation request left the client.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2

from blindai.server.tls import TlsIdentity

_PASSED_HEADERS = ("server", "content-type", "x-blindai-error")


class TlsRelay:
    """TLS on 127.0.0.1 with the attacker's identity, relaying to ``upstream``."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, rewrite_certificate: bool = False
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.identity = TlsIdentity.generate()
        self.rewrite_certificate = rewrite_certificate
        self.paths: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.socket = self.identity.server_context().wrap_socket(
            self._httpd.socket, server_side=True
        )
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port the relay listens on (127.0.0.1)."""
        return int(self._httpd.server_address[1])

    def __enter__(self) -> TlsRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _relay(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        self.paths.append(f"{method} {path}")
        context = ssl._create_unverified_context()  # the attacker trusts anything upstream
        upstream = http.client.HTTPSConnection(*self.upstream, timeout=10, context=context)
        try:
            upstream.request(method, path, body=body or None)
            resp = upstream.getresponse()
            answer = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() in _PASSED_HEADERS]
            status = resp.status
        finally:
            upstream.close()
        if path.startswith("/attestation") and status == 200 and self.rewrite_certificate:
            doc = cbor2.loads(answer)
            doc["certificate"] = self.identity.cert_der
            answer = cbor2.dumps(doc)
        return status, headers, answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, answer = relay._relay(self.command, self.path, body)
                self.send_response_only(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = _forward
            do_POST = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
