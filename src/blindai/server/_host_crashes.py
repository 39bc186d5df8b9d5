"""The crash accounting of one model's host (``model_host``): the model-wide crash limit, and
the crashes charged to each key.

A model whose host crashed ``limit`` times within the last ``window_s`` is not started again
until the oldest of them leaves the window (or it is unloaded and loaded again); a key charged
``key_limit`` times within the window has its runs of that model refused while those charges
lie within it, and every other key is served (``model_host`` says why both exist). A text
pipeline's tokenizer process (``tokenizer_host``) counts its ends the same way (model-wide only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

__all__ = ["CrashLog"]

_log = logging.getLogger("blindai.server")


class CrashLog:
    """The crashes of one model's host, and those charged to each key, within the window.

    The model's own count is guarded by its caller (``HostedModel`` holds its start lock, so
    that a start and a count do not interleave); the keys' charges have a lock of their own,
    taken by every run to read them (never while a host starts)."""

    def __init__(
        self,
        *,
        limit: int,
        key_limit: int,
        window_s: float,
        logged: str = "model host: a model's process crashed %d times; not restarted",
    ) -> None:
        self._limit = limit
        self._logged = logged
        """The log line at the limit (``%d``: the crashes; kinds only, never a model's name)."""
        self._key_limit = key_limit
        self._window_s = window_s
        self._crashes: deque[float] = deque()
        self._keys_lock = threading.Lock()
        """Held to charge crashes to keys and to read their charges (never while starting)."""
        self._key_crashes: dict[str, deque[float]] = {}
        """The times of the crashes charged to each key, within the window."""

    def __len__(self) -> int:
        """The crashes counted, within the window as of the last look (older ones are dropped
        as they are found)."""
        return len(self._crashes)

    def recent(self) -> int:
        """The crashes within the last ``window_s`` (the caller holds the model's start lock)."""
        return _within(self._crashes, time.monotonic(), self._window_s)

    def refusal(self) -> str | None:
        """Why the model is not started now: ``limit`` crashes within the window (None: it may
        start). The caller holds the model's start lock."""
        wait = self.wait_s()
        if wait is None:
            return None
        return (
            f"this model's process crashed {len(self)} times within {self._window_s:g} s; it is "
            f"not started again for {wait:.0f} s, or until the model is unloaded and loaded "
            "again (POST /v2/repository/models/NAME/unload, then load)"
        )

    def wait_s(self) -> float | None:
        """Seconds until the oldest of ``limit`` crashes within the window leaves it (None:
        fewer lie within it; the process may start). The caller holds the start lock."""
        limit = self._limit
        if self.recent() < limit:
            return None
        return max(self._window_s - (time.monotonic() - self._crashes[-limit]), 0.0)

    def count(self, keys: frozenset[str] = frozenset()) -> bool:
        """Count a crash now (the caller holds the model's start lock) and charge it to
        ``keys``. False at the limit: the model is not started again while those crashes lie
        within the window."""
        now = time.monotonic()
        self._crashes.append(now)
        self._charge(keys, now)
        crashes = self.recent()
        if crashes >= self._limit:
            if crashes == self._limit:
                _log.warning(self._logged, crashes)
            return False
        return True

    def _charge(self, keys: frozenset[str], now: float) -> None:
        """Charge a crash at ``now`` to each of ``keys`` (and forget charges past the window)."""
        window = self._window_s
        with self._keys_lock:
            for key in keys:
                self._key_crashes.setdefault(key, deque()).append(now)
            for key, times in list(self._key_crashes.items()):
                if not _within(times, now, window):
                    del self._key_crashes[key]
                elif key in keys and len(times) == self._key_limit:
                    _log.warning(
                        "model host: key %s was in flight at %d crashes of a model's process; "
                        "its runs of that model are refused for now",
                        key,
                        len(times),
                    )

    def key_refusal(self, caller: str) -> str | None:
        """Why ``caller``'s runs are refused now: ``key_limit`` crashes charged to it within
        the window (None: it may run)."""
        limit, window = self._key_limit, self._window_s
        with self._keys_lock:
            times = self._key_crashes.get(caller)
            now = time.monotonic()
            if times is None or _within(times, now, window) < limit:
                return None
            wait = window - (now - times[-limit])
            count = len(times)
        return (
            f"this model's process ended {count} times within {window:g} s during runs sent "
            f"with this key; its runs of this model are refused for {max(wait, 0):.0f} s "
            "(other keys' runs go on)"
        )


def _within(times: deque[float], now: float, window: float) -> int:
    """How many of ``times`` lie within ``window`` seconds before ``now`` (older ones are
    dropped from the left)."""
    while times and now - times[0] > window:
        times.popleft()
    return len(times)
