"""Bytes held at once, every request together, of which one tenant's key may hold a share.

The body budget (``body_budget``) and the preprocessing budget (``preprocess_budget``) each
bound what the requests in progress hold; one tenant's key holds at most ``per_key`` of it
(by default half), so that one tenant's large or slow requests cannot take the whole of it
from the others. :class:`KeyShares` keeps that account; each budget words its own refusals
and decides where it is locked.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Full", "KeyShares"]

Full = Literal["total", "key"]
"""Which bound a request did not fit under: everyone's, or its key's share."""


class KeyShares:
    """``total`` bytes, of which one tenant's key holds at most ``per_key`` (default: half).
    A key of None is the admin key's or an open server's callers': they have no share of their
    own, and are bound by the total only. Not locked: its owner locks it where it is shared
    between threads."""

    def __init__(self, total: int, *, per_key: int | None = None) -> None:
        self.total = total
        self.per_key = total // 2 if per_key is None else per_key
        self.held = 0
        """Bytes held by the requests in progress."""
        self._by_key: dict[str, int] = {}

    def of(self, key: str | None) -> int:
        """Bytes ``key`` holds now (0 for None: it has no share)."""
        return 0 if key is None else self._by_key.get(key, 0)

    def fit(self, size: int, key: str | None = None) -> Full | None:
        """Take ``size`` bytes for ``key`` if they fit (None), else take nothing and say which
        bound they did not fit under."""
        if self.held + size > self.total:
            return "total"
        if key is not None and self.of(key) + size > self.per_key:
            return "key"
        self.hold(size, key)
        return None

    def hold(self, size: int, key: str | None = None) -> None:
        """Take ``size`` bytes even beyond the bounds (memory already in use)."""
        self.held += size
        if key is not None:
            self._by_key[key] = self._by_key.get(key, 0) + size

    def give(self, size: int, key: str | None = None) -> None:
        """Give back what :meth:`fit` or :meth:`hold` took for ``key``."""
        self.held -= size
        if key is not None:
            left = self._by_key.pop(key) - size
            if left:
                self._by_key[key] = left
