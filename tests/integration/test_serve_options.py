"""Server options: HTTPS on the unattested port, and settings from BLINDAI_* variables."""

from __future__ import annotations

import http.client
import ssl
import urllib.request
import warnings

import cbor2
import pytest
import trustme
from onnx import TensorProto

import blindai
from blindai.errors import ServerError
from tests._server import start_server
from tests.models import identity


def test_unattested_port_over_https_with_an_ordinary_certificate(tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    server = start_server(
        tmp_path, "--unattested-tls-cert", str(cert), "--unattested-tls-key", str(key), https=True
    )
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        url = f"https://127.0.0.1:{server.unattested_port}/"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            tee_cert = cbor2.loads(resp.read())
        assert isinstance(tee_cert, bytes) and len(tee_cert) > 100
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
            urllib.request.urlopen(url.replace("https", "http"), timeout=5)
    finally:
        server.stop()


def test_half_a_certificate_is_refused(tmp_path):
    ca = trustme.CA()
    cert = tmp_path / "cert.pem"
    ca.issue_cert("localhost").cert_chain_pems[0].write_to_path(cert)
    with pytest.raises(RuntimeError, match="give both"):
        start_server(tmp_path, "--unattested-tls-cert", str(cert))


def test_settings_come_from_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("BLINDAI_MAX_MODELS", "1")
    server = start_server(tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
        with conn:
            conn.upload_model(identity(TensorProto.FLOAT))
            with pytest.raises(ServerError) as full:
                conn.upload_model(identity(TensorProto.FLOAT))
            assert full.value.status_code == 507
    finally:
        server.stop()
