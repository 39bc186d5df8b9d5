"""Collateral kept until its earliest ``nextUpdate``, then fetched again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from blindai.attestation._dcap_collateral import Collateral
from blindai.errors import CollateralError, CollateralUnavailable
from blindai.server.attesters._pcs import INTEL_PCS_URL, PcsFetcher, fetch_sgx_collateral
from blindai.server.attesters._quote import pck_chain

__all__ = ["PcsCollateralSource"]

_log = logging.getLogger("blindai.server")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class PcsCollateralSource:
    """SGX collateral for a quote, from a PCS or PCCS, cached until its earliest ``nextUpdate``.

    One entry per (FMSPC, PCK CA); collateral already out of date when fetched is returned
    (the client decides) but not cached, so the next call fetches again.
    """

    def __init__(
        self,
        fetcher: PcsFetcher,
        *,
        base_url: str = INTEL_PCS_URL,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.fetcher = fetcher
        self.base_url = base_url
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[Collateral, datetime]] = {}

    def for_quote(self, quote: bytes) -> Collateral:
        """Collateral for the platform that produced ``quote`` (an SGX quote v3)."""
        chain = pck_chain(quote)
        key = (chain.fmspc, chain.ca_type)
        with self._lock:
            now = self._clock()
            cached = self._cache.get(key)
            if cached is not None and now < cached[1]:
                return cached[0]
            collateral = fetch_sgx_collateral(self.fetcher, self.base_url, chain)
            expires = _next_update(collateral)
            if now < expires:
                self._cache[key] = (collateral, expires)
            else:
                self._cache.pop(key, None)
                _log.warning(
                    "SGX collateral from %s is out of date (nextUpdate %s)",
                    self.base_url,
                    expires.isoformat(),
                )
            return collateral


def _next_update(collateral: Collateral) -> datetime:
    try:
        return collateral.next_update()
    except CollateralError as exc:
        raise CollateralUnavailable(f"unusable PCS collateral: {exc}") from exc
