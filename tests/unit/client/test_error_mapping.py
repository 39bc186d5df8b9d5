"""The client raises the error class the server named, or the one its status belongs to."""

from __future__ import annotations

import cbor2
import pytest

from blindai import errors
from blindai.client._answers import raise_for
from blindai.client._http11 import HttpResponse
from blindai.protocol.names import ERROR_HEADER


def answer(status: int, message: str, kind: str | None = None) -> HttpResponse:
    headers = {} if kind is None else {ERROR_HEADER.lower(): kind}
    return HttpResponse(status, headers, cbor2.dumps(message))


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("InvalidInput", 400, errors.InvalidInput),
        ("PayloadTooLarge", 413, errors.PayloadTooLarge),
        ("ModelNotFound", 404, errors.ModelNotFound),
        ("InferenceFailed", 422, errors.InferenceFailed),
        ("RegistryFull", 507, errors.RegistryFull),
        ("ServerError", 500, errors.ServerError),
        # ServerBusy and ModelNotReady share 503: only the header tells them apart
        ("ServerBusy", 503, errors.ServerBusy),
        # where the header and the status disagree, the class the server raised wins
        ("InvalidInput", 413, errors.InvalidInput),
        ("PayloadTooLarge", 400, errors.PayloadTooLarge),
        ("ModelNotReady", 500, errors.ModelNotReady),
        ("ServerError", 404, errors.ServerError),
    ],
)
def test_the_named_class_is_raised(kind: str, status: int, expected: type) -> None:
    with pytest.raises(expected) as raised:
        raise_for(answer(status, "why", kind), "run")
    assert type(raised.value) is expected
    assert raised.value.status_code == status and "run: why" in str(raised.value)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, errors.InvalidInput),
        (404, errors.ModelNotFound),
        (413, errors.PayloadTooLarge),
        (422, errors.InferenceFailed),
        (503, errors.ModelNotReady),
        (507, errors.RegistryFull),
        (502, errors.ServerError),
    ],
)
def test_without_the_header_the_status_decides(status: int, expected: type) -> None:
    """The original BlindAI server names no class."""
    with pytest.raises(expected) as raised:
        raise_for(answer(status, "why"), "run")
    assert type(raised.value) is expected


@pytest.mark.parametrize("kind", ["BindingError", "Exception", "NoSuchError", "__class__"])
def test_a_name_that_is_no_server_error_falls_back_to_the_status(kind: str) -> None:
    with pytest.raises(errors.ModelNotFound):
        raise_for(answer(404, "gone", kind), "delete")


def test_a_2xx_raises_nothing() -> None:
    raise_for(answer(200, ""), "run")


@pytest.mark.parametrize(
    "text",
    [
        "the server stopped before answering this request; send it again",
        "request headers over 16384 bytes",
        "Invalid HTTP request received.",
    ],
)
@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", None])
def test_a_plain_text_answer_is_quoted_whole(text: str, content_type: str | None) -> None:
    """The connection layer answers in plain text: its first letter read as a CBOR head made
    the rest look like a CBOR string ("t" is a text string of 20 bytes: "he server stopped be")."""
    headers = {} if content_type is None else {"content-type": content_type}
    with pytest.raises(errors.ServerError) as raised:
        raise_for(HttpResponse(503, headers, text.encode()), "run")
    assert str(raised.value) == f"503: run: {text}"


def test_a_cbor_message_with_bytes_after_it_is_not_taken_for_the_whole_answer() -> None:
    body = cbor2.dumps("why") + b" and more"
    with pytest.raises(errors.InvalidInput) as raised:
        raise_for(HttpResponse(400, {"content-type": "application/cbor"}, body), "run")
    assert str(raised.value) == f"400: run: {body.decode('utf-8', 'replace')}"
