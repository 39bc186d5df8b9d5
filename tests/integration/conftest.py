"""Integration fixtures: one real simulation server per session, over loopback TLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import blindai
from tests._server import ServerProcess, connect, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A ``blindai serve --simulation`` process on free loopback ports."""
    proc = start_server(tmp_path_factory.mktemp("server"), "--max-models", "10000")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def previous_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real simulation server whose TLS ports have no ``/attestation`` (the previous version:
    ``tests._fakes.previous_server``)."""
    proc = start_server(
        tmp_path_factory.mktemp("previous-server"), module="tests._fakes.previous_server"
    )
    yield proc
    proc.stop()


@pytest.fixture
def conn(server: ServerProcess) -> Iterator[blindai.Connection]:
    """An attested (simulation) connection to the session server."""
    with connect(server) as c:
        yield c
