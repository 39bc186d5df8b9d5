"""SGX quotes from inside a Gramine enclave, through its ``/dev/attestation`` pseudo-files.

Gramine (``sgx.remote_attestation = "dcap"``) exposes:

* ``attestation_type``: ``dcap`` when DCAP quotes are available;
* ``user_report_data``: write the 64-byte report data there;
* ``quote``: read it to get an SGX quote (v3) of this enclave carrying that report data.

The collateral a client needs beside the quote comes from a PCS or PCCS (a
:class:`~blindai.attestation._collateral.CollateralSource`), served on ``/endorsements`` and as
BlindAI 0.6's ``/collateral`` map.
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path
from typing import Any

from blindai.attestation._collateral import CollateralSource
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.dcap import collateral_to_blindai_v06
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.kinds import GRAMINE
from blindai.errors import CollateralUnavailable, ConfigurationError, EvidenceError
from blindai.server.attesters._devfiles import ATTRIBUTE_TIMEOUT_S, read_attribute, write_attribute
from blindai.server.attesters._quote import carried_report_data, check_report_data

__all__ = ["DEFAULT_ATTESTATION_DIR", "GramineAttester"]

DEFAULT_ATTESTATION_DIR = GRAMINE.default  # the kind table states it
_TYPE_MAX_BYTES = 64  # attestation_type: a short name ("dcap", "epid", "none")


class GramineAttester:
    """Collects SGX DCAP quotes through Gramine; SGX collateral from ``collateral``."""

    kind = EvidenceKind.SGX

    def __init__(
        self,
        attestation_dir: Path = DEFAULT_ATTESTATION_DIR,
        *,
        collateral: CollateralSource | None,
        io_timeout: float = ATTRIBUTE_TIMEOUT_S,
    ) -> None:
        self.attestation_dir = attestation_dir
        self.collateral = collateral
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._last_quote: bytes | None = None
        attestation_type = self._attestation_type()
        if attestation_type != "dcap":
            raise ConfigurationError(
                f"Gramine attestation type is {attestation_type!r}, not 'dcap': build the "
                'enclave with sgx.remote_attestation = "dcap" in its manifest'
            )

    def _attestation_type(self) -> str:
        path = self.attestation_dir / "attestation_type"
        try:
            raw = read_attribute(path, limit=_TYPE_MAX_BYTES, timeout=self.io_timeout)
            return raw.decode(errors="replace").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"no Gramine attestation interface at {self.attestation_dir} ({exc.strerror}): "
                "is this running inside a Gramine SGX enclave?"
            ) from exc

    def evidence(self, report_data: bytes) -> bytes:
        """An SGX quote of this enclave whose REPORTDATA is ``report_data`` (64 bytes)."""
        check_report_data(report_data)
        with self._lock:
            try:
                path = self.attestation_dir
                write_attribute(path / "user_report_data", report_data, timeout=self.io_timeout)
                quote = read_attribute(path / "quote", timeout=self.io_timeout)
            except OSError as exc:
                raise EvidenceError(f"Gramine did not produce a quote: {exc}") from exc
            if not hmac.compare_digest(carried_report_data(self.kind, quote), report_data):
                raise EvidenceError("the quote from Gramine does not carry our report data")
            self._last_quote = quote
            return quote

    def endorsements(self) -> Endorsements:
        """dcap-qvl collateral JSON for the last quote (see :meth:`blindai_collateral`)."""
        found = self._collateral()
        return Endorsements(collateral=found[0]) if found else Endorsements()

    def blindai_collateral(self) -> dict[str, Any] | None:
        """BlindAI 0.6's ``/collateral`` map for the last quote; None without a source.

        Raises :class:`CollateralUnavailable` before any quote, or when fetching fails.
        """
        found = self._collateral()
        return collateral_to_blindai_v06(*found) if found else None

    def _collateral(self) -> tuple[bytes, bytes] | None:
        """The collateral JSON for the last quote, and that quote; None without a source."""
        if self.collateral is None:
            return None
        with self._lock:
            quote = self._last_quote
        if quote is None:
            raise CollateralUnavailable("no quote collected yet: collateral follows the quote")
        return self.collateral.for_quote(quote).to_json(), quote
