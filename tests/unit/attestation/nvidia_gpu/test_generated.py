"""Generated GPUs: what the real set cannot show (FWID binding, leaf profile, key types)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from blindai.attestation import Endorsements
from blindai.attestation.nvidia_gpu import NvidiaGpuVerifier
from blindai.attestation.nvidia_gpu._chain import _parse_dice
from blindai.errors import BindingError, ChainError, ConfigurationError, SignatureError
from tests._fakes.nvidia_gpu import (
    DICE_OID,
    FakeGpu,
    default_opaque,
    device_name,
    dice_extension,
    leaf_usage,
    sign,
    tlv,
    unsigned_report,
)
from tests.unit.attestation.nvidia_gpu._gpu_kit import ANY, NONCE, NOW


def run(verifier: NvidiaGpuVerifier, gpu: FakeGpu, report: bytes, chain: bytes | None = None):
    return verifier.verify(
        report, ANY, now=NOW,
        endorsements=Endorsements(certificates=(chain or gpu.chain_pem(),)),
        expected_nonce=NONCE,
    )  # fmt: skip


def test_generated_gpu_is_accepted(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    claims = run(test_verifier, gpu, gpu.report(NONCE))
    assert (claims.model, claims.device_id) == ("GH100", "00C0FFEE")
    assert claims.fwid == gpu.fwid and claims.measurements == gpu.measurements


def test_der_chain_accepted(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    ders = tuple(c.public_bytes(Encoding.DER) for c in (gpu.leaf, gpu.ica, gpu.root))
    claims = test_verifier.verify(
        gpu.report(NONCE), ANY, now=NOW, endorsements=Endorsements(certificates=ders)
    )
    assert claims.nonce == NONCE


def test_embedded_roots_refuse_a_generated_gpu(gpu: FakeGpu) -> None:
    with pytest.raises(ChainError, match="pinned NVIDIA root"):
        run(NvidiaGpuVerifier.with_embedded_roots(), gpu, gpu.report(NONCE))


def test_nonce_is_checked_only_when_expected(
    gpu: FakeGpu, test_verifier: NvidiaGpuVerifier
) -> None:
    report = gpu.report(bytes(32))
    with pytest.raises(BindingError):
        run(test_verifier, gpu, report)
    claims = test_verifier.verify_authenticity(
        report, now=NOW, endorsements=Endorsements(certificates=(gpu.chain_pem(),))
    )
    assert claims.nonce == bytes(32)
    with pytest.raises(ConfigurationError, match="32 bytes"):
        test_verifier.verify_authenticity(
            report, now=NOW, endorsements=Endorsements(certificates=(gpu.chain_pem(),)),
            expected_nonce=b"short",
        )  # fmt: skip


def test_fwid_must_match_the_leaf(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    report = gpu.report(NONCE, opaque=default_opaque(fwid=bytes(48)))
    with pytest.raises(ChainError, match="FWID"):
        run(test_verifier, gpu, report)
    with pytest.raises(ChainError, match="FWID"):  # the report has none, the leaf one
        run(test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(fwid=None)))


def test_no_fwid_anywhere_is_accepted(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    leaf = gpu.make_leaf(extensions=[(leaf_usage(), True)])
    claims = run(
        test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(fwid=None)),
        gpu.chain_pem(leaf),
    )  # fmt: skip
    assert claims.fwid is None and claims.model is None


def test_leaf_without_digital_signature(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    leaf = gpu.make_leaf(extensions=[(leaf_usage(False), True)])
    with pytest.raises(ChainError, match="digitalSignature"):
        run(test_verifier, gpu, gpu.report(NONCE), gpu.chain_pem(leaf))
    bare = gpu.make_leaf(extensions=[])
    with pytest.raises(ChainError, match="no key usage"):
        run(test_verifier, gpu, gpu.report(NONCE), gpu.chain_pem(bare))


def test_p256_leaf_refused(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = gpu.make_leaf(key=key, extensions=[(leaf_usage(), True)])
    report = sign(unsigned_report(NONCE, gpu.measurements, opaque=default_opaque(None)), key)
    with pytest.raises(ChainError, match="P-384"):
        run(test_verifier, gpu, report[:-96] + report[-64:].rjust(96, b"\0"), gpu.chain_pem(leaf))


def test_report_signed_by_another_key(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    report = sign(unsigned_report(NONCE, gpu.measurements), other)
    with pytest.raises(SignatureError):
        run(test_verifier, gpu, report)


def test_expired_chain(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    with pytest.raises(ChainError, match="rejected"):
        test_verifier.verify(
            gpu.report(NONCE), ANY, now=gpu.not_after + timedelta(days=1),
            endorsements=Endorsements(certificates=(gpu.chain_pem(),)),
        )  # fmt: skip


def test_naive_time_refused(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    with pytest.raises(ConfigurationError, match="timezone"):
        test_verifier.verify(gpu.report(NONCE), ANY, now=NOW.replace(tzinfo=None))


def test_wrong_policy_type(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    with pytest.raises(ConfigurationError, match="NvidiaGpuPolicy"):
        test_verifier.verify(gpu.report(NONCE), object(), now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("pins", [[], [b"short"], ["x" * 32]])
def test_pins_must_be_digests(pins: list[object]) -> None:
    with pytest.raises(ConfigurationError):
        NvidiaGpuVerifier(trusted_root_fingerprints=pins)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["NVIDIA:GH100", "AMD:GH100:1", "NVIDIA::1", "NVIDIA:GH100:1:2"])
def test_bad_device_name(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier, text: str) -> None:
    leaf = gpu.make_leaf(extensions=[(leaf_usage(), True), (device_name(text), False)])
    with pytest.raises(ChainError, match="device name"):
        run(test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(None)), gpu.chain_pem(leaf))


def test_device_name_must_be_utf8string(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")
    san = x509.SubjectAlternativeName([x509.OtherName(oid, tlv(0x13, b"NVIDIA:GH100:1"))])
    leaf = gpu.make_leaf(extensions=[(leaf_usage(), True), (san, False)])
    with pytest.raises(ChainError, match="UTF8String"):
        run(test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(None)), gpu.chain_pem(leaf))


def test_leaf_signed_with_sha256_refused(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    from tests._fakes.nvidia_gpu import make_cert

    leaf = make_cert(
        "Test GSP FMC LF", gpu.leaf_key, issuer=gpu.ica, issuer_key=gpu.ica_key, ca=False,
        not_before=gpu.not_before, not_after=gpu.not_after,
        extensions=[(leaf_usage(), True)], hash_alg=hashes.SHA256(),
    )  # fmt: skip
    with pytest.raises(ChainError, match="ECDSA/SHA-384"):
        run(test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(None)), gpu.chain_pem(leaf))


def test_leaf_with_the_dice_extension_of_another_shape(
    gpu: FakeGpu, test_verifier: NvidiaGpuVerifier
) -> None:
    ext = x509.UnrecognizedExtension(DICE_OID, tlv(0x30, tlv(0x02, b"\2")))
    leaf = gpu.make_leaf(extensions=[(leaf_usage(), True), (ext, False)])
    with pytest.raises(ChainError, match="DICE"):
        run(test_verifier, gpu, gpu.report(NONCE), gpu.chain_pem(leaf))


def test_dice_parser_is_strict(gpu: FakeGpu) -> None:
    good = dice_extension(gpu.fwid, gpu.leaf_key.public_key())
    assert _parse_dice(good) == gpu.fwid
    for bad in (
        good + b"\0",  # trailing byte
        good[:-1],  # truncated
        good[:1] + b"\x82\x00" + good[2:],  # non-minimal long length
        good.replace(
            bytes.fromhex("0609608648016503040202"), bytes.fromhex("0609608648016503040201")
        ),
    ):
        with pytest.raises(ChainError):
            _parse_dice(bad)
    short_fwid = tlv(
        0x30,
        tlv(0x02, b"\1")
        + tlv(0x30, b"")
        + tlv(0x30, bytes.fromhex("0609608648016503040202") + tlv(0x04, bytes(32))),
    )
    with pytest.raises(ChainError, match="48 bytes"):
        _parse_dice(short_fwid)


def test_too_many_certificates(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    with pytest.raises(ChainError, match="longer"):
        run(test_verifier, gpu, gpu.report(NONCE), gpu.chain_pem() * 3)
    with pytest.raises(ChainError, match="larger"):
        run(test_verifier, gpu, gpu.report(NONCE), b"x" * (65 << 10))
    with pytest.raises(ChainError, match="not PEM or DER"):
        run(test_verifier, gpu, gpu.report(NONCE), b"\x30\x03\x02\x01\x01")


def test_other_names_are_not_the_device_name(
    gpu: FakeGpu, test_verifier: NvidiaGpuVerifier
) -> None:
    san = x509.SubjectAlternativeName(
        [x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), tlv(0x0C, b"x")), x509.DNSName("gpu")]
    )
    leaf = gpu.make_leaf(extensions=[(leaf_usage(), True), (san, False)])
    claims = run(
        test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(None)), gpu.chain_pem(leaf)
    )
    assert claims.model is None and claims.device_id is None


def test_device_name_not_utf8(gpu: FakeGpu, test_verifier: NvidiaGpuVerifier) -> None:
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")
    san = x509.SubjectAlternativeName([x509.OtherName(oid, tlv(0x0C, b"NVIDIA:\xff:1"))])
    leaf = gpu.make_leaf(extensions=[(leaf_usage(), True), (san, False)])
    with pytest.raises(ChainError, match="UTF-8"):
        run(test_verifier, gpu, gpu.report(NONCE, opaque=default_opaque(None)), gpu.chain_pem(leaf))


@pytest.mark.parametrize(
    "der",
    [
        b"\x30",
        b"\x30\x80",
        b"\x30\x81\x90\x00",
        b"\x30\x81\x01\x00",
        b"\x30\x83\x00\x00\x80",
        b"\x30\x82\x00\x80",
        b"\x30\x05\x00",
    ],
)
def test_der_lengths_are_strict(der: bytes) -> None:
    with pytest.raises(ChainError):
        _parse_dice(der)
