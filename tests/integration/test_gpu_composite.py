"""CPU and GPU evidence bound to one TLS key, end to end over loopback.

Real ``blindai serve`` processes (``tests._fakes.gpu_server``: the real CLI and server, NVML
replaced by a double that signs SPDM reports with a generated GPU key). The CPU side is a
simulation, or the SEV-SNP hardware path over the fake configfs-tsm. The client is the real
``connect``: with ``[nvidia_gpu]`` in its policy it reads ``/gpu-evidence`` over the attested
channel and verifies chain, signature, nonce binding and policy before sending anything else.
"""

from __future__ import annotations

import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

import blindai
from blindai.attestation import Policy
from blindai.attestation.binding import gpu_nonce
from blindai.attestation.nvidia_gpu import NvidiaGpuVerifier
from blindai.attestation.nvidia_gpu._layout import parse_report
from blindai.attestation.snp import SnpPolicy, SnpVerifier
from blindai.client import attest
from blindai.errors import BindingError, ChainError, PolicyError, VerificationError
from tests._fakes.gpu_server import save_gpu
from tests._fakes.nvidia_gpu import FakeGpu, make_fake_gpu
from tests._fakes.server_log import attested_requests, requests_beyond_attestation
from tests._fakes.snp_machine import FakeSnpKernel, SnpMachine
from tests._server import ServerProcess, start_server
from tests.models import matmul

from .test_cli_attest import blindai as blindai_cli

GPU_MODULE = "tests._fakes.gpu_server"


@pytest.fixture(scope="module")
def gpu() -> FakeGpu:
    return make_fake_gpu()


@pytest.fixture(scope="module")
def gpu_dir(tmp_path_factory: pytest.TempPathFactory, gpu: FakeGpu) -> Path:
    directory = tmp_path_factory.mktemp("gpu")
    save_gpu(gpu, directory)
    return directory


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory, gpu_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("gpu-server"), "--gpu-dir", str(gpu_dir), module=GPU_MODULE
    )
    yield proc
    proc.stop()


def _policy_toml(gpu: FakeGpu, **overrides: str) -> str:
    lines = {
        "measurements": "{ "
        + ", ".join(f'{i} = "{v.hex()}"' for i, v in gpu.measurements.items())
        + " }",
        "min_driver_version": '"550.90"',
        "models": '["GH100"]',
        **overrides,
    }
    return "[nvidia_gpu]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items())


def _gpu_verifier(gpu: FakeGpu) -> NvidiaGpuVerifier:
    return NvidiaGpuVerifier(trusted_root_fingerprints=[gpu.root_fingerprint])


def _connect(server: ServerProcess, **kwargs: Any) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, **server.ports, **kwargs)


def test_connect_verifies_the_gpu_bound_to_the_tls_key(
    gpu_server: ServerProcess, gpu: FakeGpu, gpu_dir: Path
) -> None:
    policy = Policy.from_toml(_policy_toml(gpu))
    with _connect(
        gpu_server, simulation_mode=True, policy=policy, gpu_verifier=_gpu_verifier(gpu)
    ) as conn:
        assert conn.gpu_claims is not None
        assert conn.gpu_claims.nonce == gpu_nonce(conn.certificate)
        assert conn.gpu_claims.measurements == gpu.measurements
        assert conn.gpu_claims.model == "GH100"
        model_id = conn.upload_model(matmul(4, 2)).model_id
        out = conn.predict(model_id, [np.ones((1, 4), np.float32)])
        assert next(iter(out.values())).shape == (1, 2)
    asked = gpu_dir.joinpath("reports").read_text().split()
    assert gpu_nonce(conn.certificate).hex() in asked
    assert "gpu-evidence" in cbor2.loads(_get(gpu_server, "/info"))["capabilities"]


def _get(server: ServerProcess, path: str) -> bytes:
    url = f"http://{server.host}:{server.unattested_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()  # type: ignore[no-any-return]


