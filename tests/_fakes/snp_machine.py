"""A fake SEV-SNP guest: a generated AMD PKI, reports signed for any report data, and a fake
configfs-tsm kernel serving them to a real ``blindai serve --tee sev-snp`` process.

The PKI and report layout come from the SNP verifier's tests (``FakeAmd``, ``make_report``,
``sign_report``); the kernel from the attesters' tests (``FakeTsmKernel``). Here the VCEK is
valid around the real current time, because the server and client run on the real clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.unit.attestation.snp._snp_kit import (
    FakeAmd,
    der,
    make_fake_amd,
    make_report,
    sign_report,
)
from tests.unit.server.attesters.attester_fakes import FakeTsmKernel, certificate_table

#: GUIDs of the SNP certificate table entries (GHCB specification, table "certificate table").
VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK_GUID = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID = "c0b406a4-a803-4952-9743-3fb6014cd0ae"

TCB = (3, 0, 8, 115)
CHIP_ID = b"\xc4" * 64


@dataclass
class SnpMachine:
    """One generated "AMD" chip: signs 1184-byte v2 reports with its VCEK key."""

    amd: FakeAmd = field(default_factory=make_fake_amd)
    measurement: bytes = bytes(range(0x40, 0x40 + 48))
    reports: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        now = datetime.now(timezone.utc)
        self.vcek = self.amd.vcek(
            tcb=TCB,
            hwid=CHIP_ID,
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=30),
        )

    @property
    def ark_fingerprint(self) -> bytes:
        """SHA-256 of the generated ARK's DER: what a verifier trusting this PKI pins."""
        return hashlib.sha256(der(self.amd.ark)).digest()

    @property
    def auxblob(self) -> bytes:
        """The SNP extended-report certificate table: VCEK, ASK, ARK."""
        return certificate_table(
            [
                (VCEK_GUID, der(self.vcek)),
                (ASK_GUID, der(self.amd.ask)),
                (ARK_GUID, der(self.amd.ark)),
            ]
        )

    def report(self, report_data: bytes) -> bytes:
        """A fresh signed report carrying exactly ``report_data`` (64 bytes)."""
        if len(report_data) != 64:
            raise ValueError(f"report data must be 64 bytes, got {len(report_data)}")
        raw = make_report(
            measurement=self.measurement, report_data=report_data, tcb=TCB, chip_id=CHIP_ID
        )
        signed = sign_report(raw, self.amd.vcek_key)
        self.reports.append(signed)
        return signed


class FakeSnpKernel(FakeTsmKernel):
    """configfs-tsm as a ``sev_guest`` provider: each ``inblob`` gets a freshly signed report."""

    def __init__(
        self,
        report_dir: Path,
        machine: SnpMachine,
        *,
        generation_text: str | None = None,
        sign_instead: bytes | None = None,
    ) -> None:
        super().__init__(
            report_dir,
            provider="sev_guest",
            outblob=b"",
            auxblob=machine.auxblob,
            generation_text=generation_text,
        )
        self.machine = machine
        self.sign_instead = sign_instead
        """When set, reports carry this report data instead of the ``inblob`` (a broken guest)."""

    def __enter__(self) -> FakeSnpKernel:
        self.start()
        return self

    def _report(self, entry: Path, record: dict[str, Any]) -> None:
        self.outblob = self.machine.report(self.sign_instead or record["inblob"])
        super()._report(entry, record)
