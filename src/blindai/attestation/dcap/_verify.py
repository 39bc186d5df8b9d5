"""SGX and TDX quotes through dcap-qvl: collateral, pinned root, TCB status.

:class:`QuoteVerifier` is the verify flow both kinds share (parse, this module, policy).

dcap-qvl checks the PCK chain up to the Intel root, both CRLs, the TCB Info and QE Identity
signatures and chains, the QE report and its binding to the attestation key, the quote
signature over header and body, and matches the platform TCB. This module feeds it and maps
its answers to :mod:`blindai.errors` (the mapping of its failures is in ``_qvl_errors.py``):

1. collateral present (else :class:`CollateralUnavailable`) and well formed;
2. the root certificate inside the quote is one of the pinned roots (:class:`ChainError`);
3. TCB Info, QE Identity and both CRLs are inside their validity window at ``now``
   (:class:`CollateralError`);
4. dcap-qvl with that root and ``now``; its TCB status is returned for the policy to judge.

Not checked here: anything about the enclave or TD identity (the kinds' policies do that).
dcap-qvl 0.7 refuses debug enclaves and TDs whatever the policy, and SGX quotes other than
version 3; those refusals come back as :class:`PolicyError` and :class:`EvidenceError`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import dcap_qvl
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation import _anchors
from blindai.attestation._anchors import fingerprint
from blindai.attestation._x509 import load_pem_certificates
from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.attestation.dcap._collateral import Collateral, parse_collateral
from blindai.attestation.dcap._quote import QuoteEnvelope
from blindai.attestation.dcap._qvl_errors import classify
from blindai.attestation.endorsements import Endorsements
from blindai.errors import (
    ChainError,
    CollateralError,
    CollateralUnavailable,
    ConfigurationError,
    EvidenceError,
    PolicyError,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+; requires-python is 3.10

__all__ = [
    "TCB_STATUSES",
    "DcapResult",
    "QuoteVerifier",
    "check_report_agrees",
    "verify_quote",
]

#: TCB statuses a policy may accept ("Revoked" is never acceptable)
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "TDRelaunchAdvised",
        "TDRelaunchAdvisedConfigurationNeeded",
    }
)


@dataclass(frozen=True)
class DcapResult:
    """What dcap-qvl vouches for once a quote verified."""

    tcb_status: str
    advisory_ids: tuple[str, ...]
    fmspc: bytes
    report: dict[str, Any]
    tcb_evaluation_data_number: int
    """The collateral's (its TCB Info's and QE Identity's, the lower): how recent a TCB
    recovery the verdict takes into account."""


def verify_quote(
    quote: bytes,
    pck_chain_pem: bytes,
    endorsements: Endorsements | None,
    *,
    now: datetime,
    trusted_roots: Collection[bytes],
) -> DcapResult:
    """Verify a quote (without trailing bytes) and its collateral; see the module docstring."""
    now_secs = _unix_seconds(now)
    collateral = _load_collateral(endorsements)
    root_der = _pinned_root(pck_chain_pem, trusted_roots)
    _check_window(collateral, now)
    try:
        report = dcap_qvl.verify_with_root_ca(quote, collateral.to_dcap_qvl(), root_der, now_secs)
    except (ValueError, RuntimeError) as exc:
        raise classify(str(exc)) from exc
    return DcapResult(
        tcb_status=report.status,
        advisory_ids=tuple(report.advisory_ids),
        fmspc=_fmspc(quote),
        report=json.loads(report.to_json())["report"],
        tcb_evaluation_data_number=collateral.evaluation_data_number(),  # dcap-qvl verified it
    )


def check_report_agrees(result: DcapResult, measurement: bytes, report_data: bytes) -> None:
    """The body dcap-qvl verified must be the one the quote parser read (fail closed otherwise).

    dcap-qvl names its report ``SgxEnclave`` (MRENCLAVE), ``TD10`` or ``TD15`` (MRTD, the
    TD 1.0 fields under ``base``); measurement and report data are compared as hex.
    """
    if len(result.report) != 1:
        raise EvidenceError("dcap-qvl returned no single report")
    ((variant, report),) = result.report.items()
    fields = report.get("base", report) if isinstance(report, dict) else {}
    key = "mr_enclave" if variant == "SgxEnclave" else "mr_td"
    if fields.get(key) != measurement.hex() or fields.get("report_data") != report_data.hex():
        raise EvidenceError(f"dcap-qvl's {variant} report and the quote parser disagree")


BodyT = TypeVar("BodyT")
ClaimsT = TypeVar("ClaimsT", bound=VerifiedClaims)


class QuoteVerifier(ABC, Generic[BodyT, ClaimsT]):
    """The verification flow SGX and TDX quotes share; a kind parses and builds its claims.

    ``trusted_roots`` are SHA-256 fingerprints of the root certificates accepted at the end of
    the quote's PCK chain; :meth:`with_embedded_roots` pins the Intel SGX Root CA (which also
    roots TDX). Collateral (``Endorsements.collateral``, dcap-qvl's QuoteCollateralV3 JSON) is
    required. A subclass sets ``kind`` and ``policy_type`` and implements :meth:`_parse`
    (strict, untrusted) and :meth:`_claims`.

    Not checked here: the binding of ``report_data`` to a TLS key or nonce
    (:func:`blindai.attestation.check_binding`), and anything the policy leaves unset.
    dcap-qvl 0.7 refuses debug enclaves and TDs whatever the policy (a PolicyError on
    ``debug``).
    """

    kind: EvidenceKind
    policy_type: ClassVar[type[Any]]

    def __init__(self, *, trusted_roots: Iterable[bytes]) -> None:
        self._roots = frozenset(trusted_roots)
        if not self._roots:
            raise ConfigurationError(f"{type(self).__name__} needs at least one pinned root")

    @classmethod
    def with_embedded_roots(cls) -> Self:
        """A verifier trusting only the pinned Intel SGX Root CA (which also roots TDX)."""
        return cls(trusted_roots=(_anchors.INTEL_SGX_ROOT_CA,))

    def verify(
        self,
        evidence: bytes,
        policy: Any,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> ClaimsT:
        """Verify a quote and its collateral at ``now`` against ``policy`` (a ``policy_type``).

        Raises EvidenceError (malformed, unsupported, or the other TEE's quote),
        CollateralUnavailable, ChainError / SignatureError / CollateralError (not authentic),
        PolicyError.
        """
        if not isinstance(policy, self.policy_type):
            raise ConfigurationError(
                f"{type(self).__name__} needs a policy of type {self.policy_type.__name__}, "
                f"not {type(policy).__name__}"
            )
        # (1) strict parse: untrusted structure
        envelope, body = self._parse(evidence)
        # (2) authenticity: PCK chain to a pinned root, collateral, signatures, TCB status
        result = verify_quote(
            envelope.quote, envelope.pck_chain_pem, endorsements, now=now, trusted_roots=self._roots
        )
        common = {
            "kind": self.kind,
            "verified_at": now,
            "tcb_status": result.tcb_status,
            "advisory_ids": result.advisory_ids,
            "quote_version": envelope.header.version,
            "tcb_evaluation_data_number": result.tcb_evaluation_data_number,
        }
        claims = self._claims(body, result, common)
        check_report_agrees(result, claims.measurement, claims.report_data)
        # (3) policy, every violation at once
        violations = policy.check(claims)
        if violations:
            raise PolicyError(violations)
        return claims

    @abstractmethod
    def _parse(self, evidence: bytes) -> tuple[QuoteEnvelope, BodyT]:
        """Strictly parse ``evidence`` into its envelope and report body (EvidenceError)."""

    @abstractmethod
    def _claims(self, body: BodyT, result: DcapResult, common: dict[str, Any]) -> ClaimsT:
        """The claims of a quote dcap-qvl verified; ``common`` holds the fields every DCAP
        claim has (kind, verified_at, tcb_status, advisory_ids, quote_version,
        tcb_evaluation_data_number)."""


def _unix_seconds(now: datetime) -> int:
    if now.tzinfo is None:
        raise ConfigurationError("the verification time must be timezone-aware")
    return int(now.timestamp())


def _load_collateral(endorsements: Endorsements | None) -> Collateral:
    """(1) The collateral travels in the endorsements; none means fail closed."""
    if endorsements is None or endorsements.collateral is None:
        raise CollateralUnavailable("no DCAP collateral given for this quote")
    return parse_collateral(endorsements.collateral)


def _pinned_root(chain_pem: bytes, trusted_roots: Collection[bytes]) -> bytes:
    """(2) The last certificate of the quote's PCK chain must be a pinned root."""
    try:
        certs = load_pem_certificates(chain_pem)
    except ValueError as exc:
        raise ChainError("the PCK certificate chain in the quote cannot be parsed") from exc
    if len(certs) < 2:
        raise ChainError("the PCK certificate chain in the quote is too short")
    root_der = certs[-1].public_bytes(Encoding.DER)
    if fingerprint(root_der) not in trusted_roots:
        raise ChainError(
            f"the quote's root certificate (SHA-256 {fingerprint(root_der).hex()}) is not pinned"
        )
    return root_der


def _check_window(collateral: Collateral, now: datetime) -> None:
    """(3) Every piece of collateral must be valid at ``now``."""
    for what, (start, end) in collateral.windows().items():
        if now < start:
            raise CollateralError(f"{what} is not valid before {start.isoformat()}")
        if now > end:
            raise CollateralError(f"{what} expired at {end.isoformat()}")


def _fmspc(quote: bytes) -> bytes:
    try:
        return bytes.fromhex(dcap_qvl.parse_quote(quote).fmspc())
    except ValueError as exc:  # pragma: no cover - dcap-qvl read it moments ago
        raise EvidenceError("no FMSPC in the PCK certificate") from exc
