"""Bad input over the raw 0.6 wire: a 4xx with a short message, and the server keeps serving."""

from __future__ import annotations

import hashlib
import warnings

import cbor2
import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.attestation import simulation
from blindai.attestation.binding import expected_report_data
from blindai.client._transport import PinnedTlsTransport, PlainTransport
from blindai.errors import BindingError, PayloadTooLarge, RegistryFull, VerificationError
from blindai.server.tls import TlsIdentity
from tests._server import connect, start_server
from tests.models import identity


@pytest.fixture(scope="module")
def certificate(server) -> bytes:
    plain = PlainTransport(server.host, server.unattested_port, 10)
    cert = cbor2.loads(plain.request("GET", "/").body)
    plain.close()
    return cert


@pytest.fixture(scope="module")
def attested(server, certificate):
    t = PinnedTlsTransport(server.host, server.attested_port, certificate, 10)
    yield t
    t.close()


@pytest.fixture(scope="module")
def model_id(server, certificate) -> str:
    t = PinnedTlsTransport(server.host, server.management_port, certificate, 10)
    model = identity(TensorProto.FLOAT)
    # the way BlindAI 0.6 clients send a model: an array of ints, one per byte
    body = cbor2.dumps(
        {
            "model": list(model),
            "length": len(model),
            "model_name": None,
            "optimize": True,
            "client_info": {"platform": "x"},
        }
    )
    reply = cbor2.loads(t.request("POST", "/upload", body).body)
    t.close()
    assert reply["hash"] == hashlib.sha256(model).digest()
    return str(reply["model_id"])


def _tensor(data: bytes, fact: object = (1, 3), datum: object = 0) -> dict[str, object]:
    return {
        "info": {
            "fact": list(fact) if isinstance(fact, tuple) else fact,
            "datum_type": datum,
            "node_name": None,
        },
        "bytes_data": data,
    }


GOOD = np.zeros((1, 3), np.float32).tobytes()


def _run(attested, body: bytes):
    resp = attested.request("POST", "/run", body)
    return resp.status, cbor2.loads(resp.body)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"\xff\x00garbage", 400, "not valid CBOR"),
        (cbor2.dumps([1, 2]), 400, "CBOR map"),
        (cbor2.dumps({"model_id": "a", "model_hash": "b", "inputs": []}), 400, "at most one"),
        (cbor2.dumps({"model_id": "no-such-model", "inputs": []}), 404, "no model"),
        (cbor2.dumps({"model_id": 5, "inputs": []}), 400, "must be a string"),
    ],
)
def test_malformed_run_requests(attested, model_id, body, status, fragment):
    got_status, message = _run(attested, body)
    assert got_status == status
    assert fragment in message


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (_tensor(GOOD[:-1]), "do not match shape"),
        (_tensor(GOOD, datum=99), "invalid datum_type"),
        (_tensor(GOOD, datum="F33"), "invalid datum_type"),
        (_tensor(GOOD, fact=[1, -3]), "non-negative"),
        (_tensor(GOOD, fact="1,3"), "list"),
        (_tensor("text"), "byte string"),  # type: ignore[arg-type]
        (_tensor(np.zeros((1, 3), np.float64).tobytes(), datum=1), "dtype"),
        (_tensor(np.zeros((1, 4), np.float32).tobytes(), fact=(1, 4)), "shape"),
        ({"info": 3, "bytes_data": GOOD}, "info must be a map"),
    ],
)
def test_bad_tensors(attested, model_id, tensor, fragment):
    status, message = _run(attested, cbor2.dumps({"model_id": model_id, "inputs": [tensor]}))
    assert status == 400
    assert fragment in message


def test_datum_type_by_name_is_accepted(attested, model_id):
    status, reply = _run(
        attested, cbor2.dumps({"model_id": model_id, "inputs": [_tensor(GOOD, datum="F32")]})
    )
    assert status == 200
    assert set(reply["outputs"][0]["info"]) == {"fact", "datum_type", "node_name"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (cbor2.dumps({"model": b"not an onnx model", "length": 17}), "not a valid ONNX model"),
        (cbor2.dumps({"model": [1, 2, 300], "length": 3}), "bytes (0-255)"),
        (cbor2.dumps({"model": "text"}), "byte string"),
        (cbor2.dumps({"model": b""}), "empty"),
        (cbor2.dumps({"model": b"x", "model_name": 3}), "model_name"),
        # a name is shown in listings and in other callers' terminals: no forged lines there
        (cbor2.dumps({"model": b"x", "model_name": "m\n2026 INFO forged"}), "printable"),
        (cbor2.dumps({"model": b"x", "model_name": "m\x1b]0;title\x07"}), "printable"),
        (cbor2.dumps({"model": b"x", "model_name": "zero\u200bwidth"}), "printable"),
        (cbor2.dumps({"model": b"x", "model_name": "a/b"}), "without '/'"),
        (cbor2.dumps({"model": b"x", "model_name": "n" * 257}), "at most 256"),
    ],
)
def test_bad_uploads(server, certificate, body, fragment):
    t = PinnedTlsTransport(server.host, server.management_port, certificate, 10)
    resp = t.request("POST", "/upload", body)
    t.close()
    assert resp.status == 400
    assert fragment in cbor2.loads(resp.body)


