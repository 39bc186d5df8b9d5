"""A server that names a GPU report as its own evidence is refused (regression vectors).

A policy with ``[nvidia_gpu]`` beside a CPU TEE section requires both. A server names the kind
of its evidence itself (``kind`` of ``GET /attestation``, ``tee`` of the unattested ``/info``):
named ``nvidia-gpu``, a GPU report was verified by the GPU verifier against the policy's
``[nvidia_gpu]`` section, and its requester nonce, which the host chooses, set to SHA-256 of the
TLS certificate, passed for the report data of a TEE: a host with a genuine GPU and no TEE at
all was accepted, and sent the client's inputs. The generated GPU (:mod:`tests._fakes.nvidia_gpu`)
stands for a genuine one: the verifiers given pin its root as the embedded ones pin NVIDIA's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import cbor2
import pytest

from blindai.attestation import Policy
from blindai.attestation.binding import gpu_nonce
from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy, NvidiaGpuVerifier
from blindai.attestation.snp import SnpPolicy
from blindai.client._attest import attest_server
from blindai.client._peers import PeerGate, VerifyOptions
from blindai.client._transport import AttestedTlsTransport
from blindai.errors import EvidenceError
from blindai.protocol.attestation import AttestationReply
from tests._fakes.nvidia_gpu import make_fake_gpu
from tests.unit.client._attested import attested_fake
from tests.unit.client._loopback import certificate, serve

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
GPU = make_fake_gpu(NOW)
GENUINE = NvidiaGpuVerifier(trusted_root_fingerprints=[GPU.root_fingerprint])
POLICY = Policy(
    sev_snp=SnpPolicy(allow_any_measurement=True),
    nvidia_gpu=NvidiaGpuPolicy(allow_any_measurement=True),
)
CBOR = {"Content-Type": "application/cbor"}


def _gpu_evidence(cert: bytes) -> bytes:
    return cbor2.dumps({"report": GPU.report(gpu_nonce(cert)), "certificates": [GPU.chain_pem()]})


def test_a_gpu_report_named_as_the_servers_evidence_is_refused_on_the_attested_port() -> None:
    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        return AttestationReply(
            kind="nvidia-gpu",
            certificate=cert,
            evidence=GPU.report(hashlib.sha256(cert).digest()),
            certificates=(GPU.chain_pem(),),
        )

    answers: dict[str, tuple[int, bytes]] = {}
    with attested_fake(reply, answers=answers) as fake:
        answers["/gpu-evidence"] = (200, _gpu_evidence(fake.cert_der))
        options = VerifyOptions(
            simulation_mode=False,
            policy=POLICY,
            verifier=GENUINE,
            gpu_verifier=GENUINE,
            now=lambda: NOW,
        )
        gate = PeerGate(options)
        t = AttestedTlsTransport("127.0.0.1", fake.port, 10, gate=gate)
        try:
            with pytest.raises(EvidenceError, match="nvidia-gpu evidence attests a device beside"):
                t.request("POST", "/run", b"secret inputs")
        finally:
            t.close()
    assert "POST /run" not in fake.requests
    assert gate.stats.verified == 0


@pytest.mark.parametrize("verifier", [GENUINE, None], ids=["generated-root", "embedded-roots"])
def test_a_gpu_report_named_as_the_servers_evidence_is_refused_on_the_unattested_port(
    verifier: NvidiaGpuVerifier | None,
) -> None:
    cert = certificate()
    routes = {
        "/": (cbor2.dumps(cert), CBOR),
        "/info": (cbor2.dumps({"tee": "nvidia-gpu"}), CBOR),
        "/quote": (cbor2.dumps(GPU.report(hashlib.sha256(cert).digest())), CBOR),
        "/endorsements": (
            cbor2.dumps({"collateral": None, "certificates": [GPU.chain_pem()]}),
            CBOR,
        ),
    }
    with serve(routes) as server:
        plain = server.plain()
        try:
            with pytest.raises(EvidenceError, match="nvidia-gpu evidence attests a device beside"):
                attest_server(
                    plain, simulation_mode=False, policy=POLICY, now=NOW, verifier=verifier
                )
        finally:
            plain.close()
