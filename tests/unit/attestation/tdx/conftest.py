"""TDX evidence sets from tests/data/evidence/tdx, with the times their README gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tdx_sets import DcapSet, pcs_set, phala_set


@pytest.fixture(scope="session")
def phala_v4(evidence_dir: Path) -> DcapSet:
    return phala_set(evidence_dir, "tdx", "phala-dcap-qvl-tdx-v4", "2025-07-01T00:00:00Z")


@pytest.fixture(scope="session")
def phala_v5(evidence_dir: Path) -> DcapSet:
    return phala_set(evidence_dir, "tdx", "phala-dcap-qvl-tdx-v5-outdated", "2026-03-01T00:00:00Z")


@pytest.fixture(scope="session")
def dcap_rs_v4(evidence_dir: Path) -> DcapSet:
    return pcs_set(evidence_dir, "automata-dcap-rs-tdx-v4", "2025-03-01T00:00:00Z")


@pytest.fixture(scope="session")
def go_tdx_guest(evidence_dir: Path) -> DcapSet:
    return pcs_set(evidence_dir, "go-tdx-guest-spr-e4", "2023-07-01T00:00:00Z")


@pytest.fixture(scope="session")
def phala_sgx_quote(evidence_dir: Path) -> DcapSet:
    return phala_set(evidence_dir, "sgx-dcap", "phala-dcap-qvl-sgx", "2025-07-01T00:00:00Z")