def test_names_in_any_script_and_with_spaces_are_taken(server, certificate, attested):
    t = PinnedTlsTransport(server.host, server.management_port, certificate, 10)
    name = "модель v2 · 名前 (é)"
    body = cbor2.dumps({"model": identity(TensorProto.FLOAT), "model_name": name})
    resp = t.request("POST", "/upload", body)
    t.close()
    assert resp.status == 200, resp.body
    status, reply = _run(attested, cbor2.dumps({"model_id": name, "inputs": [_tensor(GOOD)]}))
    assert status == 200, reply


def test_unknown_route_is_404(attested):
    assert attested.request("GET", "/nope").status == 404


def test_server_still_serves_after_bad_input(attested, model_id):
    status, reply = _run(attested, cbor2.dumps({"model_id": model_id, "inputs": [_tensor(GOOD)]}))
    assert status == 200
    assert reply["outputs"][0]["info"]["node_name"] == "y"


def test_simulation_server_is_loud_and_binds_its_certificate(server, certificate):
    plain = PlainTransport(server.host, server.unattested_port, 10)
    resp = plain.request("GET", "/quote")
    assert "mock" in resp.headers["server"]
    doc = simulation.decode(cbor2.loads(resp.body))
    assert doc.report_data == expected_report_data(certificate)
    assert plain.request("GET", "/collateral").status == 404
    info = cbor2.loads(plain.request("GET", "/info").body)
    assert info["simulation"] is True and info["tee"] == "simulation"
    plain.close()
    assert "SIMULATION" in server.log()


def test_client_refuses_simulation_server_unless_opted_in(server):
    with pytest.raises(VerificationError, match="SIMULATION"):
        blindai.connect(server.host, **server.ports)
    with pytest.warns(blindai.SimulationModeWarning):
        blindai.connect(server.host, simulation_mode=True, **server.ports).close()


def test_attested_transport_refuses_any_other_certificate(server):
    other = TlsIdentity.generate().cert_der
    t = PinnedTlsTransport(server.host, server.attested_port, other, 10)
    with pytest.raises(BindingError):
        t.request("GET", "/v2/health/live")
    t.close()


def test_ca_environment_variables_cannot_redirect_trust(server, monkeypatch, tmp_path):
    bogus = tmp_path / "bundle.pem"
    bogus.write_text("not a bundle")
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.setenv(var, str(bogus))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        with blindai.connect(server.host, simulation_mode=True, **server.ports) as c:
            c.upload_model(identity(TensorProto.FLOAT))


def test_body_and_model_limits_give_413(tmp_path):
    small = start_server(
        tmp_path, "--max-model-bytes", "200", "--max-request-bytes", "4096", "--max-models", "2"
    )
    try:
        conn = connect(small)
        with conn:
            with pytest.raises(PayloadTooLarge) as big_model:
                conn.upload_model(b"\0" * 1000)
            assert big_model.value.status_code == 413
            assert "1000 bytes, over the 200-byte limit (--max-model-bytes 200)" in str(
                big_model.value
            )
            uploaded = conn.upload_model(identity(TensorProto.FLOAT, [None, None]))
            with pytest.raises(PayloadTooLarge) as big_body:
                conn.predict(uploaded.model_id, [np.zeros((10, 200), np.float32)])
            assert big_body.value.status_code == 413
            assert "over the 4 KiB limit (--max-request-bytes 4096)" in str(big_body.value)
            assert conn.predict(uploaded.model_id, [np.ones((1, 2), np.float32)])["y"].sum() == 2
            conn.upload_model(identity(TensorProto.FLOAT, [None, None]))
            with pytest.raises(RegistryFull) as full:
                conn.upload_model(identity(TensorProto.FLOAT, [None, None]))
            assert full.value.status_code == 507
            conn.delete_model(uploaded.model_id)
            conn.upload_model(identity(TensorProto.FLOAT, [None, None]))
    finally:
        small.stop()
