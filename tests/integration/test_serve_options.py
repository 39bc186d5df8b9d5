"""Server options: HTTPS on the unattested port, BLINDAI_* variables, host, ports, start-up."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import urllib.request
from pathlib import Path

import cbor2
import numpy as np
import pytest
import trustme
from onnx import TensorProto

from blindai.errors import ServerError
from tests._server import connect, free_ports, start_server
from tests.integration._cli import cli, ok, one_error_line, serve_ports
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
    monkeypatch.setenv("BLINDAI_ADMIN_KEY_SHA265", "0" * 64)  # misspelt: ignored, but said
    server = start_server(tmp_path)
    try:
        assert (
            "WARNING blindai.server: environment variable BLINDAI_ADMIN_KEY_SHA265 is no "
            "setting of blindai serve (did you mean BLINDAI_ADMIN_KEY_SHA256?)"
        ) in server.log()
        assert "BLINDAI_MAX_MODELS is no setting" not in server.log()
        conn = connect(server)
        with conn:
            conn.upload_model(identity(TensorProto.FLOAT))
            with pytest.raises(ServerError) as full:
                conn.upload_model(identity(TensorProto.FLOAT))
            assert full.value.status_code == 507
    finally:
        server.stop()


def _listening_address(port: int) -> str:
    """The local address a TCP (IPv4) socket listens on for ``port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on port {port}")


def test_a_simulation_listens_on_loopback_unless_told_otherwise(tmp_path):
    server = start_server(tmp_path, host=None)  # no --host
    try:
        assert _listening_address(server.unattested_port) == "127.0.0.1"
        assert _listening_address(server.management_port) == "127.0.0.1"
        banner = [ln for ln in server.log().splitlines() if "BlindAI" in ln and "SIMULATION" in ln]
        assert (
            len(banner) == 1
            and "this simulation listens on loopback only (--host 0.0.0.0 exposes it)" in banner[0]
        )
    finally:
        server.stop()


def test_exposing_a_simulation_takes_an_explicit_host_and_the_banner_says_so(tmp_path):
    server = start_server(tmp_path, host="0.0.0.0")
    try:
        assert _listening_address(server.attested_port) == "0.0.0.0"
        assert "simulation is EXPOSED on 0.0.0.0" in server.log()
    finally:
        server.stop()


def test_start_up_is_logged_once_and_the_server_loads_no_client_code(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every import the server makes, logged
    server = start_server(tmp_path)
    try:
        conn = connect(server)
        with conn:
            model = conn.upload_model(identity(TensorProto.FLOAT))
            conn.run_model(model.model_id, input_tensors=[np.zeros((1, 3), np.float32)])
    finally:
        server.stop()
    log = server.log().splitlines()
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in log if ln.startswith("import time:")}
    assert "blindai.server.main" in imported  # the import log works
    assert [m for m in imported if m.startswith("blindai.client")] == []
    events = [ln for ln in log if not ln.startswith("import time:")]
    assert sum("SIMULATION MODE" in ln for ln in events) == 1, events
    assert sum("BlindAI " in ln and "unattested http" in ln for ln in events) == 1, events
    assert not any("Started server process" in ln for ln in events), events


def test_one_port_for_two_roles_is_refused_in_one_line():
    (port,) = free_ports(1)
    r = cli("serve", "--simulation", "--attested-port", str(port), "--management-port", str(port))
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"port {port} is given for two roles: --attested-port and --management-port" in line


BLOCK_SERVER_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

class _ClientOnly(MetaPathFinder):
    # the server extra's packages are not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnxruntime", "onnx", "starlette", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _ClientOnly())
"""


@pytest.mark.parametrize("argv", [["serve", "--simulation"], ["serve", "--help"]])
def test_serve_in_a_client_only_install_names_the_extra(argv):
    r = cli(*argv, python_code=BLOCK_SERVER_EXTRA)
    line = one_error_line(r, "ConfigurationError", 2)
    assert "pip install 'blindai[server]'" in line
    assert ok(cli("upload", "--help", python_code=BLOCK_SERVER_EXTRA)).startswith("usage:")


def test_an_environment_that_lets_models_configure_onnxruntime_is_refused_in_one_line():
    """ORT_LOAD_CONFIG_FROM_MODEL=1: a model's metadata could turn on profiling (its node names
    and each run's timings written to the working directory); the server does not start."""
    r = cli("serve", "--simulation", *serve_ports(), env={"ORT_LOAD_CONFIG_FROM_MODEL": "1"})
    line = one_error_line(r, "ConfigurationError", 2)
    assert "ORT_LOAD_CONFIG_FROM_MODEL=1 lets every uploaded model choose" in line


def test_an_unknown_log_level_is_refused_in_one_line():
    r = cli("serve", "--simulation", *serve_ports(), "--log-level", "chatty")
    line = one_error_line(r, "ConfigurationError", 2)
    assert "unknown log level 'chatty'" in line


def test_without_empty_kernel_proofs_such_a_model_is_admitted_and_the_start_warns(tmp_path):
    """--no-empty-kernel-proofs: a GRU over a Slice the request sizes is admitted (by default
    it is refused at upload), and the start-up log says what that costs."""
    from blindai.errors import InvalidInput
    from tests import attacks

    model = attacks.empty_unsafe("GRU", made="slice")
    for sub in ("default", "relaxed"):
        (tmp_path / sub).mkdir()
    server = start_server(tmp_path / "default")
    try:
        with connect(server) as conn, pytest.raises(InvalidInput, match="proven non-zero"):
            conn.upload_model(model)
        assert "--no-empty-kernel-proofs" not in server.log()
    finally:
        server.stop()
    server = start_server(tmp_path / "relaxed", "--no-empty-kernel-proofs")
    try:
        assert "WARNING blindai.server: --no-empty-kernel-proofs: a tenant's model" in server.log()
        with connect(server) as conn:
            assert conn.upload_model(model).model_id
    finally:
        server.stop()


def test_an_audit_log_that_cannot_be_opened_is_refused_in_one_line(tmp_path: Path):
    """It stopped the start with "error: No such file or directory", naming neither the
    option nor the file: the operator had to guess which of the server's paths it was."""
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    r = cli("serve", "--simulation", *serve_ports(), "--audit-log", str(missing))
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"--audit-log {missing}: cannot be opened for appending" in line


def test_an_audit_log_fifo_without_a_reader_is_refused_not_waited_for(tmp_path: Path):
    """Opening a FIFO for writing waits for its reader: with none (the log shipper not
    started, or gone), the start hung there for good, silent, listening on nothing."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    r = cli("serve", "--simulation", *serve_ports(), "--audit-log", str(fifo), timeout=30)
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"--audit-log {fifo}: cannot be opened for appending (a FIFO with no reader)" in line
