"""The few quote and report fields attesters read, on real evidence and derived negatives."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindai.attestation.claims import EvidenceKind
from blindai.errors import EvidenceError
from blindai.server.attesters._quote import carried_report_data


def test_report_data_of_each_kind(evidence_dir: Path):
    sgx = (evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "quote.bin").read_bytes()
    assert carried_report_data(EvidenceKind.SGX, sgx) == b"Hello, world!".ljust(64, b"\0")
    tdx = (evidence_dir / "tdx" / "go-tdx-guest-spr-e4" / "quote.bin").read_bytes()
    assert carried_report_data(EvidenceKind.TDX, tdx).hex().startswith("6c62dec1b8191749")
    tdx5 = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v5-outdated" / "quote.bin").read_bytes()
    assert carried_report_data(EvidenceKind.TDX, tdx5).hex().startswith("d2142b643598eb5f")
    snp = (evidence_dir / "sev-snp" / "trustee-milan-vlek" / "report.bin").read_bytes()
    assert carried_report_data(EvidenceKind.SEV_SNP, snp).hex().startswith("819770b7e6ea6df8")


def test_kinds_are_not_confused(evidence_dir: Path):
    sgx = (evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "quote.bin").read_bytes()
    tdx = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with pytest.raises(EvidenceError, match="not a TDX quote"):
        carried_report_data(EvidenceKind.TDX, sgx)
    with pytest.raises(EvidenceError, match="not an SGX quote"):
        carried_report_data(EvidenceKind.SGX, tdx)
    tdx5 = bytearray(
        (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v5-outdated" / "quote.bin").read_bytes()
    )
    tdx5[48] = 1  # body type 1 (SGX) in a v5 TDX quote
    with pytest.raises(EvidenceError, match="body type 1"):
        carried_report_data(EvidenceKind.TDX, bytes(tdx5))


def test_no_report_data_in_other_kinds():
    with pytest.raises(ValueError, match="nitro"):
        carried_report_data(EvidenceKind.NITRO, b"")
