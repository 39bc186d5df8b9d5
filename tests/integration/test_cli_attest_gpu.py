"""``blindai attest verify --kind nvidia-gpu`` as a user runs it: exit 0 / 1 / 2, one line each.

The real H100 set travels in ``tests/data/evidence/nvidia-gpu``; derived negative vectors are
written to ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..unit.attestation.nvidia_gpu.test_real_report import NONCE_AT, OPAQUE_AT, RECORD, SIGNATURE_AT
from .test_cli_attest import _lines, blindai

SET = Path(__file__).resolve().parents[1] / "data/evidence/nvidia-gpu/nvidia-hopper-trustee"
NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
AT = "2025-01-01T00:00:00Z"


def args(*extra: str | Path, evidence: Path | None = None, certs: Path | None = None) -> list:
    return [
        "attest", "verify", "--kind", "nvidia-gpu",
        "--evidence", evidence or SET / "attestation_report.hex",
        "--certs", certs or SET / "cert_chain.pem", "--at", AT, *extra,
    ]  # fmt: skip


def test_accepted_with_its_nonce_json() -> None:
    done = blindai(*args("--nonce", NONCE, "--json"))
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims["nonce"] == NONCE and claims["driver_version"] == "550.90.07"
    assert claims["model"] == "GH100" and len(claims["measurements"]) == 64
    assert _lines(done.stderr) == [
        "NOTE: no --policy given: the default [nvidia_gpu] policy applies (no check beyond "
        "authenticity: no minimum driver or VBIOS version); the measurement is NOT pinned: any "
        "code in a genuine TEE passes"
    ]


def test_raw_bytes_evidence_and_no_nonce(tmp_path: Path) -> None:
    raw = tmp_path / "report.bin"
    raw.write_bytes(bytes.fromhex(SET.joinpath("attestation_report.hex").read_text()))
    done = blindai(*args(evidence=raw))
    assert done.returncode == 0, done.stderr
    assert "NOTE: no --nonce given: freshness not checked" in done.stderr


def test_another_nonce_refused() -> None:
    done = blindai(*args("--nonce", "00" * 32))
    assert done.returncode == 1
    assert _lines(done.stderr)[-1].startswith("BindingError: the GPU report answers nonce")


def test_policy_violations_one_line_each(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[nvidia_gpu]\nmeasurements = { 2 = "' + "00" * 48 + '" }\nmin_driver_version = "560"\n'
    )
    done = blindai(*args("--nonce", NONCE, "--policy", policy))
    assert done.returncode == 1
    assert _lines(done.stderr) == [
        f"PolicyError: measurements.2: expected {'00' * 48}, got "
        "8048dfd18fe229bf16eb9d30cca0f11a24dafe6eb731de1462984645a0b189b77c4e4e17de727a5e19e3d07de51da338",
        "PolicyError: driver_version: expected >= 560, got 550.90.07",
    ]


@pytest.mark.parametrize(
    ("at", "bit", "error", "status"),
    [
        (4, 0, "SignatureError", 1),  # the request's nonce
        (36, 4, "EvidenceError", 2),  # the request's reserved SlotIDParam bits
        (RECORD + 10, 3, "SignatureError", 1),  # measurement block 1's value
        (RECORD + 55 * 40 + 20, 0, "SignatureError", 1),  # measurement block 41's value
        (RECORD + 1, 1, "EvidenceError", 2),  # block 1's MeasurementSpecification
        (NONCE_AT, 0, "SignatureError", 1),  # the responder's nonce
        (OPAQUE_AT + 4, 0, "SignatureError", 1),  # opaque data: the VBIOS version's value
        (OPAQUE_AT, 5, "EvidenceError", 2),  # opaque data: an item's type
        (SIGNATURE_AT, 0, "SignatureError", 1),  # the signature's r
        (SIGNATURE_AT + 95, 7, "SignatureError", 1),  # the signature's s, last byte
    ],
)
def test_bit_flips_in_the_report(
    tmp_path: Path, at: int, bit: int, error: str, status: int
) -> None:
    """The API's tamper matrix (tests/unit/attestation/nvidia_gpu), through the CLI."""
    raw = bytearray.fromhex(SET.joinpath("attestation_report.hex").read_text())
    raw[at] ^= 1 << bit
    bad = tmp_path / "flipped.bin"
    bad.write_bytes(bytes(raw))
    done = blindai(*args("--nonce", NONCE, evidence=bad))
    assert done.returncode == status, done.stderr
    assert _lines(done.stderr)[-1].startswith(f"{error}:")


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("where", ["tbs", "signature"])
def test_bit_flip_in_every_certificate(tmp_path: Path, index: int, where: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certs = x509.load_pem_x509_certificates(SET.joinpath("cert_chain.pem").read_bytes())
    files = []
    for i, cert in enumerate(certs):
        der = bytearray(cert.public_bytes(Encoding.DER))
        if i == index:  # a byte inside the subject key, or of the signature value (the end)
            der[200 if where == "tbs" else len(der) - 5] ^= 1
        path = tmp_path / f"{i}.der"
        path.write_bytes(bytes(der))
        files.append(path)
    done = blindai(*args(certs=files[0]), "--certs", *files)
    assert done.returncode == 1, done.stderr
    assert _lines(done.stderr)[-1].startswith(("ChainError:", "SignatureError:"))


@pytest.mark.parametrize("length", [10, 2000])
def test_truncated_is_malformed(tmp_path: Path, length: int) -> None:
    cut = tmp_path / "cut.hex"
    cut.write_text(SET.joinpath("attestation_report.hex").read_text()[:length])
    done = blindai(*args(evidence=cut))
    assert done.returncode == 2
    assert _lines(done.stderr)[0].startswith("EvidenceError: GPU attestation report truncated")
    assert len(_lines(done.stderr)) == 1


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--nonce", "zz"], "is not hex"),
        (["--nonce", "00"], "32 bytes"),
    ],
)
def test_unusable_nonce(extra: list[str], match: str) -> None:
    done = blindai(*args(*extra))
    assert done.returncode == 2 and match in done.stderr


def test_nonce_for_another_kind(tmp_path: Path) -> None:
    empty = tmp_path / "quote.bin"
    empty.write_bytes(b"")
    done = blindai("attest", "verify", "--kind", "sev-snp", "--evidence", empty, "--nonce", NONCE)
    assert done.returncode == 2 and "nvidia-gpu only" in done.stderr


def test_unpinned_root_refused(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certs = x509.load_pem_x509_certificates(SET.joinpath("cert_chain.pem").read_bytes())
    short = tmp_path / "no-root.pem"
    short.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs[:-1]))
    done = blindai(*args(certs=short))
    assert done.returncode == 1
    assert "pinned NVIDIA root" in done.stderr
