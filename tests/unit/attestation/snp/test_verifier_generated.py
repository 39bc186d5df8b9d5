"""SnpVerifier with a generated AMD-like PKI: the paths the real vectors cannot reach."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from blindai.attestation.endorsements import Endorsements
from blindai.attestation.snp import SnpClaims, SnpPolicy, SnpVerifier
from blindai.errors import ChainError, SignatureError

from ._snp_kit import NOW, FakeAmd, der, make_cert, make_fake_amd, make_report, sign_report

POLICY = SnpPolicy(allow_any_measurement=True, max_vmpl=3)


def verifier(fake: FakeAmd) -> SnpVerifier:
    return SnpVerifier(trusted_ark_fingerprints=[fake.ark_fingerprint])


def run(fake: FakeAmd, report: bytes, certs: tuple[bytes, ...]) -> SnpClaims:
    return verifier(fake).verify(
        report, POLICY, now=NOW, endorsements=Endorsements(certificates=certs)
    )


def vcek_report(fake: FakeAmd, **fields: object) -> bytes:
    return sign_report(make_report(**fields), fake.vcek_key)  # type: ignore[arg-type]


def vlek_report(fake: FakeAmd, **fields: object) -> bytes:
    return sign_report(make_report(key_info=1 << 2, **fields), fake.vlek_key)  # type: ignore[arg-type]


def test_generated_vcek_report_verifies(fake_amd: FakeAmd) -> None:
    claims = run(fake_amd, vcek_report(fake_amd), fake_amd.chain(fake_amd.vcek()))
    assert (claims.signing_key, claims.product, claims.vmpl) == ("vcek", "Milan", 0)
    assert claims.measurement == bytes(range(48))


def test_generated_vlek_report_verifies(fake_amd: FakeAmd) -> None:
    report = vlek_report(fake_amd, version=3, vmpl=1, chip_id=bytes(64))
    claims = run(fake_amd, report, fake_amd.chain(fake_amd.vlek()))
    assert (claims.signing_key, claims.vmpl, claims.cpuid) == ("vlek", 1, (0x19, 1, 1))


def test_generated_v5_report_verifies(fake_amd: FakeAmd) -> None:
    report = vcek_report(fake_amd, version=5, mit_vectors=(1, 3))
    claims = run(fake_amd, report, fake_amd.chain(fake_amd.vcek()))
    assert claims.report_version == 5


def test_generated_ark_is_not_pinned_by_default(fake_amd: FakeAmd) -> None:
    with pytest.raises(ChainError, match="pinned"):
        SnpVerifier.with_embedded_roots().verify(
            vcek_report(fake_amd),
            POLICY,
            now=NOW,
            endorsements=Endorsements(certificates=fake_amd.chain(fake_amd.vcek())),
        )


@pytest.mark.parametrize("tcb", [(3, 0, 9, 115), (2, 0, 8, 115), (3, 1, 8, 115), (3, 0, 8, 116)])
def test_tcb_extension_must_equal_reported_tcb(fake_amd: FakeAmd, tcb: tuple[int, ...]) -> None:
    with pytest.raises(ChainError, match="REPORTED_TCB"):
        run(fake_amd, vcek_report(fake_amd), fake_amd.chain(fake_amd.vcek(tcb=tcb)))  # type: ignore[arg-type]


def test_vlek_tcb_extension_must_equal_reported_tcb(fake_amd: FakeAmd) -> None:
    with pytest.raises(ChainError, match="REPORTED_TCB"):
        run(fake_amd, vlek_report(fake_amd), fake_amd.chain(fake_amd.vlek(tcb=(3, 0, 7, 115))))


def test_hwid_must_equal_chip_id(fake_amd: FakeAmd) -> None:
    with pytest.raises(ChainError, match="CHIP_ID"):
        run(fake_amd, vcek_report(fake_amd), fake_amd.chain(fake_amd.vcek(hwid=b"\xc5" * 64)))


def test_masked_chip_id_skips_hwid(fake_amd: FakeAmd) -> None:
    report = vcek_report(fake_amd, key_info=0b10, chip_id=bytes(64))
    assert run(fake_amd, report, fake_amd.chain(fake_amd.vcek())).chip_id == bytes(64)


def test_zero_chip_id_without_mask_is_refused(fake_amd: FakeAmd) -> None:
    report = vcek_report(fake_amd, chip_id=bytes(64))
    with pytest.raises(ChainError, match="CHIP_ID"):
        run(fake_amd, report, fake_amd.chain(fake_amd.vcek()))


def test_missing_tcb_extension(fake_amd: FakeAmd) -> None:
    with pytest.raises(ChainError, match="lacks extension"):
        run(fake_amd, vcek_report(fake_amd), fake_amd.chain(fake_amd.vcek(tcb=None)))


def test_vlek_report_with_only_a_vcek(fake_amd: FakeAmd) -> None:
    with pytest.raises(ChainError, match="no VLEK"):
        run(fake_amd, vlek_report(fake_amd), fake_amd.chain(fake_amd.vcek()))


def test_vcek_report_with_only_a_vlek(fake_amd: FakeAmd) -> None:
    with pytest.raises(ChainError, match="no VCEK"):
        run(fake_amd, vcek_report(fake_amd), fake_amd.chain(fake_amd.vlek()))


def test_vlek_must_be_issued_by_the_asvk(fake_amd: FakeAmd) -> None:
    vlek_by_ask = make_cert(
        subject="SEV-VLEK",
        issuer="SEV-Milan",
        public_key=fake_amd.vlek_key.public_key(),
        signing_key=fake_amd.ask_key,
    )
    with pytest.raises(ChainError, match="not signed by the ASVK"):
        run(fake_amd, vlek_report(fake_amd), fake_amd.chain(vlek_by_ask))


def test_vcek_named_leaf_signed_by_asvk(fake_amd: FakeAmd) -> None:
    vcek_by_asvk = make_cert(
        subject="SEV-VCEK",
        issuer="SEV-VLEK-Milan",
        public_key=fake_amd.vcek_key.public_key(),
        signing_key=fake_amd.asvk_key,
    )
    with pytest.raises(ChainError, match="not signed by the ASK"):
        run(fake_amd, vcek_report(fake_amd), fake_amd.chain(vcek_by_asvk))


@pytest.mark.parametrize(
    ("rsa_padding", "algorithm"),
    [
        (padding.PKCS1v15(), hashes.SHA384()),
        (padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32), hashes.SHA384()),
        (padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=48), hashes.SHA384()),
        (padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()),
    ],
    ids=["pkcs1v15", "salt-32", "mgf1-sha256", "sha256"],
)
def test_only_amd_rsa_pss_parameters(
    fake_amd: FakeAmd, rsa_padding: object, algorithm: hashes.HashAlgorithm
) -> None:
    vcek = make_cert(
        subject="SEV-VCEK",
        issuer="SEV-Milan",
        public_key=fake_amd.vcek_key.public_key(),
        signing_key=fake_amd.ask_key,
        rsa_padding=rsa_padding,
        hash_algorithm=algorithm,
    )
    with pytest.raises(ChainError, match="not signed by the ASK"):
        run(fake_amd, vcek_report(fake_amd), fake_amd.chain(vcek))


def test_outer_signature_algorithm_must_match_tbs(fake_amd: FakeAmd) -> None:
    vcek = der(fake_amd.vcek())
    tbs = fake_amd.vcek().tbs_certificate_bytes
    salt = bytes.fromhex("a203020130")
    outer_at = vcek.index(salt, vcek.index(tbs[-20:]) + 20)
    tampered = vcek[:outer_at] + bytes.fromhex("a203020131") + vcek[outer_at + 5 :]
    with pytest.raises(ChainError, match="not signed by the ASK"):
        run(fake_amd, vcek_report(fake_amd), (tampered, *fake_amd.chain(fake_amd.vcek())[1:]))


def test_pinned_ark_with_a_bad_self_signature(fake_amd: FakeAmd) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark = make_cert(
        subject="ARK-Milan",
        issuer="ARK-Milan",
        public_key=fake_amd.ark_key.public_key(),
        signing_key=other,
    )
    pins = [hashlib.sha256(der(ark)).digest()]
    certs = (der(fake_amd.vcek()), der(fake_amd.ask), der(ark))
    with pytest.raises(ChainError, match="self-signed"):
        SnpVerifier(trusted_ark_fingerprints=pins).verify(
            vcek_report(fake_amd), POLICY, now=NOW, endorsements=Endorsements(certificates=certs)
        )


def test_pinned_root_must_be_named_ark(fake_amd: FakeAmd) -> None:
    root = make_cert(
        subject="Root",
        issuer="Root",
        public_key=fake_amd.ark_key.public_key(),
        signing_key=fake_amd.ark_key,
    )
    pins = [hashlib.sha256(der(root)).digest()]
    with pytest.raises(ChainError, match="self-signed AMD root"):
        SnpVerifier(trusted_ark_fingerprints=pins).verify(
            vcek_report(fake_amd),
            POLICY,
            now=NOW,
            endorsements=Endorsements(certificates=(der(fake_amd.vcek()), der(root))),
        )


def test_intermediate_not_signed_by_the_ark(fake_amd: FakeAmd) -> None:
    other = make_fake_amd()
    certs = (der(fake_amd.vcek()), der(other.ask), der(fake_amd.ark))
    with pytest.raises(ChainError, match="no ASK"):
        run(fake_amd, vcek_report(fake_amd), certs)


def test_leaf_with_a_p256_key(fake_amd: FakeAmd) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    vcek = make_cert(
        subject="SEV-VCEK",
        issuer="SEV-Milan",
        public_key=key.public_key(),
        signing_key=fake_amd.ask_key,
    )
    with pytest.raises(SignatureError):
        run(fake_amd, sign_report(make_report(), key), fake_amd.chain(vcek))


@pytest.mark.parametrize("which", ["leaf", "ask", "ark"])
@pytest.mark.parametrize("early", [True, False])
def test_each_certificate_must_be_valid_now(fake_amd: FakeAmd, which: str, early: bool) -> None:
    window: dict[str, Any] = (
        {"not_before": NOW + timedelta(seconds=1), "not_after": NOW + timedelta(days=1)}
        if early
        else {"not_before": NOW - timedelta(days=1), "not_after": NOW - timedelta(seconds=1)}
    )
    ark, ask, leaf = fake_amd.ark, fake_amd.ask, fake_amd.vcek()
    if which == "leaf":
        leaf = fake_amd.vcek(**window)
    elif which == "ask":
        ask = make_cert(
            subject="SEV-Milan",
            issuer="ARK-Milan",
            public_key=fake_amd.ask_key.public_key(),
            signing_key=fake_amd.ark_key,
            **window,
        )
    else:
        ark = make_cert(
            subject="ARK-Milan",
            issuer="ARK-Milan",
            public_key=fake_amd.ark_key.public_key(),
            signing_key=fake_amd.ark_key,
            **window,
        )
    pins = [hashlib.sha256(der(ark)).digest()]
    with pytest.raises(ChainError, match="valid"):
        SnpVerifier(trusted_ark_fingerprints=pins).verify(
            vcek_report(fake_amd),
            POLICY,
            now=NOW,
            endorsements=Endorsements(certificates=(der(leaf), der(ask), der(ark))),
        )


def test_validity_bounds_are_inclusive(fake_amd: FakeAmd) -> None:
    leaf = fake_amd.vcek(not_before=NOW, not_after=NOW)
    assert run(fake_amd, vcek_report(fake_amd), fake_amd.chain(leaf)).verified_at == NOW


def test_report_signed_by_another_key(fake_amd: FakeAmd) -> None:
    report = sign_report(make_report(), ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(SignatureError):
        run(fake_amd, report, fake_amd.chain(fake_amd.vcek()))


def test_intermediate_with_a_non_rsa_key(fake_amd: FakeAmd) -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ask = make_cert(
        subject="SEV-Milan",
        issuer="ARK-Milan",
        public_key=ec_key.public_key(),
        signing_key=fake_amd.ark_key,
    )
    certs = (der(fake_amd.vcek()), der(ask), der(fake_amd.ark))
    with pytest.raises(ChainError, match="not signed by the ASK"):
        run(fake_amd, vcek_report(fake_amd), certs)
