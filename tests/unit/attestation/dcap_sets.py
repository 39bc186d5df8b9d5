"""The real SGX and TDX evidence sets: a quote, its collateral and the time that verifies it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from blindai.attestation import Endorsements
from blindai.attestation.dcap import collateral_from_pcs, pck_crl_issuer_chain_from_quote


@dataclass(frozen=True)
class DcapSet:
    """One quote with its collateral and the verification time that works for it."""

    quote: bytes
    collateral: bytes
    now: datetime

    @property
    def endorsements(self) -> Endorsements:
        return Endorsements(collateral=self.collateral)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def phala_set(folder: Path, when: str) -> DcapSet:
    """A set with dcap-qvl's collateral JSON (the Phala sets)."""
    return DcapSet(
        (folder / "quote.bin").read_bytes(), (folder / "collateral.json").read_bytes(), utc(when)
    )


def pcs_set(folder: Path, when: str, quote_file: str = "quote.bin") -> DcapSet:
    """A set in Intel PCS response files (automata / dcap-rs / go-tdx-guest layout)."""
    quote = (folder / quote_file).read_bytes()
    collateral = collateral_from_pcs(
        tcb_info=(folder / "tcb_info.json").read_bytes(),
        qe_identity=(folder / "qe_identity.json").read_bytes(),
        pck_crl=(folder / "pck_platform_crl.der").read_bytes(),
        root_ca_crl=(folder / "root_ca_crl.der").read_bytes(),
        tcb_signing_chain=(folder / "tcb_signing_chain.pem").read_bytes(),
        pck_crl_issuer_chain=pck_crl_issuer_chain_from_quote(quote),
    )
    return DcapSet(quote, collateral, utc(when))
