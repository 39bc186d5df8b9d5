"""One published evidence set per platform, and a call that verifies it (for the benchmark).

Each set is read from ``tests/data/evidence`` (copied into the repository with its
provenance and license) and verified offline at a time its collateral and certificates were
valid, with a policy that accepts it (any measurement: the benchmark times authenticity and
policy checks, not a particular build). Sets that are absent are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from blindai.attestation import Endorsements, Policy, verifier_for
from blindai.attestation.claims import EvidenceKind

__all__ = ["EVIDENCE", "real_sets"]

EVIDENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "evidence"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _set(
    kind: EvidenceKind,
    folder: str,
    evidence: str,
    section: str,
    policy: dict[str, object],
    when: str,
    *,
    collateral: str | None = None,
    certificates: tuple[str, ...] = (),
) -> tuple[str, str, Callable[[], object]] | None:
    base = EVIDENCE / folder
    if not base.is_dir():
        return None
    data = (base / evidence).read_bytes()
    endorsements = Endorsements(
        (base / collateral).read_bytes() if collateral else None,
        tuple((base / c).read_bytes() for c in certificates),
    )
    chosen = Policy.from_mapping({section: policy}).for_kind(kind)
    verifier = verifier_for(kind)
    now = _utc(when)

    def verify() -> object:
        return verifier.verify(data, chosen, now=now, endorsements=endorsements)

    verify()  # fails loudly here if the set or its times are wrong
    return kind.value, folder.split("/", 1)[1], verify


def real_sets() -> Iterator[tuple[str, str, Callable[[], object]]]:
    """``(platform, set name, verify)`` for each set that is present."""
    anything = {"allow_any_measurement": True}
    candidates = [
        _set(
            EvidenceKind.SGX,
            "sgx-dcap/phala-dcap-qvl-sgx",
            "quote.bin",
            "sgx",
            {**anything, "allowed_tcb_statuses": ["ConfigurationAndSWHardeningNeeded"]},
            "2025-07-01T00:00:00",
            collateral="collateral.json",
        ),
        _set(
            EvidenceKind.TDX,
            "tdx/phala-dcap-qvl-tdx-v4",
            "quote.bin",
            "tdx",
            anything,
            "2025-07-01T00:00:00",
            collateral="collateral.json",
        ),
        _set(
            EvidenceKind.SEV_SNP,
            "sev-snp/go-sev-guest-milan",
            "report.bin",
            "sev_snp",
            {**anything, "allow_debug": True},
            "2025-06-01T00:00:00",
            certificates=("vcek.der", "ask_ark_milan.pem"),
        ),
        _set(
            EvidenceKind.NITRO,
            "nitro/evervault-production-pcrs",
            "attestation_doc.cbor",
            "nitro",
            anything,
            "2022-10-13T09:00:00",
        ),
    ]
    yield from (c for c in candidates if c is not None)
