"""Real AWS Nitro attestation documents (tests/data/evidence/nitro).

Positive: each set verifies at its documented time with its documented PCRs, user_data,
public_key and nonce. Negative: vectors derived here by bit flips, truncation and time shifts.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509

from blindai.attestation import EvidenceKind, Policy, verify
from blindai.attestation.nitro import NitroClaims, NitroPolicy, NitroVerifier
from blindai.errors import (
    BlindAIError,
    ChainError,
    EvidenceError,
    PolicyError,
    SignatureError,
)

SETS = "evervault-production-pcrs", "evervault-debug-userdata", "evervault-debug-nonce"
PERMISSIVE = NitroPolicy(allow_any_measurement=True, allow_debug=True)


def _read(evidence_dir: Path, name: str) -> bytes:
    return (evidence_dir / "nitro" / name / "attestation_doc.cbor").read_bytes()


def _documented_policy(nitro_set: Any) -> NitroPolicy:
    """Every documented PCR, and zeros for the others of 0..15."""
    section: dict[str, Any] = {f"pcr{i}": "00" * 48 for i in range(16)}
    section.update({f"pcr{i}": v for i, v in nitro_set.pcrs.items()})
    section["allow_debug"] = nitro_set.debug
    return NitroPolicy.from_mapping(section)


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _payload(raw: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = cbor2.loads(cbor2.loads(raw)[2])
    return payload


def test_verifies_at_documented_time(evidence_dir: Path, nitro_set: Any) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    verifier = NitroVerifier.with_embedded_roots()
    claims = verifier.verify(raw, _documented_policy(nitro_set), now=nitro_set.now)

    assert isinstance(claims, NitroClaims)
    assert claims.kind is EvidenceKind.NITRO
    assert claims.module_id == nitro_set.module_id
    assert claims.digest == "SHA384"
    assert claims.timestamp.timestamp() * 1000 == nitro_set.timestamp_ms
    assert claims.verified_at == nitro_set.now
    assert sorted(claims.pcrs) == list(range(16))
    for index, pcr in claims.pcrs.items():
        assert pcr.hex() == nitro_set.pcrs.get(index, "00" * 48), index
    assert claims.measurement == claims.pcrs[0]
    assert claims.debug is nitro_set.debug
    assert claims.user_data == nitro_set.user_data
    assert claims.report_data == (nitro_set.user_data or b"")
    assert claims.public_key == nitro_set.public_key
    assert len(claims.nonce or b"") == nitro_set.nonce_len
    assert (claims.nonce or b"").hex().startswith(nitro_set.nonce_prefix)
    assert claims.certificate == _payload(raw)["certificate"]
    json.dumps(claims.to_dict())


def test_debug_nonce_verification_time_precedes_timestamp(evidence_dir: Path) -> None:
    # the documented time is 0.86 s before the document's timestamp: within the clock skew
    raw = _read(evidence_dir, "evervault-debug-nonce")
    now = datetime(2023, 9, 18, 15, 3, 30, tzinfo=timezone.utc)
    claims = NitroVerifier.with_embedded_roots().verify(raw, PERMISSIVE, now=now)
    assert (claims.timestamp - now).total_seconds() == pytest.approx(0.86)


@pytest.mark.parametrize("name", ["evervault-debug-userdata", "evervault-debug-nonce"])
def test_debug_refused_by_default_policy(evidence_dir: Path, kit: Any, name: str) -> None:
    nitro_set = kit.NITRO_SETS[name]
    raw = _read(evidence_dir, name)
    verifier = NitroVerifier.with_embedded_roots()
    policy = NitroPolicy.from_mapping({"allow_any_measurement": True})
    with pytest.raises(PolicyError) as info:
        verifier.verify(raw, policy, now=nitro_set.now)
    assert [v.field for v in info.value.violations] == ["debug"]
    assert "debug" in info.value.diagnostics()

    allowed = NitroPolicy.from_mapping({"allow_any_measurement": True, "allow_debug": True})
    assert verifier.verify(raw, allowed, now=nitro_set.now).debug is True


def test_debug_under_production_policy_lists_every_violation(evidence_dir: Path, kit: Any) -> None:
    production = kit.NITRO_SETS["evervault-production-pcrs"]
    debug = kit.NITRO_SETS["evervault-debug-userdata"]
    policy = NitroPolicy.from_mapping({f"pcr{i}": production.pcrs[i] for i in (0, 1, 2)})
    raw = _read(evidence_dir, debug.name)
    with pytest.raises(PolicyError) as info:
        NitroVerifier.with_embedded_roots().verify(raw, policy, now=debug.now)
    assert [v.field for v in info.value.violations] == ["debug", "pcr0", "pcr1", "pcr2"]
    assert info.value.violations[1].actual == "00" * 48


def test_production_accepted_with_pcr0_to_pcr2(evidence_dir: Path, kit: Any) -> None:
    production = kit.NITRO_SETS["evervault-production-pcrs"]
    toml = "[nitro]\n" + "".join(f'pcr{i} = "{production.pcrs[i]}"\n' for i in (0, 1, 2))
    raw = _read(evidence_dir, production.name)
    claims = verify(EvidenceKind.NITRO, raw, Policy.from_toml(toml), now=production.now)
    assert claims.measurement.hex() == production.pcrs[0]
    assert claims.debug is False


def test_wrong_pcr0_refused(evidence_dir: Path, kit: Any) -> None:
    production = kit.NITRO_SETS["evervault-production-pcrs"]
    wrong = bytes.fromhex(production.pcrs[0])[::-1]
    raw = _read(evidence_dir, production.name)
    with pytest.raises(PolicyError) as info:
        NitroVerifier.with_embedded_roots().verify(
            raw, NitroPolicy(pcrs={0: wrong}), now=production.now
        )
    assert [(v.field, v.expected, v.actual) for v in info.value.violations] == [
        ("pcr0", wrong.hex(), production.pcrs[0])
    ]


def test_base64_file_decodes_to_cbor(evidence_dir: Path) -> None:
    folder = evidence_dir / "nitro" / "evervault-debug-nonce"
    decoded = base64.b64decode((folder / "attestation_doc.b64").read_bytes(), validate=True)
    assert decoded == (folder / "attestation_doc.cbor").read_bytes()


def test_tagged_form_accepted(evidence_dir: Path, nitro_set: Any) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(raw)))
    assert tagged == b"\xd2" + raw
    claims = NitroVerifier.with_embedded_roots().verify(tagged, PERMISSIVE, now=nitro_set.now)
    assert claims.module_id == nitro_set.module_id


# -- derived negative vectors ---------------------------------------------------------------


@pytest.mark.parametrize("bit", range(32))
def test_protected_header_bit_flip(evidence_dir: Path, nitro_set: Any, bit: int) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    offset = raw.index(bytes.fromhex("a1013822"))
    assert offset == 2  # 84 (array of 4) 44 (bstr of 4) a1 01 38 22
    bad = _flip(raw, offset + bit // 8, 1 << (bit % 8))
    with pytest.raises(EvidenceError, match="protected header"):
        NitroVerifier.with_embedded_roots().verify(bad, PERMISSIVE, now=nitro_set.now)


@pytest.mark.parametrize("field", ["pcr0", "pcr15", "module_id", "nonce_or_user_data", "timestamp"])
def test_payload_bit_flip_breaks_signature(evidence_dir: Path, nitro_set: Any, field: str) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    payload = _payload(raw)
    if field.startswith("pcr"):
        target = payload["pcrs"][int(field[3:])]
    elif field == "nonce_or_user_data":
        target = payload["nonce"] or payload["user_data"]
    elif field == "timestamp":
        target = payload["timestamp"].to_bytes(8, "big")
    else:
        target = payload["module_id"].encode()
    offset = raw.index(cbor2.loads(raw)[2]) + cbor2.loads(raw)[2].index(target)
    bad = _flip(raw, offset + len(target) - 1)  # last byte: 1 ms for the timestamp
    with pytest.raises(SignatureError):
        NitroVerifier.with_embedded_roots().verify(bad, PERMISSIVE, now=nitro_set.now)


@pytest.mark.parametrize("where", [-96, -49, -48, -1])
def test_signature_bit_flip(evidence_dir: Path, nitro_set: Any, where: int) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    with pytest.raises(SignatureError):
        NitroVerifier.with_embedded_roots().verify(
            _flip(raw, len(raw) + where, 0x80), PERMISSIVE, now=nitro_set.now
        )


def test_zero_signature(evidence_dir: Path, nitro_set: Any) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    with pytest.raises(SignatureError):
        NitroVerifier.with_embedded_roots().verify(
            raw[:-96] + bytes(96), PERMISSIVE, now=nitro_set.now
        )


@pytest.mark.parametrize(
    "cert", ["cabundle0", "cabundle1", "cabundle2", "cabundle3", "certificate"]
)
@pytest.mark.parametrize("part", ["subject", "signature"])
def test_certificate_bit_flip(evidence_dir: Path, nitro_set: Any, cert: str, part: str) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    payload = _payload(raw)
    der = payload["certificate"] if cert == "certificate" else payload["cabundle"][int(cert[-1])]
    if part == "signature":
        inner = len(der) - 1  # last byte of s in the ECDSA signature
    else:
        common_name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        cn = common_name.split("CN=")[1].split(",")[0].encode()
        inner = der.rindex(cn) + len(cn) - 1
    offset = raw.index(der) + inner
    assert raw.count(der) == 1
    with pytest.raises(ChainError):
        NitroVerifier.with_embedded_roots().verify(
            _flip(raw, offset), PERMISSIVE, now=nitro_set.now
        )


@pytest.mark.parametrize("edge", ["before", "after"])
def test_verification_time_outside_leaf_window(
    evidence_dir: Path, nitro_set: Any, edge: str
) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    leaf = x509.load_der_x509_certificate(_payload(raw)["certificate"])
    if edge == "before":
        now = leaf.not_valid_before_utc - timedelta(seconds=1)
    else:
        now = leaf.not_valid_after_utc + timedelta(seconds=1)
    lax = NitroPolicy(
        allow_any_measurement=True,
        allow_debug=True,
        max_age_seconds=86400,
        max_clock_skew_seconds=86400,
    )
    with pytest.raises(ChainError, match="verification time"):
        NitroVerifier.with_embedded_roots().verify(raw, lax, now=now)


def test_stale_document_refused(evidence_dir: Path, kit: Any) -> None:
    production = kit.NITRO_SETS["evervault-production-pcrs"]
    raw = _read(evidence_dir, production.name)
    timestamp = datetime.fromtimestamp(production.timestamp_ms / 1000, tz=timezone.utc)
    now = timestamp + timedelta(seconds=601)
    with pytest.raises(PolicyError) as info:
        NitroVerifier.with_embedded_roots().verify(raw, PERMISSIVE, now=now)
    assert [v.field for v in info.value.violations] == ["timestamp"]
    assert info.value.violations[0].actual == "601.000 s old"
    patient = NitroPolicy(allow_any_measurement=True, max_age_seconds=3600)
    assert NitroVerifier.with_embedded_roots().verify(raw, patient, now=now).debug is False


def test_document_from_the_future_refused(evidence_dir: Path, kit: Any) -> None:
    nonce_set = kit.NITRO_SETS["evervault-debug-nonce"]
    raw = _read(evidence_dir, nonce_set.name)
    now = nonce_set.now - timedelta(minutes=2)
    with pytest.raises(PolicyError) as info:
        NitroVerifier.with_embedded_roots().verify(raw, PERMISSIVE, now=now)
    assert [v.field for v in info.value.violations] == ["timestamp"]
    assert "ahead" in info.value.violations[0].actual


def test_real_document_with_unpinned_root(evidence_dir: Path, nitro_set: Any, chain: Any) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    verifier = NitroVerifier(trusted_root_fingerprints=[chain.root_fingerprint])
    with pytest.raises(ChainError, match="pinned"):
        verifier.verify(raw, PERMISSIVE, now=nitro_set.now)


@pytest.mark.parametrize("cut", [0, 1, 2, 6, 100, -97, -1])
def test_truncated_document(evidence_dir: Path, nitro_set: Any, cut: int) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    with pytest.raises(EvidenceError):
        NitroVerifier.with_embedded_roots().verify(raw[:cut], PERMISSIVE, now=nitro_set.now)


def test_every_prefix_is_evidence_error(evidence_dir: Path) -> None:
    raw = _read(evidence_dir, "evervault-debug-userdata")
    verifier = NitroVerifier.with_embedded_roots()
    now = datetime(2022, 10, 12, 14, tzinfo=timezone.utc)
    for cut in range(len(raw)):
        with pytest.raises(EvidenceError):
            verifier.verify(raw[:cut], PERMISSIVE, now=now)


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00", b"\xff" * 64, b"not cbor at all", b"\x84\x44", b"\x9f\xff"]
)
def test_garbage_is_evidence_error(garbage: bytes) -> None:
    with pytest.raises(EvidenceError):
        NitroVerifier.with_embedded_roots().verify(
            garbage, PERMISSIVE, now=datetime(2022, 10, 13, tzinfo=timezone.utc)
        )


def test_trailing_byte_refused(evidence_dir: Path, nitro_set: Any) -> None:
    raw = nitro_set.path(evidence_dir).read_bytes()
    with pytest.raises(EvidenceError, match="trailing"):
        NitroVerifier.with_embedded_roots().verify(raw + b"\x00", PERMISSIVE, now=nitro_set.now)


def test_random_bit_flips_never_accepted(evidence_dir: Path, kit: Any) -> None:
    production = kit.NITRO_SETS["evervault-production-pcrs"]
    raw = _read(evidence_dir, production.name)
    verifier = NitroVerifier.with_embedded_roots()
    rng = random.Random(20221013)
    outcomes: set[type[BaseException]] = set()
    for _ in range(300):
        offset, bit = rng.randrange(len(raw)), rng.randrange(8)
        with pytest.raises(BlindAIError) as info:
            verifier.verify(_flip(raw, offset, 1 << bit), PERMISSIVE, now=production.now)
        outcomes.add(type(info.value))
    assert outcomes <= {EvidenceError, ChainError, SignatureError}
