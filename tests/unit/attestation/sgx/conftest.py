"""SGX evidence sets from tests/data/evidence/sgx-dcap, with the times their README gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from _sgx_sets import DcapSet, pcs_collateral, utc


@pytest.fixture(scope="session")
def phala_sgx(evidence_dir: Path) -> DcapSet:
    folder = evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx"
    return DcapSet(
        (folder / "quote.bin").read_bytes(),
        (folder / "collateral.json").read_bytes(),
        utc("2025-07-01T00:00:00Z"),
    )


def _automata(evidence_dir: Path, name: str) -> DcapSet:
    folder = evidence_dir / "sgx-dcap" / "automata-fmspc-00606a000000"
    quote = (folder / name).read_bytes()
    return DcapSet(quote, pcs_collateral(folder, quote), utc("2025-09-01T00:00:00Z"))


@pytest.fixture(scope="session")
def automata_sgx(evidence_dir: Path) -> DcapSet:
    return _automata(evidence_dir, "quote.bin")


@pytest.fixture(scope="session")
def occlum_sgx(evidence_dir: Path) -> DcapSet:
    return _automata(evidence_dir, "quote_occlum.bin")


@pytest.fixture(scope="session")
def phala_tdx_quote(evidence_dir: Path) -> DcapSet:
    folder = evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4"
    return DcapSet(
        (folder / "quote.bin").read_bytes(),
        (folder / "collateral.json").read_bytes(),
        utc("2025-07-01T00:00:00Z"),
    )
