"""What the HTTP protocols share: bounded body reading, and errors turned into replies.

An error reply carries the status of the error's class (``http_status`` in
:mod:`blindai.errors`) and names that class in the ``X-BlindAI-Error`` header; each protocol
renders the message in its own body format.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from blindai.errors import BlindAIError, InvalidInput, PayloadTooLarge, ServerError
from blindai.protocol.names import ERROR_HEADER
from blindai.server._text import clipped
from blindai.server.abandon import ClientGone
from blindai.server.middleware import route_template

__all__ = [
    "CLIENT_CLOSED",
    "Endpoint",
    "ErrorRenderer",
    "client_gone",
    "declared_over",
    "error_replies",
    "header_int",
    "read_body",
    "refuse_encoded",
    "single_header",
]

_log = logging.getLogger("blindai.server")

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[str, int, str], Response]
"""``render(message, status, error_type)``: a protocol's error reply."""


CLIENT_CLOSED = 499
"""The status recorded (access and audit logs, metrics) for a request whose client left before
it was read whole: nobody is answered (nginx's "client closed request")."""

_HUGE = 1 << 64
"""What :func:`header_int` reads a value of more than 20 significant digits as."""


def header_int(value: str | None) -> int | None:
    """A header's non-negative decimal integer (ASCII digits, surrounding blanks allowed);
    None when it is absent or not one. A value past 2**64 reads as 2**64: ``int()`` would take
    other scripts' digits and refuse more than 4300 digits (ValueError)."""
    if value is None:
        return None
    digits = value.strip(" \t")
    if not (digits.isascii() and digits.isdigit()):
        return None
    significant = digits.lstrip("0")
    return _HUGE if len(significant) > 20 else int(significant or "0")


def single_header(request: Request, name: str) -> str | None:
    """The value of header ``name``, which must come at most once (None when absent);
    InvalidInput when repeated, as the HTTP layer refuses a repeated Content-Length: with two
    values, which one was meant is a guess, and a proxy in front may have read the other."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"the {name} header is given more than once; give it once")
    return values[0] if values else None


def declared_over(request: Request, most: int) -> bool:
    """Whether the request's Content-Length already says its body is over ``most`` bytes."""
    declared = header_int(request.headers.get("content-length"))
    return declared is not None and declared > most


def refuse_encoded(request: Request) -> None:
    """InvalidInput for a body sent with a Content-Encoding other than ``identity`` (no route
    decodes one: a gzip-declared body read as it came is not the request its client meant)."""
    encoding = single_header(request, "Content-Encoding")
    if encoding is not None and encoding.strip().lower() != "identity":
        raise InvalidInput(f"Content-Encoding {encoding.strip().lower()!r} is not supported")


async def read_body(request: Request, most: int, refusal: str) -> bytes:
    """The request body; PayloadTooLarge(``refusal``) from its Content-Length, or as soon as it
    passes ``most`` bytes while it arrives (never after reading it whole); InvalidInput for a
    Content-Encoding (:func:`refuse_encoded`)."""
    refuse_encoded(request)
    if declared_over(request, most):
        raise PayloadTooLarge(refusal)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > most:
            raise PayloadTooLarge(refusal)
        chunks.append(chunk)
    return b"".join(chunks)


async def client_gone(request: Request) -> None:
    """Completes when the client disconnects; to be awaited once the body has been read.

    The server's run limits stop an inference whose client went away with it. Should the
    server answer anything but a disconnect after the body, this waits forever instead.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("body") and not message.get("more_body"):
            await asyncio.Event().wait()  # no disconnect to wait for: never completes


def _public_name(cls: type[BlindAIError]) -> str:
    """The name of the nearest class in :mod:`blindai.errors` (the header names one of those,
    which clients know; the server's own subclasses, such as ``TooManyItems``, are not)."""
    return next(c.__name__ for c in cls.__mro__ if c.__module__ == BlindAIError.__module__)


def error_replies(render: ErrorRenderer) -> Callable[[Endpoint], Endpoint]:
    """Turn errors into replies made by ``render``, with the ``X-BlindAI-Error`` header.

    A BlindAI error keeps its class's status and its short message; a client that left
    before its body arrived whole, or before its upload was registered, is no error
    (:data:`CLIENT_CLOSED`, nothing logged); anything else is a bug, answered with a 500 and
    logged by exception type only (never request data).
    """

    def decorate(endpoint: Endpoint) -> Endpoint:
        async def wrapped(request: Request) -> Response:
            retry = None
            try:
                return await endpoint(request)
            except BlindAIError as exc:
                status, kind = exc.http_status, _public_name(type(exc))
                retry = getattr(exc, "retry_after_s", None)  # when trying again makes sense
                if status >= 500:
                    _log.error("%s failed: %s", route_template(request.scope), kind)
                message = exc.message if isinstance(exc, ServerError) else str(exc)
                reply = render(clipped(message), status, kind)
            except (ClientDisconnect, ClientGone):
                return Response(None, CLIENT_CLOSED)  # nobody to answer: no error, no body
            except Exception as exc:
                where = route_template(request.scope)
                _log.error("%s failed unexpectedly: %s", where, type(exc).__name__)
                reply, kind = render("internal server error", 500, "ServerError"), "ServerError"
            reply.headers[ERROR_HEADER] = kind
            if isinstance(retry, (int, float)):
                reply.headers["retry-after"] = str(max(1, math.ceil(retry)))
            return reply

        return wrapped

    return decorate
