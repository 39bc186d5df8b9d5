"""The client after the server closed its idle kept-alive connections (issue 12).

A server started with ``--keep-alive-timeout 1`` closes an idle connection after a second. The
test waits for that close to reach the client's socket (it becomes readable: an event, not a
sleep), then uses the connection again: the client must reconnect and answer correctly.
"""

from __future__ import annotations

import select
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.client._transport import PinnedTlsTransport
from tests._server import ServerProcess, start_server
from tests.models import identity


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("keepalive"), "--keep-alive-timeout", "1")
    yield proc
    proc.stop()


def _idle_until_the_server_closes(transport: PinnedTlsTransport) -> None:
    sock = transport._conn()._sock
    assert sock is not None, "the connection was not kept alive"
    readable, _, _ = select.select([sock], [], [], 30)
    assert readable, "the server did not close the idle connection within 30 s"


def test_requests_after_the_server_closed_idle_connections(
    quick_server: ServerProcess, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        conn = blindai.connect(quick_server.host, simulation_mode=True, **quick_server.ports)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with conn:
        model_id = conn.upload_model(identity(TensorProto.FLOAT)).model_id
        np.testing.assert_array_equal(conn.predict(model_id, {"x": x})["y"], x)
        for _ in range(2):  # twice: the reconnected socket is kept alive and closed again
            _idle_until_the_server_closes(conn._attested)
            np.testing.assert_array_equal(conn.predict(model_id, {"x": x})["y"], x)
        _idle_until_the_server_closes(conn._management)
        conn.delete_model(model_id)


def test_serve_takes_the_keep_alive_timeout(quick_server: ServerProcess) -> None:
    assert quick_server.process.poll() is None
    from blindai.server import ServerSettings

    assert ServerSettings().keep_alive_timeout == 30
    assert ServerSettings(keep_alive_timeout=1).keep_alive_timeout == 1
