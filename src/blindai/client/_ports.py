"""The server's three ports, and telling the user which one a wrong port flag points at.

A server listens on three ports: unattested (plain HTTP), attested (TLS, inference) and
management (TLS, uploads). When a request fails in a way that suggests the port serves
another role, a short probe confirms it before :class:`~blindai.errors.WrongPort` says so:
probes only run on failure paths and send nothing but an empty TLS handshake or a
``GET /`` without data.
"""

from __future__ import annotations

import enum
import socket
import ssl

from blindai.errors import WrongPort

__all__ = [
    "PortRole",
    "close_orphaned_tls_socket",
    "no_route",
    "speaks_http",
    "speaks_tls",
    "wrong_port",
]

_PROBE_TIMEOUT_S = 5.0


class PortRole(enum.Enum):
    """A role of one of the server's ports, with the port number it usually has."""

    UNATTESTED = ("unattested", 9923)
    ATTESTED = ("attested", 9924)
    MANAGEMENT = ("management", 9925)

    def __init__(self, label: str, usual_port: int) -> None:
        self.label = label
        self.usual_port = usual_port

    @property
    def flag_text(self) -> str:
        """How messages name this role, e.g. ``the attested port``."""
        return f"the {self.label} port"


def close_orphaned_tls_socket(exc: BaseException) -> None:
    """Close the TLS socket ``ssl.SSLContext.wrap_socket`` left open when it raised ``exc``.

    When the peer resets the connection before the handshake, CPython's
    ``SSLSocket._create`` (3.11 and 3.12 at least) re-raises from its pre-handshake check
    without closing the new SSLSocket, which owns the file descriptor taken from the plain
    socket: found in the traceback, it is closed here rather than by the garbage collector.
    """
    tb = exc.__traceback__
    while tb is not None:
        orphan = tb.tb_frame.f_locals.get("self")
        if isinstance(orphan, ssl.SSLSocket):
            orphan.close()
        tb = tb.tb_next


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (nothing is trusted or sent)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a probe: no data is sent, nothing read is trusted
    try:
        with socket.create_connection((host, port), min(timeout, _PROBE_TIMEOUT_S)) as sock:
            try:
                with ctx.wrap_socket(sock):
                    return True
            except OSError as exc:
                close_orphaned_tls_socket(exc)
                raise
    except OSError:
        return False


def speaks_http(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` answers a plain ``GET /`` with an HTTP status line."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1")
    try:
        with socket.create_connection((host, port), min(timeout, _PROBE_TIMEOUT_S)) as sock:
            sock.sendall(request)
            start = b""
            while len(start) < 5:
                data = sock.recv(5 - len(start))
                if not data:
                    break
                start += data
            return start == b"HTTP/"
    except OSError:
        return False


def wrong_port(port: int, role: PortRole, *, found: str) -> WrongPort:
    """The error for ``port``, given as ``role``, where ``found`` answered instead.

    ``found`` is ``"TLS"`` or ``"plain HTTP"``.
    """
    if found == "TLS":
        what = (
            "speaks TLS (this client reads the unattested port over plain HTTP): is it the "
            "attested or the management port?"
        )
    else:
        what = "speaks plain HTTP, not TLS: is it the unattested port?"
    return WrongPort(_text(port, role, what), port=port, role=role.label, found=found)


def no_route(port: int, role: PortRole, path: str) -> WrongPort:
    """The error for a TLS port that has no ``path`` route: likely the other attested port."""
    other = PortRole.MANAGEMENT if role is PortRole.ATTESTED else PortRole.ATTESTED
    what = f"has no {path} route: is it {other.flag_text}?"
    return WrongPort(_text(port, role, what), port=port, role=role.label, found=f"no {path} route")


def _text(port: int, role: PortRole, what: str) -> str:
    given = role.flag_text
    return f"port {port}, given as {given}, {what} {given} is usually {role.usual_port}"
