"""Fixtures for the attesters: a fake PCS serving the real collateral files of an SGX set."""

from __future__ import annotations

from pathlib import Path

import pytest

from .attester_fakes import FakeFetcher, pcs_answers


@pytest.fixture
def sgx_set(evidence_dir: Path) -> Path:
    """The SGX set with a quote and its complete collateral (Phala dcap-qvl sample)."""
    return evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx"


@pytest.fixture
def fake_pcs(sgx_set: Path) -> FakeFetcher:
    """A fake Intel PCS serving ``sgx_set``'s collateral (FMSPC 00A067110000, Processor CA)."""
    return FakeFetcher(pcs_answers(sgx_set, fmspc="00A067110000", ca="processor"))
