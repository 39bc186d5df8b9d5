"""Fetching SGX collateral from Intel's PCS (API v4) or a PCCS, through an injected fetcher.

Requests, for a quote whose PCK chain gives FMSPC ``F`` and PCK CA ``C``::

    {base}/sgx/certification/v4/tcb?fmspc=F         header TCB-Info-Issuer-Chain
    {base}/sgx/certification/v4/qe/identity         header SGX-Enclave-Identity-Issuer-Chain
    {base}/sgx/certification/v4/pckcrl?ca=C&encoding=der   header SGX-PCK-CRL-Issuer-Chain
    root CA CRL: Intel PCS: the CRL distribution point of the root certificate
                 (https://certificates.trustedservices.intel.com/IntelSGXRootCA.der);
                 a PCCS: {base}/sgx/certification/v4/rootcacrl

Issuer chains are URL-encoded PEM in those headers (API v3 named the TCB one
``SGX-TCB-Info-Issuer-Chain``; both are accepted). CRLs may come as DER, PEM or hex text.
The answers become dcap-qvl collateral through :mod:`blindai.attestation._dcap_collateral`;
an answer it cannot use is :class:`CollateralUnavailable`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

from cryptography import x509

from blindai.attestation._dcap_collateral import Collateral, collateral_from_pcs, parse_collateral
from blindai.errors import CollateralError, CollateralUnavailable
from blindai.server.attesters._quote import PckChain

__all__ = ["INTEL_PCS_URL", "FetchResponse", "PcsFetcher", "UrllibFetcher", "fetch_sgx_collateral"]

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
_TCB_CHAIN = ("tcb-info-issuer-chain", "sgx-tcb-info-issuer-chain")
_QE_CHAIN = ("sgx-enclave-identity-issuer-chain",)
_CRL_CHAIN = ("sgx-pck-crl-issuer-chain",)


@dataclass(frozen=True)
class FetchResponse:
    """A successful (2xx) HTTP answer: body and headers (names matched case-insensitively)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, *names: str) -> str | None:
        """The first of ``names`` present, case-insensitively."""
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return next((lowered[n] for n in names if n in lowered), None)


class PcsFetcher(Protocol):
    """GETs a URL; raises :class:`CollateralUnavailable` (or ``OSError``) unless it answers 2xx."""

    def get(self, url: str) -> FetchResponse:
        """The answer to ``GET url``."""
        ...


class UrllibFetcher:
    """A :class:`PcsFetcher` over ``urllib`` (HTTPS verified with the system's CAs)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def get(self, url: str) -> FetchResponse:
        """GET ``url``; a non-2xx status or a network failure raises CollateralUnavailable."""
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:
                return FetchResponse(answer.read(), dict(answer.headers.items()))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise CollateralUnavailable(f"GET {url} failed: {exc}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CollateralUnavailable(f"GET {url} failed: {exc}") from exc


def fetch_sgx_collateral(fetcher: PcsFetcher, base_url: str, chain: PckChain) -> Collateral:
    """Fetch the collateral that verifies quotes carrying ``chain`` (see the module docstring)."""
    base = base_url.rstrip("/")
    api = f"{base}/sgx/certification/v4"
    tcb = _get(fetcher, f"{api}/tcb?fmspc={chain.fmspc}")
    qe = _get(fetcher, f"{api}/qe/identity")
    crl = _get(fetcher, f"{api}/pckcrl?ca={chain.ca_type}&encoding=der")
    if base == INTEL_PCS_URL:
        root_crl = _get(fetcher, _distribution_point(chain.root))
    else:
        root_crl = _get(fetcher, f"{api}/rootcacrl")
    try:
        return parse_collateral(
            collateral_from_pcs(
                tcb_info=tcb.body,
                qe_identity=qe.body,
                pck_crl=crl.body,
                root_ca_crl=root_crl.body,
                tcb_signing_chain=_chain(tcb, _TCB_CHAIN),
                qe_identity_issuer_chain=_chain(qe, _QE_CHAIN),
                pck_crl_issuer_chain=_chain(crl, _CRL_CHAIN),
            )
        )
    except CollateralError as exc:
        raise CollateralUnavailable(f"unusable PCS answer: {exc}") from exc


def _get(fetcher: PcsFetcher, url: str) -> FetchResponse:
    try:
        return fetcher.get(url)
    except CollateralUnavailable:
        raise
    except OSError as exc:
        raise CollateralUnavailable(f"GET {url} failed: {exc}") from exc


def _chain(answer: FetchResponse, names: tuple[str, ...]) -> bytes:
    value = answer.header(*names)
    if not value:
        raise CollateralUnavailable(f"the PCS answer has no {names[0]} header")
    return unquote(value).encode()


def _distribution_point(root: x509.Certificate) -> str:
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound as exc:
        raise CollateralUnavailable("the Intel root has no CRL distribution point") from exc
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    raise CollateralUnavailable("the Intel root has no CRL distribution point URL")
