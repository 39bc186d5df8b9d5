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

__all__ = ["PreprocessBudget"]


class PreprocessBudget:
    """``total`` bytes of preprocessing memory, taken and given back by worker threads."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        """Bytes held by the preprocessing in progress."""
        self._lock = threading.Lock()

    @contextmanager
    def holding(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes for the block; InvalidInput (400) when they can never fit,
        ServerBusy (503) when they do not fit now."""
        if size > self.total:
            raise InvalidInput(
                f"this input may take {size} bytes of memory to preprocess, more than this "
                f"server allows all preprocessing together ({self.total}, "
                "--max-preprocess-memory): send a smaller one"
            )
        with self._lock:
            if self.held + size > self.total:
                held = self.held
                fits = False
            else:
                self.held += size
                fits = True
        if not fits:
            raise ServerBusy(
                f"the requests in progress hold {held} bytes of preprocessing memory, and may "
                f"hold {self.total} (--max-preprocess-memory); this one may take {size}: "
                "try again"
            )
        try:
            yield
        finally:
            with self._lock:
                self.held -= size
