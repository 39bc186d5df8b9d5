"""SGX and TDX collateral from Intel's PCS (API v4) or a PCCS: the only code touching the network.

Nothing here fetches by itself: a :class:`PcsFetcher` is passed in (:class:`UrllibFetcher` is
the one over ``urllib``). For a quote whose PCK chain gives FMSPC ``F`` and PCK CA ``C``, with
``T`` = ``sgx`` for SGX quotes and ``tdx`` for TDX quotes::

    {base}/T/certification/v4/tcb?fmspc=F           header TCB-Info-Issuer-Chain
    {base}/T/certification/v4/qe/identity           header SGX-Enclave-Identity-Issuer-Chain
    {base}/sgx/certification/v4/pckcrl?ca=C&encoding=der   header SGX-PCK-CRL-Issuer-Chain
    root CA CRL: Intel PCS: the CRL distribution point of the root certificate
                 (https://certificates.trustedservices.intel.com/IntelSGXRootCA.der);
                 a PCCS: {base}/sgx/certification/v4/rootcacrl

(TDX shares the SGX PCK CRL and root CA CRL.) Issuer chains are URL-encoded PEM in those
headers (API v3 named the TCB one ``SGX-TCB-Info-Issuer-Chain``; both are accepted). CRLs may
come as DER, PEM or hex text. The answers become dcap-qvl collateral through
:mod:`blindai.attestation.dcap`; an answer it cannot use is
:class:`CollateralUnavailable`. Nothing fetched is trusted: the verifier checks it all.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import unquote

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation._anchors import INTEL_SGX_ROOT_CA, fingerprint
from blindai.attestation._x509 import load_pem_certificates
from blindai.attestation.dcap import (
    TEE_TDX,
    Collateral,
    collateral_from_pcs,
    parse_collateral,
    parse_envelope,
)
from blindai.errors import CollateralError, CollateralUnavailable, EvidenceError

__all__ = [
    "INTEL_PCS_URL",
    "RETRY_AFTER_S",
    "CollateralSource",
    "FetchResponse",
    "PckChain",
    "PcsCollateralSource",
    "PcsFetcher",
    "UrllibFetcher",
    "fetch_collateral",
    "pck_chain",
]

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
MAX_FETCH_BYTES = 16 << 20
"""Default cap on one answer from a PCS, PCCS or KDS (16 MiB)."""
RETRY_AFTER_S = 30.0
"""Seconds before collateral that could not be fetched, or was out of date, is fetched again."""
DEFAULT_FETCH_DEADLINE = 60.0
"""Default time for one whole answer from a PCS, PCCS or KDS, in seconds."""
_TCB_CHAIN = ("tcb-info-issuer-chain", "sgx-tcb-info-issuer-chain")
_QE_CHAIN = ("sgx-enclave-identity-issuer-chain",)
_CRL_CHAIN = ("sgx-pck-crl-issuer-chain",)
_SGX_EXTENSIONS = x509.ObjectIdentifier("1.2.840.113741.1.13.1")

_log = logging.getLogger("blindai.attestation")


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


class CollateralSource(Protocol):
    """Gives the collateral that verifies a given SGX or TDX quote (e.g. a PCS or PCCS)."""

    def for_quote(self, quote: bytes) -> Collateral:
        """Collateral for ``quote``; :class:`CollateralUnavailable` when it cannot be had."""
        ...


class UrllibFetcher:
    """A :class:`PcsFetcher` over ``urllib`` (HTTPS verified with the system's CAs).

    ``timeout`` bounds connecting and each read; ``deadline`` bounds the whole answer (a server
    sending a byte every few seconds passes any per-read timeout); ``max_bytes`` caps one
    answer's body (collateral, certificates and CRLs are kilobytes; a larger answer is refused
    unread).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_bytes: int = MAX_FETCH_BYTES,
        deadline: float = DEFAULT_FETCH_DEADLINE,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline = deadline

    def get(self, url: str) -> FetchResponse:
        """GET ``url``; a non-2xx status, a malformed, oversized or late answer or a network
        failure raises CollateralUnavailable."""
        watch = _Deadline(self.deadline)
        try:
            answer = self._get(url, watch)
        except CollateralUnavailable as exc:
            if watch.expired:  # what failed was a read cut by the deadline
                raise CollateralUnavailable(
                    f"GET {url} failed: no whole answer within {self.deadline:g} s"
                ) from exc
            raise
        finally:
            watch.cancel()
        if watch.expired:  # a body read to the close the deadline made: maybe cut short
            raise CollateralUnavailable(
                f"GET {url} failed: no whole answer within {self.deadline:g} s"
            )
        return answer

    def _get(self, url: str, watch: _Deadline) -> FetchResponse:
        opener = _opener(watch)
        try:
            with opener.open(url, timeout=self.timeout) as answer:
                body = answer.read(self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise CollateralUnavailable(
                        f"GET {url} failed: the answer is over {self.max_bytes} bytes"
                    )
                if answer.length:  # read(n) returns a body cut short by a close: refuse it
                    raise http.client.IncompleteRead(body, answer.length)
                return FetchResponse(body, dict(answer.headers.items()))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise CollateralUnavailable(f"GET {url} failed: {exc}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CollateralUnavailable(f"GET {url} failed: {exc}") from exc
        except http.client.HTTPException as exc:  # not an OSError: a malformed HTTP answer
            raise CollateralUnavailable(
                f"GET {url} failed: malformed HTTP answer ({type(exc).__name__})"
            ) from exc


def _opener(watch: _Deadline) -> urllib.request.OpenerDirector:
    """An opener for http and https only, redirects included: ``build_opener`` also reads
    ``file:``, ``ftp:`` and ``data:`` URLs (a local file, a socket no deadline watches)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        _WatchedHTTP(watch),
        _WatchedHTTPS(watch),
    ):
        opener.add_handler(handler)
    return opener


class _Deadline:
    """Shuts the sockets of one fetch down once ``seconds`` have passed (a blocked read then
    ends at once); ``expired`` tells the fetch why its read ended."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def connect(self, *args: Any, **kwargs: Any) -> socket.socket:
        """``socket.create_connection``, the socket watched (http.client's connector)."""
        sock = socket.create_connection(*args, **kwargs)
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def cancel(self) -> None:
        """The fetch is over: stop the timer."""
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Watched(urllib.request.AbstractHTTPHandler):
    """Opens connections whose sockets a :class:`_Deadline` watches (redirects included)."""

    def __init__(self, watch: _Deadline) -> None:
        super().__init__()
        self._watch = watch

    def do_open(self, http_class: Any, req: Any, **http_conn_args: Any) -> Any:
        def watched(*args: Any, **kwargs: Any) -> Any:
            conn = http_class(*args, **kwargs)
            conn._create_connection = self._watch.connect  # every http.client since 3.x
            return conn

        return super().do_open(watched, req, **http_conn_args)


class _WatchedHTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


class PckChain:
    """The PCK certificate chain (leaf, PCK CA, root) from a quote's certification data.

    ``tee`` is ``sgx`` or ``tdx``: which PCS API serves the quote's TCB Info and QE Identity.
    Nothing here is verified.
    """

    def __init__(self, certificates: list[x509.Certificate], *, tee: str = "sgx") -> None:
        if len(certificates) != 3:
            raise CollateralUnavailable(
                f"the quote's PCK chain has {len(certificates)} certificates, expected 3"
            )
        self.leaf, self.ca, self.root = certificates
        self.tee = tee

    @property
    def ca_type(self) -> str:
        """``processor`` or ``platform``: which PCK CA issued the leaf (selects the PCK CRL)."""
        names = self.leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        issuer = str(names[0].value) if names else ""
        for ca in ("processor", "platform"):
            if ca in issuer.lower():
                return ca
        raise CollateralUnavailable(f"unknown PCK CA {issuer!r}: expected Processor or Platform")

    @property
    def fmspc(self) -> str:
        """The platform's FMSPC (6 bytes, uppercase hex), from the leaf's SGX extension.

        The extension (a SEQUENCE of OID/value pairs, nested) is read by dcap-qvl's PCK
        certificate parser, the one its quote verification uses.
        """
        try:
            self.leaf.extensions.get_extension_for_oid(_SGX_EXTENSIONS)
        except x509.ExtensionNotFound as exc:
            raise CollateralUnavailable("the PCK certificate has no SGX extension") from exc
        try:
            fmspc = dcap_qvl.parse_pck_extension_from_pem(self.leaf.public_bytes(Encoding.PEM))
        except ValueError as exc:  # dcap-qvl also refuses an FMSPC of other than 6 bytes
            raise CollateralUnavailable("the PCK certificate's SGX extension has no FMSPC") from exc
        return bytes(fmspc.fmspc).hex().upper()


def pck_chain(quote: bytes) -> PckChain:
    """The PCK chain of an SGX or TDX quote with certification data type 5 (PEM chain)."""
    try:
        envelope = parse_envelope(quote)
    except EvidenceError as exc:
        raise CollateralUnavailable(f"no PCK chain in the quote: {exc}") from exc
    try:
        certificates = load_pem_certificates(envelope.pck_chain_pem)
    except ValueError as exc:
        raise CollateralUnavailable("the quote's PCK chain is not PEM certificates") from exc
    tee = "tdx" if envelope.header.tee_type == TEE_TDX else "sgx"
    return PckChain(certificates, tee=tee)


def fetch_collateral(fetcher: PcsFetcher, base_url: str, chain: PckChain) -> Collateral:
    """Fetch the collateral that verifies quotes carrying ``chain`` (see the module docstring)."""
    base = base_url.rstrip("/")
    sgx = f"{base}/sgx/certification/v4"
    api = f"{base}/{chain.tee}/certification/v4"
    tcb = _get(fetcher, f"{api}/tcb?fmspc={chain.fmspc}")
    qe = _get(fetcher, f"{api}/qe/identity")
    crl = _get(fetcher, f"{sgx}/pckcrl?ca={chain.ca_type}&encoding=der")
    if base == INTEL_PCS_URL:
        root_crl = _get(fetcher, _root_crl_url(chain.root))
    else:
        root_crl = _get(fetcher, f"{sgx}/rootcacrl")
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


def _root_crl_url(root: x509.Certificate) -> str:
    """Where Intel's PCS serves the root CA CRL: the CRL distribution point of the quote's root,
    once that root is Intel's pinned SGX root CA. The chain is unverified here: a forged root
    would otherwise name any URL (``file:///...``, an internal address) for us to fetch."""
    if fingerprint(root.public_bytes(Encoding.DER)) != INTEL_SGX_ROOT_CA:
        raise CollateralUnavailable(
            "the quote's PCK chain does not end at Intel's SGX root CA: no collateral is fetched "
            "for it (its verification would fail anyway)"
        )
    return _distribution_point(root)


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


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class PcsCollateralSource:
    """SGX and TDX collateral from a PCS or PCCS, cached until its earliest ``nextUpdate``.

    One entry per (TEE, FMSPC, PCK CA); collateral already out of date when fetched is
    returned (the verifier decides) and kept for ``retry_after`` seconds only. A fetch that
    fails is not tried again for ``retry_after`` seconds either: the calls in between raise the
    same :class:`CollateralUnavailable` at once. (A server fetches on behalf of anonymous
    clients of its unattested port: without this, each of their requests cost a worker a whole
    fetch, up to a minute against a PCS that drips, while the PCS was down.) Use
    :meth:`online` for Intel's PCS or a PCCS over HTTPS; pass a fetcher to control the network.
    """

    def __init__(
        self,
        fetcher: PcsFetcher,
        *,
        base_url: str = INTEL_PCS_URL,
        clock: Callable[[], datetime] = _utcnow,
        retry_after: float = RETRY_AFTER_S,
    ) -> None:
        self.fetcher = fetcher
        self.base_url = base_url
        self.retry_after = timedelta(seconds=retry_after)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str], tuple[Collateral, datetime]] = {}
        self._failed: dict[tuple[str, str, str], tuple[datetime, str]] = {}

    @classmethod
    def online(cls, base_url: str = INTEL_PCS_URL, *, timeout: float = 10.0) -> PcsCollateralSource:
        """A source fetching from ``base_url`` (Intel's PCS by default, or a PCCS) over urllib."""
        return cls(UrllibFetcher(timeout=timeout), base_url=base_url)

    def for_quote(self, quote: bytes) -> Collateral:
        """Collateral for the platform that produced ``quote`` (an SGX or TDX quote)."""
        chain = pck_chain(quote)
        key = (chain.tee, chain.fmspc, chain.ca_type)
        with self._lock:
            now = self._clock()
            cached = self._cache.get(key)
            if cached is not None and now < cached[1]:
                return cached[0]
            failed = self._failed.get(key)
            if failed is not None and now < failed[0]:
                raise CollateralUnavailable(
                    f"{failed[1]} (not fetched again until {failed[0]:%H:%M:%S} UTC)"
                )
            try:
                collateral = fetch_collateral(self.fetcher, self.base_url, chain)
                expires = _next_update(collateral)
            except CollateralUnavailable as exc:
                now = self._clock()
                self._failed = {k: v for k, v in self._failed.items() if now < v[0]}
                self._failed[key] = (now + self.retry_after, str(exc))
                raise
            self._failed.pop(key, None)
            if now < expires:
                self._cache[key] = (collateral, expires)
            else:
                self._cache[key] = (collateral, self._clock() + self.retry_after)
                _log.warning(
                    "%s collateral from %s is out of date (nextUpdate %s)",
                    chain.tee.upper(),
                    self.base_url,
                    expires.isoformat(),
                )
            return collateral


def _next_update(collateral: Collateral) -> datetime:
    try:
        return collateral.next_update()
    except CollateralError as exc:
        raise CollateralUnavailable(f"unusable PCS collateral: {exc}") from exc
