"""Shared fixtures: where the real evidence lives (committed test vectors, tests/data/evidence),
and the SGX and TDX sets with a fake Intel PCS serving their collateral."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.attestation.pcs_fakes import FakeFetcher, pcs_answers, tdx_answers

EVIDENCE = Path(__file__).resolve().parent / "data" / "evidence"


@pytest.fixture(scope="session")
def evidence_dir() -> Path:
    """The real evidence sets, committed with their provenance (see its README.md)."""
    return EVIDENCE


@pytest.fixture
def sgx_set(evidence_dir: Path) -> Path:
    """The SGX set with a quote and its complete collateral (Phala dcap-qvl sample)."""
    return evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx"


@pytest.fixture
def fake_pcs(sgx_set: Path) -> FakeFetcher:
    """A fake Intel PCS serving ``sgx_set``'s collateral (FMSPC 00A067110000, Processor CA)."""
    return FakeFetcher(pcs_answers(sgx_set, fmspc="00A067110000", ca="processor"))


@pytest.fixture
def tdx_set(evidence_dir: Path) -> Path:
    """The TDX v4 set with its complete collateral (Phala dcap-qvl sample)."""
    return evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4"


@pytest.fixture
def fake_tdx_pcs(tdx_set: Path) -> FakeFetcher:
    """A fake Intel PCS serving ``tdx_set``'s collateral (FMSPC B0C06F000000, Platform CA)."""
    return FakeFetcher(tdx_answers(tdx_set))
