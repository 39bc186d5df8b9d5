"""GramineAttester against a directory laid out like Gramine's /dev/attestation, real quotes."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation.claims import EvidenceKind
from blindai.errors import CollateralUnavailable, ConfigurationError, EvidenceError
from blindai.server.attesters import GramineAttester, PcsCollateralSource
from blindai.server.attesters._devfiles import ATTRIBUTE_MAX_BYTES
from blindai.server.attesters._quote import carried_report_data
from tests.unit.attestation.pcs_fakes import BLINDAI_V06_COLLATERAL_KEYS, FakeFetcher

NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)  # inside the Phala set's collateral window


def gramine_dir(tmp_path: Path, quote: bytes, attestation_type: str = "dcap\n") -> Path:
    """Files as Gramine exposes them; ``quote`` holds a real quote's bytes."""
    path = tmp_path / "attestation"
    path.mkdir()
    (path / "attestation_type").write_text(attestation_type)
    (path / "user_report_data").write_bytes(b"")
    (path / "quote").write_bytes(quote)
    return path


@pytest.fixture
def quote(sgx_set: Path) -> bytes:
    return (sgx_set / "quote.bin").read_bytes()


@pytest.fixture
def attester(tmp_path: Path, quote: bytes, fake_pcs: FakeFetcher) -> GramineAttester:
    source = PcsCollateralSource(fake_pcs, clock=lambda: NOW)
    return GramineAttester(gramine_dir(tmp_path, quote), collateral=source)


def test_quote_collected_after_writing_report_data(attester: GramineAttester, quote: bytes):
    report_data = carried_report_data(EvidenceKind.SGX, quote)  # "Hello, world!" and zeros
    assert attester.kind is EvidenceKind.SGX
    assert attester.evidence(report_data) == quote
    assert (attester.attestation_dir / "user_report_data").read_bytes() == report_data


def test_quote_without_our_report_data_is_refused(attester: GramineAttester, quote: bytes):
    other = b"\x01" + carried_report_data(EvidenceKind.SGX, quote)[1:]
    with pytest.raises(EvidenceError, match="report data"):
        attester.evidence(other)


@pytest.mark.parametrize("cut", [0, 100, 431])
def test_truncated_quote_is_an_evidence_error(tmp_path: Path, quote: bytes, cut: int):
    attester = GramineAttester(gramine_dir(tmp_path, quote[:cut]), collateral=None)
    with pytest.raises(EvidenceError):
        attester.evidence(carried_report_data(EvidenceKind.SGX, quote))


def test_missing_quote_file_is_an_evidence_error(tmp_path: Path, quote: bytes):
    path = gramine_dir(tmp_path, quote)
    (path / "quote").unlink()
    with pytest.raises(EvidenceError, match="Gramine did not produce a quote"):
        GramineAttester(path, collateral=None).evidence(bytes(64))


def test_quote_over_the_limit_is_refused_unread(tmp_path: Path, quote: bytes):
    path = gramine_dir(tmp_path, quote)
    with (path / "quote").open("r+b") as f:  # a real quote, then sparse zeros
        f.truncate(ATTRIBUTE_MAX_BYTES + 1)
    with pytest.raises(EvidenceError, match=f"larger than {ATTRIBUTE_MAX_BYTES} bytes"):
        GramineAttester(path, collateral=None).evidence(
            carried_report_data(EvidenceKind.SGX, quote)
        )


def test_a_quote_symlink_is_not_followed(tmp_path: Path, quote: bytes):
    path = gramine_dir(tmp_path, quote)
    (path / "quote").rename(tmp_path / "elsewhere")
    (path / "quote").symlink_to(tmp_path / "elsewhere")  # a genuine quote, but not Gramine's
    with pytest.raises(EvidenceError, match="Gramine did not produce a quote"):
        GramineAttester(path, collateral=None).evidence(
            carried_report_data(EvidenceKind.SGX, quote)
        )


