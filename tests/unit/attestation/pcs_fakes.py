"""A fake Intel PCS for the collateral tests: URLs mapped to the real files of an evidence set."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from blindai.attestation._collateral import INTEL_PCS_URL, FetchResponse
from blindai.errors import CollateralUnavailable

ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
API = f"{INTEL_PCS_URL}/sgx/certification/v4"
TDX_API = f"{INTEL_PCS_URL}/tdx/certification/v4"


class FakeFetcher:
    """Maps URLs to answers; records every URL asked; unknown URLs are unavailable."""

    def __init__(self, answers: dict[str, FetchResponse]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def get(self, url: str) -> FetchResponse:
        self.asked.append(url)
        if url not in self.answers:
            raise CollateralUnavailable(f"fake PCS: 404 for {url}")
        return self.answers[url]


class Clock:
    """A settable clock for the cache."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def pcs_answers(
    set_dir: Path,
    *,
    fmspc: str,
    ca: str,
    base: str = API,
    tee_base: str | None = None,
    root_crl_url: str = ROOT_CRL_URL,
) -> dict[str, FetchResponse]:
    """What Intel's PCS v4 answers for the collateral stored (derived) in ``set_dir``.

    ``base`` serves the PCK CRL (always the SGX API); ``tee_base`` (default ``base``) the TCB
    Info and QE Identity: the TDX API for a TDX set.
    """
    derived = set_dir / "derived"
    tee_base = tee_base or base

    def chain(name: str) -> str:
        return quote((derived / name).read_text())

    return {
        f"{tee_base}/tcb?fmspc={fmspc}": FetchResponse(
            (derived / "tcb_info.json").read_bytes(),
            {"TCB-Info-Issuer-Chain": chain("tcb_info_issuer_chain.pem")},
        ),
        f"{tee_base}/qe/identity": FetchResponse(
            (derived / "qe_identity.json").read_bytes(),
            {"SGX-Enclave-Identity-Issuer-Chain": chain("qe_identity_issuer_chain.pem")},
        ),
        f"{base}/pckcrl?ca={ca}&encoding=der": FetchResponse(
            (derived / "pck_crl.der").read_bytes(),
            {"SGX-PCK-CRL-Issuer-Chain": chain("pck_crl_issuer_chain.pem")},
        ),
        root_crl_url: FetchResponse((derived / "root_ca_crl.der").read_bytes()),
    }


def tdx_answers(set_dir: Path) -> dict[str, FetchResponse]:
    """Intel's PCS answers for the Phala TDX v4 set (FMSPC B0C06F000000, Platform CA)."""
    return pcs_answers(set_dir, fmspc="B0C06F000000", ca="platform", tee_base=TDX_API)


#: the keys of BlindAI 0.6's ``/collateral`` map, as the original clients require them (the wire
#: contract, written out here independently of the code that builds the map)
BLINDAI_V06_COLLATERAL_KEYS = frozenset(
    {
        "version",
        "pck_certificate",
        "pck_crl_issuer_chain",
        "pck_signing_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info",
        "tcb_info_issuer_chain",
        "qe_identity",
        "qe_identity_issuer_chain",
    }
)
