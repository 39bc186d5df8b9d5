"""What a server's error answer means: the exception raised, with its message as one line.

Used for every answer the client reads (the attested ports and the evidence requests alike):
the server names the error's class in ``X-BlindAI-Error``; a server that does not (the
original BlindAI server, a proxy) is mapped by status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cbor2

from blindai import errors
from blindai._documents import loads_cbor
from blindai.client._http11 import HttpResponse
from blindai.client._ports import no_route
from blindai.errors import ServerError
from blindai.protocol.names import ERROR_HEADER

if TYPE_CHECKING:
    from blindai.client._transport import AttestedTlsTransport

__all__ = ["check_route", "raise_for"]


def _error_class(name: str | None, status: int) -> type[ServerError]:
    """The class the server named in ``X-BlindAI-Error``, else the one its status belongs to.

    Servers without that header (the original BlindAI server) are mapped by status alone.
    """
    family = [
        cls
        for cls in vars(errors).values()  # in definition order: a bare 404 is ModelNotFound
        if isinstance(cls, type) and issubclass(cls, ServerError)
    ]
    for cls in family:
        if cls.__name__ == name:
            return cls
    return next(
        (c for c in family if c is not ServerError and c.http_status == status), ServerError
    )


_MAX_SERVER_TEXT = 500
"""Characters of a server's error message kept in the exception (the CLI prints one line)."""


def _server_text(text: str) -> str:
    """A server's message as one bounded line: no newline, no terminal control sequence."""
    line = "".join(c if c.isprintable() else " " for c in text[:_MAX_SERVER_TEXT])
    return line + (" [...]" if len(text) > _MAX_SERVER_TEXT else "")


def _error_text(resp: HttpResponse) -> str:
    """The message of an error answer: a body that is one CBOR text string and nothing else
    (our routes, the original server), else the body's start as text (the connection layer
    answers in plain text, whose first letter reads as a CBOR string's head)."""
    body = bytes(resp.body)
    if not resp.headers.get("content-type", "").startswith("text/"):
        try:
            msg = loads_cbor(body)  # maybe from a server not verified yet (GET /attestation)
        except Exception:
            msg = None
        if isinstance(msg, str) and len(cbor2.dumps(msg)) == len(body):  # nothing after it
            return msg
    return body[: _MAX_SERVER_TEXT + 1].decode("utf-8", "replace")


def raise_for(resp: HttpResponse, what: str) -> None:
    """Raise the error ``resp`` answers (nothing for a 2xx), its message prefixed by ``what``."""
    if 200 <= resp.status < 300:
        return
    cls = _error_class(resp.headers.get(ERROR_HEADER.lower()), resp.status)
    raise cls(f"{what}: {_server_text(_error_text(resp))}", status_code=resp.status)


def check_route(transport: AttestedTlsTransport, resp: HttpResponse, path: str) -> None:
    """A 404 or 405 that our routes did not write (they answer in CBOR): no such route here."""
    if resp.status in (404, 405) and not resp.headers.get("content-type", "").startswith(
        "application/cbor"
    ):
        raise no_route(transport.port, transport.role, path)