def test_a_device_that_never_answers_is_given_up_at_the_timeout(tmp_path: Path, quote: bytes):
    path = gramine_dir(tmp_path, quote)
    (path / "user_report_data").unlink()
    os.mkfifo(path / "user_report_data")  # nobody reads it
    attester = GramineAttester(path, collateral=None, io_timeout=0.05)
    with pytest.raises(EvidenceError, match="no answer in time"):
        attester.evidence(bytes(64))
    (path / "attestation_type").unlink()
    os.mkfifo(path / "attestation_type")  # nobody writes it
    with pytest.raises(ConfigurationError, match="no answer in time"):
        GramineAttester(path, collateral=None, io_timeout=0.05)


def test_a_long_attestation_type_is_not_read_whole(tmp_path: Path, quote: bytes):
    with pytest.raises(ConfigurationError, match="larger than 64 bytes"):
        GramineAttester(gramine_dir(tmp_path, quote, "dcap" + " " * 10_000), collateral=None)


def test_missing_device_is_a_configuration_error(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="Gramine"):
        GramineAttester(tmp_path / "absent", collateral=None)


@pytest.mark.parametrize("kind", ["none\n", "epid\n", ""])
def test_attestation_type_other_than_dcap_is_refused(tmp_path: Path, quote: bytes, kind: str):
    with pytest.raises(ConfigurationError, match="dcap"):
        GramineAttester(gramine_dir(tmp_path, quote, kind), collateral=None)


def test_report_data_must_be_64_bytes(attester: GramineAttester):
    with pytest.raises(ValueError, match="64 bytes"):
        attester.evidence(b"\0" * 63)


def test_no_collateral_before_the_first_quote(attester: GramineAttester):
    with pytest.raises(CollateralUnavailable, match="no quote"):
        attester.blindai_collateral()


def test_blindai_collateral_map(attester: GramineAttester, quote: bytes, sgx_set: Path):
    attester.evidence(carried_report_data(EvidenceKind.SGX, quote))
    got = attester.blindai_collateral()
    assert got is not None and set(got) == BLINDAI_V06_COLLATERAL_KEYS
    assert got["version"] == 3
    derived = sgx_set / "derived"
    leaf, ca, root = x509.load_pem_x509_certificates((derived / "pck_cert_chain.pem").read_bytes())
    assert x509.load_pem_x509_certificate(got["pck_certificate"].encode()) == leaf
    assert x509.load_pem_x509_certificates(got["pck_signing_chain"].encode()) == [ca, root]
    for key in ("pck_crl", "root_ca_crl"):
        crl = x509.load_pem_x509_crl(got[key].encode())
        assert crl.public_bytes(Encoding.DER) == (derived / f"{key}.der").read_bytes()
    assert got["tcb_info"] == (derived / "tcb_info.json").read_text()
    assert got["qe_identity"] == (derived / "qe_identity.json").read_text()
    for key in ("tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain"):
        assert got[key] == (derived / f"{key}.pem").read_text()


def test_endorsements_are_dcap_qvl_collateral_that_verifies(
    attester: GramineAttester, quote: bytes, sgx_set: Path
):
    attester.evidence(carried_report_data(EvidenceKind.SGX, quote))
    collateral = attester.endorsements().collateral
    assert collateral is not None
    assert json.loads(collateral) == json.loads((sgx_set / "collateral.json").read_text())
    report = dcap_qvl.verify(
        quote, dcap_qvl.QuoteCollateralV3.from_json(collateral.decode()), int(NOW.timestamp())
    )
    assert report.status == "ConfigurationAndSWHardeningNeeded"
    assert list(report.advisory_ids) == ["INTEL-SA-00289", "INTEL-SA-00615"]


def test_without_a_collateral_source(tmp_path: Path, quote: bytes):
    attester = GramineAttester(gramine_dir(tmp_path, quote), collateral=None)
    attester.evidence(carried_report_data(EvidenceKind.SGX, quote))
    assert attester.blindai_collateral() is None
    assert attester.endorsements().collateral is None


def test_fetch_failure_is_collateral_unavailable(tmp_path: Path, quote: bytes):
    source = PcsCollateralSource(FakeFetcher({}), clock=lambda: NOW)
    attester = GramineAttester(gramine_dir(tmp_path, quote), collateral=source)
    attester.evidence(carried_report_data(EvidenceKind.SGX, quote))
    with pytest.raises(CollateralUnavailable, match="404"):
        attester.blindai_collateral()
