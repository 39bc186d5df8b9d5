"""Remote attestation: verify TEE evidence and return typed, verified claims.

One verifier per evidence kind, one protocol: ``verify(evidence, policy, *, now,
endorsements)`` checks authenticity first (signatures, chains to a pinned vendor root,
collateral), then the policy, and returns :class:`VerifiedClaims` or raises a
:class:`~blindai.errors.VerificationError` subclass. Nothing here touches the network unless a
fetcher is passed in: :class:`PcsCollateralSource` fetches SGX/TDX collateral from Intel's PCS
or a PCCS (``PcsCollateralSource.online(base_url)``), and :class:`KdsCertificateSource` fetches
SEV-SNP VCEKs from AMD's KDS (``KdsCertificateSource.online()``), for whoever is given one.

Example::

    from datetime import datetime, timezone
    from blindai.attestation import EvidenceKind, Policy, verify

    policy = Policy.from_file("policy.toml")
    claims = verify(EvidenceKind.SEV_SNP, report, policy,
                    now=datetime.now(timezone.utc), endorsements=Endorsements(certificates=certs))
    print(claims.measurement.hex())
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from blindai.attestation.binding import check_binding, expected_report_data
from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.kinds import spec_for
from blindai.attestation.policy import KindPolicy, Policy
from blindai.attestation.server_config import ServerPolicy

if TYPE_CHECKING:
    from blindai.attestation._collateral import PcsCollateralSource
    from blindai.attestation._kds import KdsCertificateSource

__all__ = [
    "Endorsements",
    "EvidenceKind",
    "KdsCertificateSource",
    "KindPolicy",
    "PcsCollateralSource",
    "Policy",
    "ServerPolicy",
    "VerifiedClaims",
    "Verifier",
    "check_binding",
    "expected_report_data",
    "verifier_for",
    "verify",
]


def __getattr__(name: str) -> Any:
    """The online sources, imported on first use (they bring urllib and dcap-qvl)."""
    if name == "PcsCollateralSource":
        from blindai.attestation._collateral import PcsCollateralSource

        return PcsCollateralSource
    if name == "KdsCertificateSource":
        from blindai.attestation._kds import KdsCertificateSource

        return KdsCertificateSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"KdsCertificateSource", "PcsCollateralSource"})


class Verifier(Protocol):
    """What every verifier provides."""

    kind: EvidenceKind

    def verify(
        self,
        evidence: bytes,
        policy: Any,
        *,
        now: datetime,
        endorsements: Endorsements | None = None,
    ) -> VerifiedClaims:
        """Authenticity, then policy; return the verified claims or raise."""
        ...


def verifier_for(kind: EvidenceKind) -> Verifier:
    """The verifier for ``kind``, trusting only the embedded (pinned) vendor roots."""
    return spec_for(kind).verifier()


def verify(
    kind: EvidenceKind,
    evidence: bytes,
    policy: Policy,
    *,
    now: datetime,
    endorsements: Endorsements | None = None,
) -> VerifiedClaims:
    """Verify ``evidence`` of ``kind`` against the matching section of ``policy``."""
    return verifier_for(kind).verify(
        evidence, policy.for_kind(kind), now=now, endorsements=endorsements
    )
