"""Fixtures for the collateral tests: real SGX and TDX sets, a fake PCS serving their files."""

from __future__ import annotations

from pathlib import Path

import pytest

from .pcs_fakes import FakeFetcher, pcs_answers, tdx_answers


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
