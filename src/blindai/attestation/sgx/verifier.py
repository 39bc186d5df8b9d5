"""SGX DCAP quote verification: strict parse, authenticity through dcap-qvl, then policy."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from blindai.attestation import _anchors
from blindai.attestation._dcap import DcapResult, check_report_agrees, verify_quote
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.sgx._claims import SgxClaims
from blindai.attestation.sgx._layout import QuoteEnvelope, SgxReportBody, parse_sgx_quote
from blindai.attestation.sgx.policy import DEBUG, SgxPolicy
from blindai.errors import ConfigurationError, PolicyError

__all__ = ["SgxVerifier"]


class SgxVerifier:
    """Verifies Intel SGX DCAP quotes (ECDSA P-256, PCK chain in the quote) offline.

    ``trusted_roots`` are SHA-256 fingerprints of the root certificates accepted at the end of
    the quote's PCK chain; :meth:`with_embedded_roots` pins the Intel SGX Root CA. Collateral
    (``Endorsements.collateral``, dcap-qvl QuoteCollateralV3 JSON) is required.

    Not checked here: the binding of ``report_data`` to a TLS key or nonce
    (:func:`blindai.attestation.check_binding`), and anything the policy leaves unset.
    dcap-qvl 0.7 refuses debug enclaves whatever the policy (a PolicyError on ``debug``).
    """

    kind = EvidenceKind.SGX

    def __init__(self, *, trusted_roots: Iterable[bytes]) -> None:
        self._roots = frozenset(trusted_roots)
        if not self._roots:
            raise ConfigurationError("an SGX verifier needs at least one pinned root")

    @classmethod
    def with_embedded_roots(cls) -> SgxVerifier:
        """A verifier trusting only the pinned Intel SGX Root CA."""
        return cls(trusted_roots=(_anchors.INTEL_SGX_ROOT_CA,))

    def verify(
        self,
        evidence: bytes,
        policy: Any,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> SgxClaims:
        """Verify an SGX quote and its collateral at ``now`` against ``policy``.

        Raises EvidenceError (malformed, unsupported, or a TDX quote), CollateralUnavailable,
        ChainError / SignatureError / CollateralError (not authentic), PolicyError.
        """
        if not isinstance(policy, SgxPolicy):
            raise ConfigurationError("SgxVerifier needs an SgxPolicy")
        # (1) strict parse: untrusted structure
        envelope, body = parse_sgx_quote(evidence)
        # (2) authenticity: PCK chain to a pinned root, collateral, signatures, TCB status
        result = verify_quote(
            envelope.quote,
            envelope.pck_chain_pem,
            endorsements,
            now=now,
            trusted_roots=self._roots,
        )
        check_report_agrees(result, body.mr_enclave, body.report_data)
        claims = _claims(envelope, body, result, now)
        # (3) policy, every violation at once
        violations = policy.check(claims)
        if violations:
            raise PolicyError(violations)
        return claims


def _claims(
    envelope: QuoteEnvelope, body: SgxReportBody, result: DcapResult, now: datetime
) -> SgxClaims:
    return SgxClaims(
        kind=EvidenceKind.SGX,
        measurement=body.mr_enclave,
        report_data=body.report_data,
        debug=bool(body.attributes & DEBUG),
        verified_at=now,
        tcb_status=result.tcb_status,
        advisory_ids=result.advisory_ids,
        mr_enclave=body.mr_enclave,
        mr_signer=body.mr_signer,
        isv_prod_id=body.isv_prod_id,
        isv_svn=body.isv_svn,
        attributes=body.attributes,
        xfrm=body.xfrm,
        misc_select=body.misc_select,
        cpu_svn=body.cpu_svn,
        fmspc=result.fmspc,
        quote_version=envelope.header.version,
    )
