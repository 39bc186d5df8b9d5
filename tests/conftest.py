"""Shared fixtures: where the real evidence lives, read in place from ../shared/evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EVIDENCE = SHARED / "evidence"


@pytest.fixture(scope="session")
def evidence_dir() -> Path:
    """The real evidence sets; the test is skipped with a reason when ../shared is absent."""
    if not EVIDENCE.is_dir():
        pytest.skip(
            f"real evidence not available: {EVIDENCE} is absent (../shared beside the checkout)"
        )
    return EVIDENCE
