"""SEV-SNP VCEK certificates from AMD's Key Distribution Service (KDS), for hosts that give none.

An SEV-SNP host without a certificate table (an empty configfs-tsm ``auxblob``) leaves the
VCEK to the verifier. AMD's KDS serves it, per product line ``P`` (``Milan``, ``Genoa``),
chip and TCB (AMD 57230, "VCEK Certificate and KDS Interface Specification")::

    {base}/vcek/v1/P/{CHIP_ID, 128 lowercase hex}?blSPL=BL&teeSPL=TEE&snpSPL=SNP&ucodeSPL=UC
                                               the VCEK, DER
    {base}/vcek/v1/P/cert_chain                the ASK then the ARK, PEM

The SPLs are REPORTED_TCB's, in decimal, zero-padded to two digits as virtee/sev writes them
(KDS also takes them unpadded, as go-sev-guest writes them). The product comes from the
report's CPUID family/model (report version 3 and later); a version 2 report does not say,
so each of ``products`` is tried in turn. Not served by KDS: a VLEK (AMD gives it to the
cloud provider only) and the VCEK of a report whose CHIP_ID the host masked to zero; both are
:class:`CollateralUnavailable`. Fetching goes through a :class:`PcsFetcher` (the network
lives in :mod:`blindai.attestation._collateral`). Nothing fetched is trusted: the verifier
checks the chain to a pinned ARK, the report signature, the TCB and the hwID as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from blindai.attestation._collateral import PcsFetcher, UrllibFetcher
from blindai.attestation.snp._certs import load_certificates
from blindai.attestation.snp._layout import SnpReport, TcbVersion, parse_report
from blindai.errors import ChainError, CollateralUnavailable, ConfigurationError, EvidenceError

__all__ = [
    "AMD_KDS_URL",
    "KDS_PRODUCTS",
    "KdsCertificateSource",
    "SnpCertificateSource",
    "chain_url",
    "product_of",
    "vcek_url",
]

AMD_KDS_URL = "https://kdsintf.amd.com"
KDS_PRODUCTS = ("Milan", "Genoa")
# CPUID family 0x19 model ranges (high nibble of the model): Milan 0x0X, Genoa 0x1X and 0xAX
_PRODUCT_BY_MODEL = {0x0: "Milan", 0x1: "Genoa", 0xA: "Genoa"}


class SnpCertificateSource(Protocol):
    """Gives the certificates that verify a given SEV-SNP report (e.g. AMD's KDS)."""

    def for_report(self, report: bytes) -> tuple[bytes, ...]:
        """Certificates (DER or PEM) for ``report``; :class:`CollateralUnavailable` if none."""
        ...


def product_of(report: SnpReport) -> str | None:
    """The KDS product name from the report's CPUID (v3+); None when the report does not say."""
    if report.cpuid is None:
        return None
    family, model, _ = report.cpuid
    product = _PRODUCT_BY_MODEL.get(model >> 4)
    if family != 0x19 or product is None:
        raise CollateralUnavailable(
            f"no KDS product known for CPU family 0x{family:02x} model 0x{model:02x}"
        )
    return product


def vcek_url(base_url: str, product: str, chip_id: bytes, tcb: TcbVersion) -> str:
    """The KDS URL of the VCEK for ``chip_id`` at ``tcb`` (see the module docstring)."""
    return (
        f"{base_url.rstrip('/')}/vcek/v1/{product}/{chip_id.hex()}"
        f"?blSPL={tcb.bootloader:02d}&teeSPL={tcb.tee:02d}"
        f"&snpSPL={tcb.snp:02d}&ucodeSPL={tcb.microcode:02d}"
    )


def chain_url(base_url: str, product: str) -> str:
    """The KDS URL of the ASK + ARK chain (PEM) for ``product``."""
    return f"{base_url.rstrip('/')}/vcek/v1/{product}/cert_chain"


def _fetchable(evidence: bytes) -> SnpReport:
    try:
        report = parse_report(evidence)
    except EvidenceError as exc:
        raise CollateralUnavailable(f"not an SEV-SNP report: {exc}") from exc
    if report.signing_key == "vlek":
        raise CollateralUnavailable(
            "the report is signed by a VLEK: AMD's KDS gives VLEKs to the cloud provider only, "
            "so the host must supply the VLEK and its chain"
        )
    if not any(report.chip_id):
        raise CollateralUnavailable(
            "the report's CHIP_ID is masked (all zero): KDS cannot find the VCEK without it; "
            "the host must supply the VCEK"
        )
    return report


def _certificate_count(body: bytes, what: str) -> int:
    try:
        return len(load_certificates([body]))
    except ChainError as exc:
        raise CollateralUnavailable(f"the KDS answer for {what} is not certificates") from exc


class KdsCertificateSource:
    """VCEK, ASK and ARK for an SEV-SNP report from AMD's KDS (or a mirror at ``base_url``).

    Answers are cached per (product, CHIP_ID, REPORTED_TCB) for the VCEK and per product for
    the chain, for the life of the source (VCEKs are valid for years; a new TCB is a new key).
    ``products`` are tried in order for version 2 reports, which do not name their CPU.
    Use :meth:`online` for KDS over HTTPS; pass a fetcher to control the network.
    """

    def __init__(
        self,
        fetcher: PcsFetcher,
        *,
        base_url: str = AMD_KDS_URL,
        products: Sequence[str] = KDS_PRODUCTS,
    ) -> None:
        if not products:
            raise ConfigurationError("products: give at least one KDS product name")
        self.fetcher = fetcher
        self.base_url = base_url
        self.products = tuple(products)
        self._lock = threading.Lock()
        self._vceks: dict[tuple[str, bytes, TcbVersion], bytes] = {}
        self._chains: dict[str, bytes] = {}

    @classmethod
    def online(cls, base_url: str = AMD_KDS_URL, *, timeout: float = 10.0) -> KdsCertificateSource:
        """A source fetching from ``base_url`` (AMD's KDS by default) over urllib."""
        return cls(UrllibFetcher(timeout=timeout), base_url=base_url)

    def for_report(self, report: bytes) -> tuple[bytes, ...]:
        """(VCEK DER, ASK + ARK PEM) for the chip and TCB that produced ``report``."""
        parsed = _fetchable(report)
        named = product_of(parsed)
        candidates = (named,) if named is not None else self.products
        failures: list[str] = []
        with self._lock:
            for product in candidates:
                try:
                    vcek = self._vcek(product, parsed)
                except CollateralUnavailable as exc:
                    failures.append(str(exc))
                    continue
                return vcek, self._chain(product)
        raise CollateralUnavailable("no VCEK from KDS: " + "; ".join(failures))

    def _vcek(self, product: str, report: SnpReport) -> bytes:
        key = (product, report.chip_id, report.reported_tcb)
        cached = self._vceks.get(key)
        if cached is None:
            url = vcek_url(self.base_url, product, report.chip_id, report.reported_tcb)
            cached = self._get(url)
            if _certificate_count(cached, "the VCEK") != 1:
                raise CollateralUnavailable(f"the KDS answer to {url} is not one certificate")
            self._vceks[key] = cached
        return cached

    def _chain(self, product: str) -> bytes:
        cached = self._chains.get(product)
        if cached is None:
            url = chain_url(self.base_url, product)
            cached = self._get(url)
            if _certificate_count(cached, "the ASK/ARK chain") != 2:
                raise CollateralUnavailable(f"the KDS answer to {url} is not two certificates")
            self._chains[product] = cached
        return cached

    def _get(self, url: str) -> bytes:
        try:
            return self.fetcher.get(url).body
        except CollateralUnavailable:
            raise
        except OSError as exc:
            raise CollateralUnavailable(f"GET {url} failed: {exc}") from exc
