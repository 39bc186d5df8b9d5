"""Channel binding and the policy container."""

from __future__ import annotations

import hashlib

import pytest

from blindai.attestation import EvidenceKind, Policy, check_binding, expected_report_data
from blindai.attestation.kinds import KINDS
from blindai.errors import BindingError, ConfigurationError
from blindai.server.tls import TlsIdentity


def test_report_data_layout():
    cert = TlsIdentity.generate().cert_der
    data = expected_report_data(cert)
    assert len(data) == 64
    assert data[:32] == hashlib.sha256(cert).digest() and data[32:] == b"\0" * 32


def test_binding_accepts_digest_alone_for_nitro_user_data():
    cert = TlsIdentity.generate().cert_der
    check_binding(cert, report_data=hashlib.sha256(cert).digest())


def test_binding_accepts_nitro_public_key():
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = TlsIdentity.generate().cert_der
    spki = (
        x509.load_der_x509_certificate(cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    check_binding(cert, report_data=b"", public_key=spki)


def test_binding_by_public_key_to_a_certificate_cryptography_cannot_read():
    """The peer's certificate passed OpenSSL; cryptography's ValueError escaped untyped."""
    with pytest.raises(BindingError, match="public key cannot be read"):
        check_binding(b"\x30\x03\x02\x01\x00", report_data=b"", public_key=b"spki")


@pytest.mark.parametrize("tamper", [0, 31, 32, 63])
def test_binding_refuses_any_changed_byte(tamper):
    cert = TlsIdentity.generate().cert_der
    data = bytearray(expected_report_data(cert))
    data[tamper] ^= 1
    with pytest.raises(BindingError):
        check_binding(cert, report_data=bytes(data))


def test_empty_policy_is_an_error():
    with pytest.raises(ConfigurationError, match="empty"):
        Policy()
    with pytest.raises(ConfigurationError, match="empty"):
        Policy.from_toml("")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mystery = 1", "unknown policy key"),
        ("sgx = 3", "must be a table"),
        ("[sgx\n", "not valid TOML"),
        ("sgx = " + "[" * 100_000 + "]" * 100_000, "not valid TOML"),  # nested too deeply
    ],
)
def test_bad_policy_files(text, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Policy.from_toml(text)


def test_missing_policy_file(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        Policy.from_file(tmp_path / "absent.toml")


def test_a_policy_file_that_is_not_utf8_is_a_configuration_error(tmp_path):
    """A Latin-1 policy (a pasted "é" in a comment) raised UnicodeDecodeError: a traceback in
    the CLI rather than its one line."""
    path = tmp_path / "policy.toml"
    path.write_bytes(b"# caf\xe9\n[sgx]\nallow_any_measurement = true\n")
    with pytest.raises(ConfigurationError, match=r"not UTF-8 text \(TOML is\): byte 5 is b'\\xe9'"):
        Policy.from_file(path)


def test_sections_are_attributes_and_the_policy_is_immutable():
    from blindai.attestation.tdx import TdxPolicy

    tdx = TdxPolicy(allow_any_measurement=True)
    policy = Policy(tdx=tdx, sgx=None)
    assert policy.tdx is tdx and policy.sgx is None
    assert dict(policy.sections) == {"tdx": tdx}
    assert policy == Policy(tdx=TdxPolicy(allow_any_measurement=True))
    assert (
        policy == Policy.defaults_only(EvidenceKind.TDX) != Policy.defaults_only(EvidenceKind.SGX)
    )
    assert policy != "tdx"
    assert hash(policy) == hash(Policy(tdx=TdxPolicy(allow_any_measurement=True)))
    assert repr(policy).startswith("Policy(tdx=TdxPolicy(")
    with pytest.raises(AttributeError, match="immutable"):
        policy.tdx = None
    with pytest.raises(AttributeError, match="mystery"):
        _ = policy.mystery
    with pytest.raises(ConfigurationError, match="unknown policy section"):
        Policy(mystery=tdx)
    with pytest.raises(ConfigurationError, match=r"no \[sgx\] section"):
        policy.for_kind(EvidenceKind.SGX)


def test_defaults_only_keeps_every_default_but_the_measurement():
    policy = Policy.defaults_only(*(spec.kind for spec in KINDS))
    assert set(policy.sections) == {"sgx", "tdx", "sev_snp", "nitro", "nvidia_gpu"}
    for kind in (EvidenceKind.SGX, EvidenceKind.TDX):
        sub = policy.for_kind(kind)
        assert sub.allow_any_measurement and not sub.allow_debug
        assert sub.allowed_tcb_statuses == frozenset({"UpToDate"})
    snp = policy.for_kind(EvidenceKind.SEV_SNP)
    assert snp.measurement is None and not snp.allow_debug and snp.max_vmpl == 0
    nitro = policy.for_kind(EvidenceKind.NITRO)
    assert dict(nitro.pcrs) == {} and not nitro.allow_debug and nitro.max_age_seconds == 600
    assert set(Policy.defaults_only(EvidenceKind.NITRO).sections) == {"nitro"}


def test_binding_by_public_key_alone_refuses_another_key():
    cert = TlsIdentity.generate().cert_der
    with pytest.raises(BindingError, match="report data is nothing"):
        check_binding(cert, report_data=None, public_key=b"another key")


def test_policy_file_and_manifest(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('mr_enclave = "' + "ab" * 32 + '"\n')
    assert Policy.from_file(path).sgx.mr_enclave == frozenset({bytes.fromhex("ab" * 32)})
    path.write_text('mr_enclave = "' + "ab" * 32 + '"\n[sgx]\nallow_any_measurement = true\n')
    with pytest.raises(ConfigurationError, match="either as"):
        Policy.from_file(path)


def test_gpu_nonce_is_the_certificate_digest_in_its_own_domain():
    from blindai.attestation.binding import GPU_NONCE_LABEL, gpu_nonce

    cert = TlsIdentity.generate().cert_der
    digest = hashlib.sha256(cert).digest()
    assert gpu_nonce(cert) == hashlib.sha256(GPU_NONCE_LABEL + digest).digest()
    assert gpu_nonce(cert) != digest and len(gpu_nonce(cert)) == 32
