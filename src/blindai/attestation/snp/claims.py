"""Verified SEV-SNP claims: what :class:`SnpVerifier` returns once a report is authentic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.snp._layout import SnpReport, TcbVersion

__all__ = ["SnpClaims"]


@dataclass(frozen=True, kw_only=True)
class SnpClaims(VerifiedClaims):
    """The fields of an authentic SEV-SNP attestation report, and what signed it.

    ``measurement`` is the 48-byte launch MEASUREMENT; ``debug`` is guest policy bit 19;
    ``signing_key`` is ``"vcek"`` or ``"vlek"``; ``product`` the AMD product of the chain's
    root (``"Milan"``, ``"Genoa"``). Firmware versions are (major, minor, build).
    """

    report_version: int
    guest_svn: int
    guest_policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    author_key_en: bool
    report_id: bytes
    report_id_ma: bytes
    chip_id: bytes
    platform_info: int
    signing_key: str
    product: str
    reported_tcb: TcbVersion
    current_tcb: TcbVersion
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    current_firmware: tuple[int, int, int]
    committed_firmware: tuple[int, int, int]
    cpuid: tuple[int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping; TCB versions as {bootloader, tee, snp, microcode}."""
        out = super().to_dict()
        for name in ("reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"):
            out[name] = getattr(self, name).to_dict()
        return out

    @classmethod
    def _from_report(cls, report: SnpReport, **common: Any) -> SnpClaims:
        # called by the verifier only, once the report is authentic
        return cls(
            measurement=report.measurement,
            report_data=report.report_data,
            debug=report.debug,
            report_version=report.version,
            guest_svn=report.guest_svn,
            guest_policy=report.policy,
            family_id=report.family_id,
            image_id=report.image_id,
            vmpl=report.vmpl,
            host_data=report.host_data,
            id_key_digest=report.id_key_digest,
            author_key_digest=report.author_key_digest,
            author_key_en=report.author_key_en,
            report_id=report.report_id,
            report_id_ma=report.report_id_ma,
            chip_id=report.chip_id,
            platform_info=report.platform_info,
            signing_key=report.signing_key,
            reported_tcb=report.reported_tcb,
            current_tcb=report.current_tcb,
            committed_tcb=report.committed_tcb,
            launch_tcb=report.launch_tcb,
            current_firmware=report.current_version,
            committed_firmware=report.committed_version,
            cpuid=report.cpuid,
            **common,
        )
