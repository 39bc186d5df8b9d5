"""One bound on the memory raw inputs' preprocessing takes at once, every model together.

A pipeline's preprocessing (image decode and conversion, WAV decode and resampling,
tokenization) runs in the inference workers, outside onnxruntime's capped arena: a 106 KB PNG
of 25 megapixels took 834 MB to become a float32 feed, 1 MiB of text 587 MB to tokenize. Each
request's worst case is known from its size or its header before anything is decoded
(``CompiledPipeline.preprocess_cost``); :class:`PreprocessBudget` holds it from before the
decode until the request's run is over, so that the inference workers together never hold
more than ``--max-preprocess-memory``. A request that does not fit beside the others gets
``503 ServerBusy`` at once (try again); one that could never fit, ``400``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from blindai.errors import InvalidInput, ServerBusy
from blindai.server.key_shares import KeyShares

__all__ = ["PreprocessBudget"]


class PreprocessBudget:
    """``total`` bytes of preprocessing memory, taken and given back by worker threads; one
    tenant's key may hold at most ``per_key`` of them at once (default: half), as with the body
    budget, so that one tenant's large inputs cannot hold the whole budget for the others."""

    def __init__(self, total: int, *, per_key: int | None = None) -> None:
        self._shares = KeyShares(total, per_key=per_key)
        self.total = total
        self.per_key = self._shares.per_key
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes held by the preprocessing in progress."""
        return self._shares.held

    @contextmanager
    def holding(self, size: int, key: str | None = None) -> Iterator[None]:
        """Hold ``size`` bytes for the block (``key``: the tenant's key taking them; None for
        the admin key and an open server's callers); InvalidInput (400) when they can never
        fit, ServerBusy (503) when they do not fit now (a tenant is told what its own key
        holds, never what the others' requests hold)."""
        most = self.total if key is None else self.per_key
        if size > most:
            share = "" if key is None else ", half of it for one key"
            raise InvalidInput(
                f"this input may take {size} bytes of memory to preprocess, more than this "
                f"server allows ({most}: --max-preprocess-memory{share}): send a smaller one"
            )
        shares = self._shares
        with self._lock:
            held, mine = shares.held, shares.of(key)
            full = shares.fit(size, key)
        if full == "total" and key is not None:  # not what the other tenants' inputs hold
            raise ServerBusy(
                f"the requests in progress leave no room for this one's {size} bytes in "
                f"--max-preprocess-memory ({self.total} bytes, of which this key holds {mine} "
                "bytes): try again"
            )
        if full == "total":
            raise ServerBusy(
                f"the requests in progress hold {held} bytes of preprocessing memory, and "
                f"may hold {self.total} (--max-preprocess-memory); this one may take {size}: "
                "try again"
            )
        if full == "key":
            raise ServerBusy(
                f"this key's requests in progress hold {mine} bytes of preprocessing memory, "
                f"and one key may hold {self.per_key} (half of --max-preprocess-memory); "
                f"this one may take {size}: try again"
            )
        try:
            yield
        finally:
            with self._lock:
                shares.give(size, key)
