"""The channel binding under attack: a man in the middle of the unattested port.

The evidence is genuine (a real simulation server's), so the verifier accepts it; what must
refuse is the binding of the TLS certificate to the evidence's report data, at connect time
(a substituted certificate) or on first use of the attested ports (another TLS server).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.attestation.simulation import SimulationModeWarning
from blindai.errors import BindingError
from blindai.server.tls import TlsIdentity
from tests._fakes.mitm import UnattestedMitm
from tests._fakes.server_log import attested_requests
from tests._server import ServerProcess, start_server
from tests.models import identity


@pytest.fixture(scope="module")
def other_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second simulation server: same software, another TLS key."""
    proc = start_server(tmp_path_factory.mktemp("other-server"))
    yield proc
    proc.stop()


def _connect(mitm: UnattestedMitm, attested: ServerProcess) -> blindai.Connection:
    """connect(simulation_mode=True) through ``mitm``, to ``attested``'s TLS ports."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationModeWarning)
        return blindai.connect(
            "127.0.0.1",
            unattested_server_port=mitm.port,
            attested_server_port=attested.attested_port,
            model_management_port=attested.management_port,
            simulation_mode=True,
        )


def _upload_and_run(conn: blindai.Connection) -> Any:
    uploaded = conn.upload_model(identity(TensorProto.FLOAT))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = conn.run_model(model_id=uploaded.model_id, input_tensors={"x": x}).output[0]
    conn.delete_model(uploaded.model_id)
    return out.as_numpy()


def test_a_passthrough_proxy_changes_nothing(server: ServerProcess) -> None:
    """Control: the proxy itself is transparent, so the refusals below come from the attack."""
    with (
        UnattestedMitm(server.host, server.unattested_port) as mitm,
        _connect(mitm, server) as conn,
    ):
        out = _upload_and_run(conn)
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert {"/", "/quote"} <= set(mitm.paths)


def test_substituted_certificate_is_a_binding_error(server: ServerProcess) -> None:
    before = attested_requests(server.log())
    attacker = TlsIdentity.generate()
    mitm = UnattestedMitm(server.host, server.unattested_port, substitute_cert=attacker.cert_der)
    with mitm, pytest.raises(BindingError) as info:
        _connect(mitm, server)
    assert "does not bind this TLS certificate" in str(info.value)
    assert hashlib.sha256(attacker.cert_der).hexdigest() in str(info.value)  # the attacker's
    assert {"/", "/quote"} <= set(mitm.paths)  # the evidence was fetched, and refused
    after = attested_requests(server.log())
    assert after == before
    assert not [r for r in after[len(before) :] if r.endswith(("/upload", "/run"))]


def test_another_tls_server_on_the_attested_ports_is_a_binding_error(
    server: ServerProcess, other_server: ServerProcess
) -> None:
    before = attested_requests(server.log()), attested_requests(other_server.log())
    with UnattestedMitm(server.host, server.unattested_port) as mitm:
        conn = _connect(mitm, other_server)  # the attestation itself is of the real server
    with conn:
        with pytest.raises(BindingError) as info:
            conn.upload_model(identity(TensorProto.FLOAT))
        assert "other than the attested one" in str(info.value)
        with pytest.raises(BindingError):
            conn.run_model(model_id="x", input_tensors={"x": np.zeros((1, 3), np.float32)})
        with pytest.raises(BindingError):
            conn.delete_model("x")
    # refused in the TLS handshake: no HTTP request reached either server's attested ports
    assert (attested_requests(server.log()), attested_requests(other_server.log())) == before
