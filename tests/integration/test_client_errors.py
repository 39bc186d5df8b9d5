"""What a user sees when a port flag is wrong, the server is away, or a connection was closed.

Against the session's real simulation server: each port given for the role of another one
raises ``WrongPort`` naming the likely mix-up; an unreachable or silent server raises
``NetworkError`` / ``RequestTimeout`` (never a "status 0" ``ServerError``); a refused simulation
server names the option of the API in use.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.client import BlindAiClient
from blindai.errors import (
    ConfigurationError,
    NetworkError,
    RequestTimeout,
    ServerError,
    VerificationError,
    WrongPort,
)
from tests._server import ServerProcess, free_ports
from tests.models import identity

X = np.zeros((1, 3), np.float32)


def _connect(server: ServerProcess, **ports: int) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, **{**server.ports, **ports})


@pytest.fixture(scope="module")
def model_id(server: ServerProcess) -> Iterator[str]:
    with _connect(server) as conn:
        uploaded = conn.upload_model(identity(TensorProto.FLOAT), model_name="ports-identity")
        yield uploaded.model_id
        conn.delete_model(uploaded.model_id)


# --- a port flag pointing at another role ---------------------------------------------------


@pytest.mark.parametrize("other", ["attested", "management"])
def test_unattested_port_given_a_tls_port_is_not_read(server: ServerProcess, other: str) -> None:
    """connect() verifies the attested port on its own connection: the unattested port is only
    read for servers without ``/attestation`` (WrongPort there: test_binding_mitm.py)."""
    port = server.attested_port if other == "attested" else server.management_port
    with _connect(server, unattested_server_port=port) as conn:
        assert conn.attestation_stats.verified == 1


Use = Callable[[blindai.Connection, str], object]
USES: dict[str, tuple[str, Use]] = {
    "run": ("attested_server_port", lambda c, m: c.run_model(m, input_tensors=X)),
    "predict": ("attested_server_port", lambda c, m: c.predict(m, X)),
    "upload": ("model_management_port", lambda c, m: c.upload_model(identity(TensorProto.FLOAT))),
    "delete": ("model_management_port", lambda c, m: c.delete_model("no-such-model")),
}


@pytest.mark.parametrize("use", list(USES))
def test_attested_ports_given_the_plain_port(
    server: ServerProcess, model_id: str, use: str
) -> None:
    """The attested port is opened (and verified) by connect(); the management port on use."""
    flag, call = USES[use]
    with pytest.raises(WrongPort) as info:
        with _connect(server, **{flag: server.unattested_port}) as conn:
            call(conn, model_id)
    err = info.value
    role = "attested" if flag == "attested_server_port" else "management"
    usual = 9924 if role == "attested" else 9925
    assert (err.port, err.role, err.found) == (server.unattested_port, role, "plain HTTP")
    assert "speaks plain HTTP, not TLS: is it the unattested port?" in str(err)
    assert f"the {role} port is usually {usual}" in str(err)


def test_attested_port_given_the_management_port(server: ServerProcess, model_id: str) -> None:
    # the model exists: without the check this was a ModelNotFound (404) for it
    with _connect(server, attested_server_port=server.management_port) as conn:
        with pytest.raises(WrongPort) as info:
            conn.run_model(model_id, input_tensors=X)
    err = info.value
    assert (err.port, err.role, err.found) == (server.management_port, "attested", "no /run route")
    assert "has no /run route: is it the management port?" in str(err)
    assert "the attested port is usually 9924" in str(err)


def test_a_missing_model_is_still_model_not_found(server: ServerProcess) -> None:
    with _connect(server) as conn, pytest.raises(blindai.errors.ModelNotFound):
        conn.run_model("no-such-model", input_tensors=X)


# --- network failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (("m", X), {}, "model_hash must be a string (got ndarray)"),
        ((X,), {}, "model_id must be a string (got ndarray)"),
        ((), {"model_id": 3, "input_tensors": X}, "model_id must be a string (got int)"),
    ],
)
def test_inputs_given_in_place_of_a_model_are_named(
    server: ServerProcess, args: tuple[object, ...], kwargs: dict[str, object], named: str
) -> None:
    """``run_model(model_id, inputs)`` passed the inputs as ``model_hash``: numpy's "truth value
    of an array is ambiguous" ValueError, from inside the client."""
    with _connect(server) as conn, pytest.raises(ConfigurationError) as refused:
        conn.run_model(*args, **kwargs)  # type: ignore[arg-type]
    assert str(refused.value).startswith(named)
    assert "input_tensors=" in str(refused.value)


def test_unreachable_server_is_a_network_error(server: ServerProcess) -> None:
    (port,) = free_ports(1)
    with pytest.raises(NetworkError) as info:
        _connect(server, attested_server_port=port)
    assert not isinstance(info.value, ServerError | RequestTimeout | WrongPort)
    text = str(info.value)
    assert f"cannot reach the attested port 127.0.0.1:{port}" in text
    assert "status" not in text and not text.startswith("0")


def test_silent_server_is_a_request_timeout(server: ServerProcess) -> None:
    # a listening socket nobody accepts on: the kernel completes the connection, then silence
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(RequestTimeout, match=f"127.0.0.1:{port} did not answer in time"):
            blindai.connect(
                server.host, attested_server_port=port, simulation_mode=True, timeout=0.3
            )


# --- a closed connection --------------------------------------------------------------------


@pytest.mark.parametrize("use", list(USES))
def test_a_closed_connection_refuses_to_reconnect(
    server: ServerProcess, model_id: str, use: str
) -> None:
    _, call = USES[use]
    conn = _connect(server)
    conn.run_model(model_id, input_tensors=X)
    conn.close()
    with pytest.raises(ConfigurationError, match="this connection is closed"):
        call(conn, model_id)


def test_a_connection_closed_by_its_with_block(server: ServerProcess, model_id: str) -> None:
    with _connect(server) as conn:
        conn.predict(model_id, X)
    with pytest.raises(ConfigurationError, match="closed"):
        conn.predict(model_id, X)


# --- the simulation refusal names the option of the API in use ------------------------------


def test_connect_refusal_names_simulation_mode(server: ServerProcess) -> None:
    with pytest.raises(VerificationError, match=r"Pass simulation_mode=True only"):
        blindai.connect(server.host, **server.ports)


def test_blindaiclient_refusal_names_simulation(server: ServerProcess) -> None:
    with pytest.raises(VerificationError) as info:
        BlindAiClient().connect_server(
            addr=server.host,
            untrusted_port=server.unattested_port,
            attested_port=server.attested_port,
            model_management_port=server.management_port,
        )
    assert "Pass simulation=True only" in str(info.value)
    assert "simulation_mode" not in str(info.value)