def test_attest_verifies_the_gpu_and_sends_nothing_else(
    gpu_server: ServerProcess, gpu: FakeGpu
) -> None:
    """blindai.client.attest: connect's attestation (one code path), without connecting."""
    before = attested_requests(gpu_server.log())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        attested = attest(
            gpu_server.host,
            gpu_server.unattested_port,
            attested_server_port=gpu_server.attested_port,
            simulation_mode=True,
            policy=Policy.from_toml(_policy_toml(gpu)),
            gpu_verifier=_gpu_verifier(gpu),
        )
    assert attested.gpu_claims is not None
    assert attested.gpu_claims.nonce == gpu_nonce(attested.cert_der)
    assert attested.gpu_claims.measurements == gpu.measurements
    assert attested.verified_on == "attested"
    logged = _logged_after(gpu_server, before, count=2)
    assert logged == ["GET /attestation", "GET /gpu-evidence"]


def _logged_after(server: ServerProcess, before: list[str], *, count: int) -> list[str]:
    """The attested requests after ``before``, once ``count`` are logged (a request is logged
    after it is answered)."""
    deadline = time.monotonic() + 30
    while len(now := attested_requests(server.log())) < len(before) + count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return now[len(before) :]


def test_gpu_evidence_beside_the_cpu_evidence(gpu_server: ServerProcess) -> None:
    cert = cbor2.loads(_get(gpu_server, "/"))
    evidence = cbor2.loads(_get(gpu_server, "/gpu-evidence"))
    assert set(evidence) == {"report", "certificates"}
    assert parse_report(evidence["report"]).requester_nonce == gpu_nonce(cert)
    assert evidence["certificates"][0].startswith(b"-----BEGIN CERTIFICATE-----")


def _refused_before_sending(server: ServerProcess, before: list[str]) -> None:
    assert requests_beyond_attestation(server.log(), before) == []


def test_gpu_policy_violation_refuses_before_sending(
    gpu_server: ServerProcess, gpu: FakeGpu
) -> None:
    before = attested_requests(gpu_server.log())
    policy = Policy.from_toml(_policy_toml(gpu, min_driver_version='"560.1"', models='["GB100"]'))
    with pytest.raises(PolicyError) as caught:
        _connect(gpu_server, simulation_mode=True, policy=policy, gpu_verifier=_gpu_verifier(gpu))
    assert [v.field for v in caught.value.violations] == ["driver_version", "model"]
    _refused_before_sending(gpu_server, before)


def test_nvidia_roots_refuse_a_generated_gpu(gpu_server: ServerProcess, gpu: FakeGpu) -> None:
    before = attested_requests(gpu_server.log())
    with pytest.raises(ChainError, match="pinned NVIDIA root"):
        _connect(gpu_server, simulation_mode=True, policy=Policy.from_toml(_policy_toml(gpu)))
    _refused_before_sending(gpu_server, before)


def test_a_policy_without_nvidia_gpu_does_not_ask(gpu_server: ServerProcess) -> None:
    with _connect(gpu_server, simulation_mode=True) as conn:
        assert conn.gpu_claims is None


def test_required_gpu_but_the_server_has_none(server: ServerProcess, gpu: FakeGpu) -> None:
    with pytest.raises(VerificationError, match="serves no GPU evidence"):
        _connect(
            server, simulation_mode=True, policy=Policy.from_toml(_policy_toml(gpu)),
            gpu_verifier=_gpu_verifier(gpu),
        )  # fmt: skip
    assert cbor2.loads(_get(server, "/info"))["device"] == "cpu"


