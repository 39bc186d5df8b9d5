"""Fixtures for the SEV-SNP tests; the helpers they use live in ``_snp_kit``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._snp_kit import SET_NAMES, FakeAmd, RealSet, load_set, make_fake_amd


@pytest.fixture(params=SET_NAMES)
def real_set(request: pytest.FixtureRequest, evidence_dir: Path) -> RealSet:
    """Each real evidence set in turn."""
    return load_set(evidence_dir, request.param)


@pytest.fixture
def sets(evidence_dir: Path) -> dict[str, RealSet]:
    """Every real evidence set, by name."""
    return {name: load_set(evidence_dir, name) for name in SET_NAMES}


@pytest.fixture(scope="session")
def fake_amd() -> FakeAmd:
    """A generated AMD-like PKI (Milan)."""
    return make_fake_amd()
