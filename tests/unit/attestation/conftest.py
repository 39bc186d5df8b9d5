"""Fixtures for the attestation tests: the real SGX and TDX sets, each with the time its README
gives. (The sets as folders and the fake PCS serving them are in tests/conftest.py: the client
and attester tests use them too.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.attestation.dcap_sets import DcapSet, pcs_set, phala_set

AUTOMATA = ("sgx-dcap", "automata-fmspc-00606a000000")


@pytest.fixture(scope="session")
def phala_sgx(evidence_dir: Path) -> DcapSet:
    """SGX, TCB ConfigurationAndSWHardeningNeeded."""
    return phala_set(evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx", "2025-07-01T00:00:00Z")


@pytest.fixture(scope="session")
def automata_sgx(evidence_dir: Path) -> DcapSet:
    """SGX, TCB SWHardeningNeeded."""
    return pcs_set(evidence_dir.joinpath(*AUTOMATA), "2025-09-01T00:00:00Z")


@pytest.fixture(scope="session")
def occlum_sgx(evidence_dir: Path) -> DcapSet:
    """SGX, a debug enclave (TCB OutOfDate)."""
    folder = evidence_dir.joinpath(*AUTOMATA)
    return pcs_set(folder, "2025-09-01T00:00:00Z", "quote_occlum.bin")


@pytest.fixture(scope="session")
def phala_v4(evidence_dir: Path) -> DcapSet:
    """TDX quote v4, TCB UpToDate."""
    return phala_set(evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4", "2025-07-01T00:00:00Z")


@pytest.fixture(scope="session")
def phala_v5(evidence_dir: Path) -> DcapSet:
    """TDX quote v5 (TD report 1.5), no TCB level matches."""
    folder = evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v5-outdated"
    return phala_set(folder, "2026-03-01T00:00:00Z")


@pytest.fixture(scope="session")
def dcap_rs_v4(evidence_dir: Path) -> DcapSet:
    """TDX quote v4, TCB OutOfDate."""
    return pcs_set(evidence_dir / "tdx" / "automata-dcap-rs-tdx-v4", "2025-03-01T00:00:00Z")


@pytest.fixture(scope="session")
def go_tdx_guest(evidence_dir: Path) -> DcapSet:
    """TDX quote v4 with 39 trailing bytes; no TCB level matches."""
    return pcs_set(evidence_dir / "tdx" / "go-tdx-guest-spr-e4", "2023-07-01T00:00:00Z")
