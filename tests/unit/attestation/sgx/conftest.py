"""SGX evidence sets from ../shared/evidence/sgx-dcap, with the times their README gives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from blindai.attestation import Endorsements
from blindai.attestation._dcap import collateral_from_pcs, pck_crl_issuer_chain_from_quote


@dataclass(frozen=True)
class DcapSet:
    """One quote with its collateral and the verification time that works for it."""

    quote: bytes
    collateral: bytes
    now: datetime

    @property
    def endorsements(self) -> Endorsements:
        return Endorsements(collateral=self.collateral)


def pcs_collateral(folder: Path, quote: bytes) -> bytes:
    """Collateral from Intel PCS response files (automata / dcap-rs / go-tdx-guest layout)."""
    return collateral_from_pcs(
        tcb_info=(folder / "tcb_info.json").read_bytes(),
        qe_identity=(folder / "qe_identity.json").read_bytes(),
        pck_crl=(folder / "pck_platform_crl.der").read_bytes(),
        root_ca_crl=(folder / "root_ca_crl.der").read_bytes(),
        tcb_signing_chain=(folder / "tcb_signing_chain.pem").read_bytes(),
        pck_crl_issuer_chain=pck_crl_issuer_chain_from_quote(quote),
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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
