"""The non-simulation path end to end, real processes over loopback TLS.

``blindai serve --tee sev-snp --tsm-report-dir DIR`` runs in a subprocess; DIR is a plain
directory in which a thread of this test process plays the kernel's side of configfs-tsm
(:class:`~tests._fakes.snp_machine.FakeSnpKernel`): for every ``inblob`` the server writes, it
serves a freshly signed SEV-SNP report carrying exactly that report data, the certificate
table (VCEK, ASK, ARK) as ``auxblob``, ``provider`` = ``sev_guest`` and the right
``generation``. The "AMD" PKI is generated, so the client verifies with a ``SnpVerifier``
pinning the generated ARK, and with a policy naming the fake report's measurement.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import statistics
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import onnxruntime as ort
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import blindai
from blindai.attestation.binding import expected_report_data
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.policy import Policy
from blindai.attestation.simulation import SimulationModeWarning
from blindai.attestation.snp import SnpPolicy, SnpVerifier
from blindai.errors import (
    BindingError,
    BlindAIError,
    ChainError,
    ConfigurationError,
    ModelNotFound,
    PolicyError,
    VerificationError,
)
from tests._fakes.server_log import attested_requests, requests_beyond_attestation
from tests._fakes.snp_machine import FakeSnpKernel, SnpMachine
from tests._fakes.tls_relay import TlsRelay
from tests._server import REPO, ServerProcess, start_server
from tests.integration._cli import cli, serve_ports
from tests.models import matmul


@pytest.fixture(scope="module")
def machine() -> SnpMachine:
    """A generated AMD PKI and a guest whose reports show ``machine.measurement``."""
    return SnpMachine()


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory, machine: SnpMachine
) -> Iterator[FakeSnpKernel]:
    """The fake configfs-tsm kernel thread, serving ``machine``'s reports."""
    report_dir = tmp_path_factory.mktemp("tsm") / "report"
    report_dir.mkdir()
    with FakeSnpKernel(report_dir, machine) as fake:
        yield fake


@pytest.fixture(scope="module")
def hw_server(
    tmp_path_factory: pytest.TempPathFactory, kernel: FakeSnpKernel
) -> Iterator[ServerProcess]:
    """``blindai serve --tee sev-snp`` (no --simulation) over the fake configfs-tsm."""
    proc = start_server(
        tmp_path_factory.mktemp("hw-server"),
        "--tee",
        "sev-snp",
        "--tsm-report-dir",
        str(kernel.report_dir),
        simulation=False,
    )
    yield proc
    proc.stop()


def _policy(measurement: bytes) -> Policy:
    return Policy(sev_snp=SnpPolicy(measurement=measurement, allow_any_tcb=True))


def _verifier(machine: SnpMachine) -> SnpVerifier:
    return SnpVerifier(trusted_ark_fingerprints=[machine.ark_fingerprint])


def _get(server: ServerProcess, path: str) -> tuple[dict[str, str], Any]:
    url = f"http://{server.host}:{server.unattested_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return {k.lower(): v for k, v in resp.getheaders()}, cbor2.loads(resp.read())


def _connect(server: ServerProcess, **kwargs: Any) -> blindai.Connection:
    return blindai.connect(
        server.host,
        unattested_server_port=server.unattested_port,
        attested_server_port=server.attested_port,
        model_management_port=server.management_port,
        **kwargs,
    )