def test_cli_attest_host_verifies_cpu_and_gpu_by_default_roots(
    gpu_server: ServerProcess, gpu: FakeGpu, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(_policy_toml(gpu))
    done = blindai_cli(
        "attest", gpu_server.host, "--simulation", "--policy", policy,
        "--unattested-port", gpu_server.unattested_port,
        "--attested-port", gpu_server.attested_port,
    )  # fmt: skip
    # the CLI trusts NVIDIA's roots only: the generated GPU is refused, in one line
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("ChainError:")


def test_replayed_gpu_report_is_not_served(tmp_path: Path, gpu: FakeGpu, gpu_dir: Path) -> None:
    """A GPU (here: NVML) answering with an old report: the server refuses to start."""
    replay_dir = tmp_path / "gpu"
    save_gpu(gpu, replay_dir)
    old = gpu.report(bytes(32))
    replay_dir.joinpath("replay").write_bytes(old)
    with pytest.raises(RuntimeError, match="another nonce"):
        start_server(tmp_path, "--gpu-dir", str(replay_dir), module=GPU_MODULE)


# --------------------------------------------------------------------------------------------
# the hardware path: SEV-SNP (fake configfs-tsm) and the GPU, no simulation anywhere


@pytest.fixture(scope="module")
def machine() -> SnpMachine:
    return SnpMachine()


@pytest.fixture(scope="module")
def snp_gpu_server(
    tmp_path_factory: pytest.TempPathFactory, machine: SnpMachine, gpu_dir: Path
) -> Iterator[ServerProcess]:
    report_dir = tmp_path_factory.mktemp("tsm") / "report"
    report_dir.mkdir()
    with FakeSnpKernel(report_dir, machine):
        proc = start_server(
            tmp_path_factory.mktemp("snp-gpu"),
            "--tee", "sev-snp", "--tsm-report-dir", str(report_dir), "--gpu-dir", str(gpu_dir),
            simulation=False, module=GPU_MODULE,
        )  # fmt: skip
        yield proc
        proc.stop()


def test_snp_and_gpu_bound_to_one_key(
    snp_gpu_server: ServerProcess, machine: SnpMachine, gpu: FakeGpu
) -> None:
    policy = Policy.from_toml(_policy_toml(gpu))
    policy = Policy(
        sev_snp=SnpPolicy(measurement=machine.measurement, allow_any_tcb=True),
        nvidia_gpu=policy.nvidia_gpu,
    )
    with _connect(
        snp_gpu_server, policy=policy,
        verifier=SnpVerifier(trusted_ark_fingerprints=[machine.ark_fingerprint]),
        gpu_verifier=_gpu_verifier(gpu),
    ) as conn:  # fmt: skip
        assert conn.claims.kind.value == "sev-snp"
        assert conn.gpu_claims is not None
        assert conn.gpu_claims.nonce == gpu_nonce(conn.certificate)
        assert conn.claims.report_data[:32] != conn.gpu_claims.nonce  # separate domains


def test_snp_with_a_wrong_gpu_measurement_refused(
    snp_gpu_server: ServerProcess, machine: SnpMachine, gpu: FakeGpu
) -> None:
    before = attested_requests(snp_gpu_server.log())
    gpu_policy = Policy.from_toml(_policy_toml(gpu, measurements='{ 1 = "' + "00" * 48 + '" }'))
    policy = Policy(
        sev_snp=SnpPolicy(measurement=machine.measurement, allow_any_tcb=True),
        nvidia_gpu=gpu_policy.nvidia_gpu,
    )
    with pytest.raises(PolicyError, match=r"measurements\.1"):
        _connect(
            snp_gpu_server, policy=policy,
            verifier=SnpVerifier(trusted_ark_fingerprints=[machine.ark_fingerprint]),
            gpu_verifier=_gpu_verifier(gpu),
        )  # fmt: skip
    _refused_before_sending(snp_gpu_server, before)


def test_binding_refuses_the_real_report_for_this_certificate(
    gpu_server: ServerProcess,
) -> None:
    """The real H100 report verifies up to its nonce, which no certificate of ours derives."""
    from tests.unit.attestation.nvidia_gpu._gpu_kit import ANY, REAL_AT, RealSet

    real = RealSet.load()
    cert = cbor2.loads(_get(gpu_server, "/"))
    with pytest.raises(BindingError, match="expected " + gpu_nonce(cert).hex()):
        NvidiaGpuVerifier.with_embedded_roots().verify(
            real.report, ANY, now=REAL_AT, endorsements=real.endorsements,
            expected_nonce=gpu_nonce(cert),
        )  # fmt: skip
