"""Every server error class has a gRPC status code of its meaning, not INTERNAL."""

from __future__ import annotations

import grpc
import pytest

import blindai.errors
from blindai.errors import ServerError
from blindai.server.protocols.grpc.servicer import grpc_code

SERVER_ERRORS = [
    cls
    for cls in (getattr(blindai.errors, n) for n in blindai.errors.__all__)
    if isinstance(cls, type) and issubclass(cls, ServerError) and cls is not ServerError
]


@pytest.mark.parametrize("cls", SERVER_ERRORS, ids=[c.__name__ for c in SERVER_ERRORS])
def test_each_server_error_has_a_code(cls: type[ServerError]) -> None:
    assert grpc_code(cls.http_status) is not grpc.StatusCode.INTERNAL


def test_limits_have_their_codes() -> None:
    assert (
        grpc_code(blindai.errors.InferenceTimeout.http_status) is grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert grpc_code(blindai.errors.ServerBusy.http_status) is grpc.StatusCode.UNAVAILABLE
    assert (
        grpc_code(blindai.errors.PayloadTooLarge.http_status) is grpc.StatusCode.RESOURCE_EXHAUSTED
    )