def _reference(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# the server side: real evidence path, no simulation anywhere


def test_server_is_not_a_simulation(hw_server: ServerProcess) -> None:
    headers, cert = _get(hw_server, "/")
    assert isinstance(cert, bytes)
    assert headers["server"].startswith("blindai/")
    assert "mock" not in headers["server"].lower()
    assert "simulation" not in headers["server"].lower()
    info_headers, info = _get(hw_server, "/info")
    assert "mock" not in info_headers["server"].lower()
    assert info["tee"] == "sev-snp"
    assert info["simulation"] is False
    assert "SIMULATION" not in hw_server.log()


def test_attested_port_is_not_a_simulation_either(hw_server: ServerProcess) -> None:
    _, cert = _get(hw_server, "/")
    pem = x509.load_der_x509_certificate(cert).public_bytes(Encoding.PEM).decode()
    ctx = ssl.create_default_context(cadata=pem)
    ctx.check_hostname = False  # the attested certificate itself is the only trust anchor
    conn = http.client.HTTPSConnection(hw_server.host, hw_server.attested_port, context=ctx)
    try:
        conn.request("GET", "/no-such-route")
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 404
    server_header = resp.getheader("server") or ""
    assert server_header.startswith("blindai/")
    assert "mock" not in server_header.lower()


def test_server_wrote_the_binding_into_the_fake_kernel(
    hw_server: ServerProcess, kernel: FakeSnpKernel, machine: SnpMachine
) -> None:
    _, cert = _get(hw_server, "/")
    _, evidence = _get(hw_server, "/quote")
    _, endorsed = _get(hw_server, "/endorsements")
    binding = expected_report_data(cert)
    # probe entry first (no inblob), then the report entry carrying SHA-256(cert) || zeros
    assert kernel.entries[0]["inblob"] is None
    assert [e["inblob"] for e in kernel.entries[1:]] == [binding] * (len(kernel.entries) - 1)
    assert evidence in machine.reports
    assert evidence[0x50:0x90] == binding
    assert endorsed["certificates"] == [
        machine.vcek.public_bytes(Encoding.DER),
        machine.amd.ask.public_bytes(Encoding.DER),
        machine.amd.ark.public_bytes(Encoding.DER),
    ]
    assert not list(kernel.report_dir.iterdir())  # every entry removed again


# --------------------------------------------------------------------------------------------
# the client: verify, bind, upload, run, delete


def test_connect_upload_run_delete(hw_server: ServerProcess, machine: SnpMachine) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn = _connect(hw_server, policy=_policy(machine.measurement), verifier=_verifier(machine))
    assert not [w for w in caught if issubclass(w.category, SimulationModeWarning)]
    assert not caught, [str(w.message) for w in caught]
    print(f"\n[hardware path] connect() attestation_seconds = {conn.attestation_seconds:.4f}")
    _, cert = _get(hw_server, "/")
    with conn:
        assert conn.claims.kind is EvidenceKind.SEV_SNP
        assert conn.claims.measurement == machine.measurement
        assert conn.claims.report_data == expected_report_data(cert)
        assert conn.claims.debug is False
        assert conn.server_info["tee"] == "sev-snp"
        model = matmul(8, 4, seed=7)
        uploaded = conn.upload_model(model, model_name="dense")
        assert uploaded.hash == hashlib.sha256(model).digest()
        x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
        reply = conn.run_model(model_id=uploaded.model_id, input_tensors={"x": x})
        expected = _reference(model, {"x": x})[0]
        np.testing.assert_allclose(reply.output[0].as_numpy(), expected, rtol=1e-6, atol=1e-6)
        by_name = conn.predict("dense", {"x": x})
        np.testing.assert_allclose(by_name["y"], expected, rtol=1e-6, atol=1e-6)
        conn.delete_model(uploaded.model_id)
        with pytest.raises(ModelNotFound):
            conn.run_model(model_id=uploaded.model_id, input_tensors={"x": x})
    reached = attested_requests(hw_server.log())
    assert {"POST /upload", "POST /run", "POST /delete"} <= set(reached)


def test_connect_time(hw_server: ServerProcess, machine: SnpMachine) -> None:
    """Five connects in a row; the lead reports these numbers (``pytest -s`` shows them)."""
    times = []
    for _ in range(5):
        conn = _connect(hw_server, policy=_policy(machine.measurement), verifier=_verifier(machine))
        times.append(conn.attestation_seconds)
        conn.close()
    print(
        "\n[hardware path] attestation_seconds over 5 connects: "
        + ", ".join(f"{t:.4f}" for t in times)
        + f"; median {statistics.median(times):.4f}"
    )
    assert all(0 < t < 10 for t in times)


def test_connect_with_a_policy_file(
    hw_server: ServerProcess, machine: SnpMachine, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[sev_snp]\nmeasurement = "{machine.measurement.hex()}"\nallow_any_tcb = true\n'
    )
    with _connect(hw_server, hazmat_manifest_path=policy, verifier=_verifier(machine)) as conn:
        assert conn.claims.measurement == machine.measurement


# --------------------------------------------------------------------------------------------
# refusals: a typed error, and nothing reaches the attested ports


def _refused(server: ServerProcess, error: type[BlindAIError], **kwargs: Any) -> BlindAIError:
    before = attested_requests(server.log())
    with pytest.raises(error) as info:
        _connect(server, **kwargs)
    assert requests_beyond_attestation(server.log(), before) == []
    return info.value


def test_wrong_measurement_is_a_policy_error(hw_server: ServerProcess, machine: SnpMachine) -> None:
    wrong = bytes(48)
    err = _refused(hw_server, PolicyError, policy=_policy(wrong), verifier=_verifier(machine))
    assert isinstance(err, PolicyError)
    assert [v.field for v in err.violations] == ["measurement"]
    assert err.violations[0].actual == machine.measurement.hex()


def test_real_amd_roots_do_not_trust_the_generated_ark(
    hw_server: ServerProcess, machine: SnpMachine
) -> None:
    _refused(
        hw_server,
        ChainError,
        policy=_policy(machine.measurement),
        verifier=SnpVerifier.with_embedded_roots(),
    )


def test_default_verifier_is_the_embedded_roots(
    hw_server: ServerProcess, machine: SnpMachine
) -> None:
    _refused(hw_server, ChainError, policy=_policy(machine.measurement))


def test_no_policy_is_a_configuration_error(hw_server: ServerProcess, machine: SnpMachine) -> None:
    _refused(hw_server, ConfigurationError, verifier=_verifier(machine))


def test_simulation_client_refuses_hardware_evidence(hw_server: ServerProcess) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationModeWarning)
        err = _refused(hw_server, VerificationError, simulation_mode=True)
    assert str(err) == (
        "simulation_mode=True accepts only a simulation server; this one sent sev-snp "
        "evidence: refusing. Verify it against a policy, without simulation_mode=True."
    )


