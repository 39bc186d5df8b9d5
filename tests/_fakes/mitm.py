"""A man in the middle of the unattested port: a loopback HTTP proxy in a thread.

It forwards every GET to the real server's unattested port and passes the answer back
unchanged (status, ``Server`` and ``Content-Type`` headers, body), except that ``GET /`` (the
certificate) can be answered with another certificate of the attacker's choosing.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2

_PASSED_HEADERS = ("server", "content-type")


class UnattestedMitm:
    """Proxy for ``upstream_host:upstream_port``; ``substitute_cert`` replaces ``GET /``."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, substitute_cert: bytes | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.substitute_cert = substitute_cert
        self.paths: list[str] = []
        self.requests: list[str] = []
        """Every request's line and headers, as received (what the unattested port learns)."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port the proxy listens on (127.0.0.1)."""
        return int(self._httpd.server_address[1])

    def __enter__(self) -> UnattestedMitm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        self.paths.append(path)
        upstream = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            upstream.request("GET", path)
            resp = upstream.getresponse()
            body = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() in _PASSED_HEADERS]
            status = resp.status
        finally:
            upstream.close()
        if path == "/" and self.substitute_cert is not None:
            body = cbor2.dumps(self.substitute_cert)
        return status, headers, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mitm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                mitm.requests.append(f"{self.requestline}\r\n{self.headers}")
                status, headers, body = mitm._answer(self.path)
                self.send_response_only(status)  # no Server header of its own
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the proxy records paths itself; keep pytest's output clean

        return Handler
