"""The real H100 report: accepted, equal to the upstream verifier's claims, and the tamper matrix.

Offsets in the real report (4117 bytes): request 0..36, response header 37..44, measurement
record 45..3564 (64 blocks of 55 bytes), responder nonce 3565..3596, OpaqueLength 3597..3598,
OpaqueData 3599..4020, signature 4021..4116.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation import EvidenceKind, Policy, verifier_for, verify
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.nvidia_gpu import NvidiaGpuClaims, NvidiaGpuVerifier
from blindai.attestation.nvidia_gpu._opaque import TEXT_FIELDS
from blindai.errors import (
    BindingError,
    ChainError,
    EvidenceError,
    PolicyError,
    SignatureError,
    VerificationError,
)
from tests.unit.attestation.nvidia_gpu._gpu_kit import ANY, REAL_AT, REAL_NONCE, RealSet

RECORD = 45
NONCE_AT = 3565
OPAQUE_AT = 3599
SIGNATURE_AT = 4021


def verified(real: RealSet, nvidia: NvidiaGpuVerifier, **kw: Any) -> NvidiaGpuClaims:
    report = kw.pop("report", real.report)
    endorsements = kw.pop("endorsements", real.endorsements)
    return nvidia.verify(
        report, kw.pop("policy", ANY), now=kw.pop("now", REAL_AT), endorsements=endorsements,
        expected_nonce=kw.pop("expected_nonce", REAL_NONCE),
    )  # fmt: skip


def flip(data: bytes, at: int, bit: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]


def test_layout_offsets_match_the_real_report(real: RealSet) -> None:
    assert len(real.report) == 4117
    assert real.report[RECORD : RECORD + 2] == b"\x01\x01"  # block 1, DMTF
    assert int.from_bytes(real.report[NONCE_AT + 32 : NONCE_AT + 34], "little") == 422
    assert SIGNATURE_AT == OPAQUE_AT + 422 == len(real.report) - 96


def test_real_report_is_accepted(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    claims = verified(real, nvidia)
    assert claims.kind is EvidenceKind.NVIDIA_GPU
    assert claims.nonce == claims.report_data == REAL_NONCE
    assert claims.driver_version == "550.90.07"
    assert claims.vbios_version == "96.00.9f.00.01"
    assert (claims.model, claims.device_id) == ("GH100", "48B02D92494BADF4")
    assert claims.chain[-1] == "O=NVIDIA,CN=NVIDIA Device Identity CA"
    assert claims.chain[0].startswith("CN=GH100 A01 GSP FMC LF")
    assert len(claims.measurements) == 64 and claims.nvdec0_status == "disabled"
    assert claims.debug is False and len(claims.measurement) == 48
    leaf = x509.load_pem_x509_certificates(real.chain_pem)[0]
    assert claims.certificate == leaf.public_bytes(Encoding.DER)


def _upstream_view(claims: NvidiaGpuClaims) -> dict[str, Any]:
    """Our claims in the shape of trustee's claims.json (commit dae839f).

    That trustee version wrote the text fields as text, ``nvdec0_status`` and
    ``protected_pcie_status`` as the lossy UTF-8 of their one byte (0x55 -> "U"), the
    measurement counts by 1-based index, and everything else as hex.
    """
    config: dict[str, Any] = {}
    for name, raw in claims.opaque.items():
        if name in TEXT_FIELDS:
            config[name] = raw.rstrip(b"\0").decode()
        elif name in ("nvdec0_status", "protected_pcie_status"):
            config[name] = raw.decode("latin-1")
        elif name == "measurement_count":
            config[name] = {str(i): n for i, n in claims.measurement_count.items()}
        elif name == "vbios_version":
            config[name] = claims.vbios_version
        else:
            config[name] = raw.hex()
    return {
        "arch": {"GH100": "Hopper"}[str(claims.model)],
        "config": config,
        "measurements": {str(i): v.hex() for i, v in claims.measurements.items()},
    }


def test_claims_equal_the_upstream_verifiers(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    ours = _upstream_view(verified(real, nvidia))
    upstream = dict(real.upstream)
    assert upstream.pop("uuid")  # trustee's input, not in the report
    assert ours == upstream


def test_top_level_verify_and_verifier_for(real: RealSet) -> None:
    assert isinstance(verifier_for(EvidenceKind.NVIDIA_GPU), NvidiaGpuVerifier)
    policy = Policy.from_toml(
        '[nvidia_gpu]\nallow_any_measurement = true\nmin_driver_version = "550"\n'
        'models = ["GH100"]\n'
    )
    claims = verify(
        EvidenceKind.NVIDIA_GPU, real.report, policy, now=REAL_AT, endorsements=real.endorsements
    )
    assert claims.report_data == REAL_NONCE


@pytest.mark.parametrize(
    ("at", "bit", "error"),
    [
        (0, 0, EvidenceError),  # request SPDMVersion
        (2, 1, EvidenceError),  # request Param1 reserved bit
        (4, 0, SignatureError),  # requester nonce
        (35, 7, SignatureError),  # requester nonce, last byte
        (36, 4, EvidenceError),  # SlotIDParam reserved bit
        (RECORD + 10, 3, SignatureError),  # block 1's value
        (RECORD + 55 * 40 + 20, 0, SignatureError),  # block 41's value
        (RECORD + 1, 1, EvidenceError),  # block 1's MeasurementSpecification
        (RECORD + 2, 0, EvidenceError),  # block 1's MeasurementSize
        (NONCE_AT, 0, SignatureError),  # responder nonce
        (OPAQUE_AT + 4, 0, SignatureError),  # vbios_version value
        (OPAQUE_AT + 0, 5, EvidenceError),  # an OpaqueData type
        (SIGNATURE_AT, 0, SignatureError),  # r
        (4116, 7, SignatureError),  # s, last byte
    ],
)
def test_bit_flips(
    real: RealSet, nvidia: NvidiaGpuVerifier, at: int, bit: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        verified(real, nvidia, report=flip(real.report, at, bit))


def test_bit_flip_in_driver_version_text(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    at = real.report.index(b"550.90.07")
    with pytest.raises(SignatureError):  # "450.90.07": still text, no longer signed
        verified(real, nvidia, report=real.report[:at] + b"4" + real.report[at + 1 :])


def _certs(real: RealSet) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(real.chain_pem)]


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("where", ["signature", "tbs"])
def test_bit_flip_in_every_certificate(
    real: RealSet, nvidia: NvidiaGpuVerifier, index: int, where: str
) -> None:
    ders = _certs(real)
    der = ders[index]
    # the signature value ends the DER; a TBS byte well inside the subject key
    at = len(der) - 5 if where == "signature" else 200
    ders[index] = flip(der, at)
    with pytest.raises(VerificationError) as caught:
        verified(real, nvidia, endorsements=Endorsements(certificates=tuple(ders)))
    assert isinstance(caught.value, ChainError | SignatureError)


@pytest.mark.parametrize("length", [0, 10, 36, 37, 44, 45, 1000, NONCE_AT + 10, 4000, 4116])
def test_truncation(real: RealSet, nvidia: NvidiaGpuVerifier, length: int) -> None:
    with pytest.raises(EvidenceError):
        verified(real, nvidia, report=real.report[:length])


def test_trailing_byte(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    with pytest.raises(EvidenceError, match="after the signature"):
        verified(real, nvidia, report=real.report + b"\0")


def test_another_nonce(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    with pytest.raises(BindingError, match=REAL_NONCE.hex()):
        verified(real, nvidia, expected_nonce=bytes(32))


def test_unpinned_root(real: RealSet) -> None:
    other = NvidiaGpuVerifier(trusted_root_fingerprints=[bytes(32)])
    with pytest.raises(ChainError, match="pinned NVIDIA root"):
        verified(real, other)


def test_chain_not_yet_valid(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    with pytest.raises(ChainError):  # NVIDIA GH100 Provisioner ICA 1 starts 2022-03-01
        verified(real, nvidia, now=datetime(2022, 2, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    "order",
    [[1, 0, 2, 3, 4], [0, 2, 3, 4], [0, 1, 2, 3], [4], [0, 1, 2, 3, 4, 4], [0, 1, 3, 2, 4]],
)
def test_misordered_or_incomplete_chain(
    real: RealSet, nvidia: NvidiaGpuVerifier, order: list[int]
) -> None:
    ders = _certs(real)
    with pytest.raises(VerificationError):
        verified(real, nvidia, endorsements=Endorsements(certificates=[ders[i] for i in order]))


def test_no_certificates(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    with pytest.raises(ChainError, match="leaf and the root"):
        verified(real, nvidia, endorsements=None)


def test_policy_all_violations_at_once(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    policy = Policy.from_toml(
        "[nvidia_gpu]\n"
        'measurements = { 2 = "' + "00" * 48 + '", 65 = "' + "11" * 48 + '" }\n'
        'min_driver_version = "560.0"\nmin_vbios_version = "96.00.a0"\nmodels = ["GB100"]\n'
    ).for_kind(EvidenceKind.NVIDIA_GPU)
    with pytest.raises(PolicyError) as caught:
        verified(real, nvidia, policy=policy)
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "measurements.2",
        "measurements.65",
        "driver_version",
        "vbios_version",
        "model",
    ]
    assert caught.value.violations[1].actual == "absent"


def test_policy_with_the_real_values_accepts(real: RealSet, nvidia: NvidiaGpuVerifier) -> None:
    m = real.upstream["measurements"]
    policy = Policy.from_toml(
        "[nvidia_gpu]\n"
        f'measurements = {{ 2 = "{m["2"]}", 12 = ["{"00" * 48}", "{m["12"]}"] }}\n'
        'min_driver_version = "550.90.07"\nmin_vbios_version = "96.00.9f.00.01"\n'
        'models = ["GH100"]\n'
    ).for_kind(EvidenceKind.NVIDIA_GPU)
    assert verified(real, nvidia, policy=policy).measurements[12].hex() == m["12"]