def test_hardware_client_refuses_a_simulation_server(
    server: ServerProcess, machine: SnpMachine
) -> None:
    err = _refused(
        server, VerificationError, policy=_policy(machine.measurement), verifier=_verifier(machine)
    )
    assert "simulation" in str(err).lower()
    err = _refused(server, VerificationError)  # no policy either: still refused as a simulation
    assert "simulation" in str(err).lower()


def test_tls_ended_by_an_attacker_after_genuine_snp_evidence(
    hw_server: ServerProcess, machine: SnpMachine
) -> None:
    """An attacker ends TLS and relays to the server: the SNP report verifies, the binding does
    not (the reply names the attacker's certificate, which the report does not bind)."""
    before = attested_requests(hw_server.log())
    with TlsRelay(hw_server.host, hw_server.attested_port, rewrite_certificate=True) as relay:
        with pytest.raises(BindingError, match="does not bind this TLS certificate"):
            blindai.connect(
                "127.0.0.1",
                unattested_server_port=hw_server.unattested_port,
                attested_server_port=relay.port,
                model_management_port=hw_server.management_port,
                policy=_policy(machine.measurement),
                verifier=_verifier(machine),
            )
    assert relay.paths == ["GET /attestation"]
    assert requests_beyond_attestation(hw_server.log(), before) == []


def test_cli_attest_host_trusts_only_the_real_amd_roots(
    hw_server: ServerProcess, machine: SnpMachine, tmp_path: Path
) -> None:
    """``blindai attest HOST`` has no option to trust another root: the generated ARK is refused."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[sev_snp]\nmeasurement = "{machine.measurement.hex()}"\nallow_any_tcb = true\n'
    )
    port = str(hw_server.unattested_port)
    for flags, status, first_word in [
        (["--policy", str(policy)], 1, "ChainError:"),
        (["--simulation"], 1, "VerificationError: --simulation accepts only a simulation"),
    ]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "blindai",
                "attest",
                hw_server.host,
                "--unattested-port",
                port,
                "--attested-port",
                str(hw_server.attested_port),
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
        )
        assert done.returncode == status, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(first_word), done.stderr


# --------------------------------------------------------------------------------------------
# a server that cannot get trustworthy evidence does not start (one line, no traceback)


def _serve_once(report_dir: Path, tee: str) -> subprocess.CompletedProcess[str]:
    return cli("serve", "--tee", tee, "--tsm-report-dir", report_dir, *serve_ports())


@pytest.mark.parametrize(
    ("tee", "kernel_kwargs", "error"),
    [
        (
            "sev-snp",
            {"generation_text": "7\n"},
            "EvidenceError: configfs-tsm: another writer raced us on 3 report entries in a row",
        ),
        (
            "sev-snp",
            {"sign_instead": b"\x66" * 64},
            "EvidenceError: the configfs-tsm report does not carry our report data",
        ),
        (
            "tdx",
            {},
            "ConfigurationError: --tee tdx asked, but configfs-tsm's provider is 'sev_guest'",
        ),
    ],
    ids=["raced-generation", "wrong-report-data", "wrong-provider"],
)
def test_server_refuses_to_start(
    tmp_path: Path, machine: SnpMachine, tee: str, kernel_kwargs: dict[str, Any], error: str
) -> None:
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    with FakeSnpKernel(report_dir, machine, **kernel_kwargs):
        done = _serve_once(report_dir, tee)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(error), done.stderr


# --------------------------------------------------------------------------------------------
# Regression: certificate-table GUIDs are in RFC 4122 byte order (they were read little-endian)


def test_verifier_reads_a_real_auxblob_directly(machine: SnpMachine) -> None:
    assert machine.auxblob[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")  # wire bytes
    report = machine.report(b"\x42" * 64)
    claims = _verifier(machine).verify(
        report,
        SnpPolicy(measurement=machine.measurement, allow_any_tcb=True),
        now=datetime.now(timezone.utc),
        endorsements=Endorsements(certificates=(machine.auxblob,)),
    )
    assert claims.measurement == machine.measurement
