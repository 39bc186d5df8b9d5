"""TDX quotes and SEV-SNP reports in a confidential VM, through Linux configfs-tsm (>= 6.7).

One report per entry directory under ``/sys/kernel/config/tsm/report/`` (ABI:
``Documentation/ABI/testing/configfs-tsm``):

1. ``mkdir`` a fresh entry; the kernel populates its attributes;
2. write ``privlevel`` (SEV-SNP VMPL, optional), then ``inblob`` (the 64-byte report data);
3. read ``outblob`` (the TDX quote or SNP report; the kernel produces it on this read),
   ``auxblob`` (SNP: the certificate table with VCEK/VLEK, ASK, ARK; may be absent or empty),
   ``generation`` and ``provider`` (``tdx_guest`` or ``sev_guest``);
4. ``rmdir`` the entry.

``generation`` counts writes to the entry's attributes; it starts at 0 in a fresh entry, so it
must equal the number of our own writes, or another writer raced us and the report may not be
ours: the attester then retries with a new entry, and gives up with :class:`EvidenceError`.
Calls are serialised with a lock.

TDX collateral (TCB Info, QE Identity, CRLs) does not come from the kernel: given a
``collateral`` source (a PCCS or Intel's PCS, ``--pccs-url``), :meth:`endorsements` returns the
collateral for the last quote, so that clients verify without a network of their own; without
one it returns none, and clients must fetch it themselves (``collateral_fetcher``).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from blindai.attestation._collateral import CollateralSource
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.kinds import CONFIGFS_TSM
from blindai.attestation.snp._certs import (
    ARK_GUID,
    ASK_GUID,
    VCEK_GUID,
    VLEK_GUID,
    parse_cert_table,
)
from blindai.errors import CollateralUnavailable, ConfigurationError, EvidenceError
from blindai.server.attesters._devfiles import (
    ATTRIBUTE_MAX_BYTES,
    ATTRIBUTE_TIMEOUT_S,
    read_attribute,
    write_attribute,
)
from blindai.server.attesters._quote import carried_report_data, check_report_data

__all__ = [
    "DEFAULT_TSM_REPORT_DIR",
    "PROVIDERS",
    "ConfigfsTsmAttester",
    "auxblob_certificates",
]

DEFAULT_TSM_REPORT_DIR = CONFIGFS_TSM.default  # the kind table states it
#: configfs-tsm ``provider`` values and the evidence kind each produces.
PROVIDERS = {"tdx_guest": EvidenceKind.TDX, "sev_guest": EvidenceKind.SEV_SNP}

#: the certificates taken from an SNP ``auxblob``, in the order they are returned
_AUXBLOB_CERTIFICATES = (VCEK_GUID, VLEK_GUID, ASK_GUID, ARK_GUID)

#: attributes holding a short text line (a number, a provider name), and the most read of one
_TEXT_ATTRIBUTES = frozenset({"generation", "provider"})
_TEXT_MAX_BYTES = 64

_log = logging.getLogger("blindai.server")


class _Entry:
    """One report entry directory: created on enter, removed on exit."""

    def __init__(self, report_dir: Path, settle_timeout: float, io_timeout: float) -> None:
        self.path = report_dir / f"blindai-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.settle_timeout = settle_timeout
        self.io_timeout = io_timeout

    def __enter__(self) -> _Entry:
        try:
            os.mkdir(self.path, 0o700)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create a configfs-tsm report entry in {self.path.parent}: {exc.strerror}"
            ) from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            os.rmdir(self.path)
        except OSError as exc:
            _log.warning("could not remove configfs-tsm entry %s: %s", self.path, exc.strerror)

    def wait_for(self, name: str) -> Path:
        """The attribute ``name``, once present (configfs creates attributes with the entry)."""
        path = self.path / name
        deadline = time.monotonic() + self.settle_timeout
        while not path.exists():
            if not self.path.is_dir():  # configfs never removes an entry itself
                raise EvidenceError(
                    f"the configfs-tsm entry {self.path.name} was removed while its report was "
                    f"collected: another writer in {self.path.parent}"
                )
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"{self.path.parent} is not a configfs-tsm report directory: "
                    f"a new entry has no {name!r} attribute"
                )
            time.sleep(0.001)
        return path

    def read(self, name: str, *, optional: bool = False) -> bytes:
        """Read an attribute (bounded, see :mod:`._devfiles`); a missing optional one is empty."""
        path = self.path / name
        if optional and not os.path.lexists(path):
            return b""
        limit = _TEXT_MAX_BYTES if name in _TEXT_ATTRIBUTES else ATTRIBUTE_MAX_BYTES
        return read_attribute(path, limit=limit, timeout=self.io_timeout)

    def write(self, name: str, data: bytes) -> None:
        """Write an attribute, once configfs has created it."""
        write_attribute(self.wait_for(name), data, timeout=self.io_timeout)


class ConfigfsTsmAttester:
    """Collects TDX quotes or SEV-SNP reports through configfs-tsm; kind set by ``provider``."""

    def __init__(
        self,
        report_dir: Path = DEFAULT_TSM_REPORT_DIR,
        *,
        provider: str,
        privlevel: int | None = None,
        attempts: int = 3,
        settle_timeout: float = 1.0,
        io_timeout: float = ATTRIBUTE_TIMEOUT_S,
        collateral: CollateralSource | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ConfigurationError(
                f"configfs-tsm provider {provider!r} is not supported (known: {sorted(PROVIDERS)})"
            )
        if privlevel is not None and (provider != "sev_guest" or not 0 <= privlevel <= 3):
            raise ConfigurationError("privlevel (VMPL 0..3) applies to SEV-SNP (sev_guest) only")
        self.report_dir = report_dir
        self.provider = provider
        self.kind = PROVIDERS[provider]
        self.privlevel = privlevel
        self.attempts = attempts
        self.settle_timeout = settle_timeout
        self.io_timeout = io_timeout
        self.collateral = collateral
        self._lock = threading.Lock()
        self._certificates: tuple[bytes, ...] = ()
        self._last_quote: bytes | None = None
        self._warned_no_certs = False
        if self.kind is EvidenceKind.TDX and collateral is None:
            _log.warning(
                "TDX without a PCCS/PCS URL (--pccs-url): this server serves no TDX collateral; "
                "clients need their own collateral source (blindai.connect(collateral_fetcher=...)"
                " or blindai attest --pccs-url)"
            )

    @classmethod
    def probe(
        cls,
        report_dir: Path = DEFAULT_TSM_REPORT_DIR,
        *,
        settle_timeout: float = 1.0,
        io_timeout: float = ATTRIBUTE_TIMEOUT_S,
        **kw: Any,
    ) -> ConfigfsTsmAttester:
        """An attester for the provider found in ``report_dir`` (one entry created and removed)."""
        if not report_dir.is_dir():
            raise ConfigurationError(
                f"no configfs-tsm at {report_dir}: needs Linux >= 6.7 in a TDX or SEV-SNP guest, "
                "with configfs mounted on /sys/kernel/config"
            )
        with _Entry(report_dir, settle_timeout, io_timeout) as entry:
            entry.wait_for("provider")
            try:
                provider = entry.read("provider").decode(errors="replace").strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read the configfs-tsm provider in {report_dir}: {exc.strerror}"
                ) from exc
        return cls(
            report_dir,
            provider=provider,
            settle_timeout=settle_timeout,
            io_timeout=io_timeout,
            **kw,
        )

    def evidence(self, report_data: bytes) -> bytes:
        """A TDX quote or SEV-SNP report whose report data is ``report_data`` (64 bytes)."""
        check_report_data(report_data)
        with self._lock:
            for _ in range(self.attempts):
                outblob = self._collect(report_data)
                if outblob is not None:
                    return outblob
        raise EvidenceError(
            f"configfs-tsm: another writer raced us on {self.attempts} report entries in a row"
        )

    def _collect(self, report_data: bytes) -> bytes | None:
        """One entry's report, or None when its generation shows another writer."""
        writes = 0
        with _Entry(self.report_dir, self.settle_timeout, self.io_timeout) as entry:
            try:
                if self.privlevel is not None:
                    entry.write("privlevel", f"{self.privlevel}\n".encode())
                    writes += 1
                entry.write("inblob", report_data)
                writes += 1
                outblob = entry.read("outblob")
                auxblob = entry.read("auxblob", optional=True)
                generation = entry.read("generation")
                provider = entry.read("provider")
            except OSError as exc:
                raise EvidenceError(f"configfs-tsm did not produce a report: {exc}") from exc
        found = _generation(generation)
        if found != writes:
            _log.warning("configfs-tsm generation %d after %d writes: raced", found, writes)
            return None
        if provider.decode(errors="replace").strip() != self.provider:
            raise EvidenceError(f"configfs-tsm provider changed from {self.provider!r}")
        self._check(outblob, report_data)
        certificates = auxblob_certificates(auxblob)
        if self.kind is EvidenceKind.SEV_SNP and not certificates and not self._warned_no_certs:
            self._warned_no_certs = True
            _log.warning(
                "the host gave no SEV-SNP certificate table (empty auxblob): this server serves "
                "no VCEK; clients need AMD's KDS (blindai.connect(snp_certificate_source="
                "KdsCertificateSource.online()) or blindai attest HOST --kds)"
            )
        self._certificates = certificates
        if self.kind is EvidenceKind.TDX:
            self._last_quote = outblob
        return outblob

    def _check(self, outblob: bytes, report_data: bytes) -> None:
        if not outblob:
            raise EvidenceError("configfs-tsm returned an empty outblob")
        if not hmac.compare_digest(carried_report_data(self.kind, outblob), report_data):
            raise EvidenceError("the configfs-tsm report does not carry our report data")

    def endorsements(self) -> Endorsements:
        """SEV-SNP: the VCEK/VLEK, ASK and ARK from the last report's ``auxblob``.

        TDX: the collateral JSON for the last quote when there is a ``collateral`` source, else
        none. :class:`CollateralUnavailable` before any quote, or when fetching fails.
        """
        with self._lock:
            certificates, quote = self._certificates, self._last_quote
        if self.kind is not EvidenceKind.TDX or self.collateral is None:
            return Endorsements(certificates=certificates)
        if quote is None:
            raise CollateralUnavailable("no quote collected yet: collateral follows the quote")
        return Endorsements(collateral=self.collateral.for_quote(quote).to_json())

    def blindai_collateral(self) -> dict[str, Any] | None:
        """Not applicable (BlindAI 0.6's ``/collateral`` is SGX only)."""
        return None


def auxblob_certificates(auxblob: bytes) -> tuple[bytes, ...]:
    """The VCEK/VLEK, ASK and ARK of an SNP certificate table, in that order; empty for none.

    Entries with other GUIDs are skipped; a malformed table raises :class:`EvidenceError`.
    """
    if not auxblob:
        return ()
    found = {entry.guid: entry.data for entry in parse_cert_table(auxblob)}
    return tuple(found[guid] for guid in _AUXBLOB_CERTIFICATES if guid in found)


def _generation(raw: bytes) -> int:
    try:
        return int(raw.decode().strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise EvidenceError(f"configfs-tsm generation {raw[:20]!r} is not a number") from exc
