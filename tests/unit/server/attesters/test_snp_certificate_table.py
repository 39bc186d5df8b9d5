"""The SEV-SNP certificate table in configfs-tsm's auxblob, built from the real AMD certificates."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindai.errors import EvidenceError
from blindai.server.attesters.configfs_tsm import auxblob_certificates

from .attester_fakes import certificate_table

VCEK, VLEK, ASK, ARK = (
    "63da758d-e664-4564-adc5-f4b93be8accd",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae",
)
CRL = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"


@pytest.fixture
def vlek(evidence_dir: Path) -> bytes:
    return (evidence_dir / "sev-snp" / "trustee-milan-vlek" / "vlek.der").read_bytes()


def test_known_certificates_in_verifier_order_unknown_skipped(vlek: bytes):
    table = certificate_table([(ARK, b"ark"), (CRL, b"crl"), (VLEK, vlek), (ASK, b"ask")])
    assert auxblob_certificates(table) == (vlek, b"ask", b"ark")


def test_guid_byte_order_is_rfc4122(vlek: bytes):
    table = certificate_table([(VCEK, vlek)])
    assert table[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    assert auxblob_certificates(table) == (vlek,)


def test_empty_auxblob_has_no_certificates():
    assert auxblob_certificates(b"") == ()
    assert auxblob_certificates(bytes(24)) == ()


@pytest.mark.parametrize(
    "table",
    [
        certificate_table([(VCEK, b"vcek")])[:24],  # entry, no terminator
        certificate_table([(VCEK, b"vcek")])[:-1],  # blob cut short
        bytes.fromhex("63da758de6644564adc5f4b93be8accd") + bytes(8) + bytes(24),  # zero length
    ],
)
def test_malformed_tables_are_evidence_errors(table: bytes):
    with pytest.raises(EvidenceError):
        auxblob_certificates(table)


def test_table_without_terminator_is_an_evidence_error():
    entry = bytes.fromhex("63da758de6644564adc5f4b93be8accd") + (0).to_bytes(4, "little")
    with pytest.raises(EvidenceError, match="terminating"):
        auxblob_certificates(entry + (24).to_bytes(4, "little"))
