"""The audit log: one JSON line per request that touches a model or a key; content-free.

Each line holds exactly::

    {"time": "2025-07-01T12:00:00.123Z", "key": "alice", "key_id": "k_0123456789abcdef",
     "action": "run", "model": "3f0c...-uuid", "target_key": null, "status": 200,
     "duration_ms": 1.84}

``key`` is the key's name (``admin`` for the admin key, null when access control is off or the
request carried no valid key) and ``key_id`` its id (``admin``, or ``k_`` and 16 hex digits):
a name is free again once its key is revoked, the id never is; ``model`` is the id of the model
the request resolved to (a random UUID), null when none was found; ``target_key`` is the id of
the key a ``key-create`` made or a ``key-revoke`` revoked (null otherwise). Never written:
inputs, outputs, model bytes, model names, the names a caller asked for, API keys or their
hashes. The fields are typed, so no free text can slip in.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from blindai.server.access.principal import Principal

__all__ = ["AuditAction", "AuditLog"]

_log = logging.getLogger("blindai.server")


class AuditAction(str, enum.Enum):
    """What a request did (the ``action`` field)."""

    UPLOAD = "upload"
    RUN = "run"
    DELETE = "delete"
    EXPORT = "export"
    LIST = "list"
    METADATA = "metadata"
    LOAD = "load"
    UNLOAD = "unload"
    STATISTICS = "statistics"
    KEY_CREATE = "key-create"
    KEY_LIST = "key-list"
    KEY_REVOKE = "key-revoke"


def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")


def _text(value: str | None) -> str:
    """A JSON string (or null): the only fields that are not the server's own constants."""
    return "null" if value is None else json.dumps(value)


class AuditLog:
    """Writes audit lines to a text stream (stderr, or a file opened for appending, 0600)."""

    def __init__(
        self, stream: TextIO, *, owned: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self._stream = stream
        self._owned = owned
        self._clock = clock
        self._lock = threading.Lock()
        self._failed = False
        self._second: tuple[int, str] = (-1, "")
        """The last whole second written and its text: formatting a date is most of a line."""

    @classmethod
    def open(cls, path: Path | None) -> AuditLog:
        """Append to ``path`` (created 0600), or write to stderr when ``path`` is None."""
        if path is None:
            return cls(sys.stderr)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(os.fdopen(fd, "a", encoding="utf-8"), owned=True)

    def record(
        self,
        *,
        caller: Principal | None,
        action: AuditAction,
        model: str | None,
        status: int,
        duration_s: float,
        target_key: str | None = None,
    ) -> None:
        """Write one line for a request of ``caller`` (None: no valid key); a failing stream
        is reported once and never fails the request."""
        # written by hand (one f-string), in json.dumps's layout: this runs on every request
        now = self._clock()
        whole = int(now)
        second = self._second
        if second[0] != whole:
            second = self._second = (whole, _second(whole))
        millis = int((now - whole) * 1000)
        name, key_id = (None, None) if caller is None else (caller.name, caller.key_id)
        line = (
            f'{{"time": "{second[1]}{millis:03d}Z", "key": {_text(name)}, '
            f'"key_id": {_text(key_id)}, "action": "{AuditAction(action).value}", '
            f'"model": {_text(model)}, "target_key": {_text(target_key)}, '
            f'"status": {int(status)}, "duration_ms": {float(round(duration_s * 1e3, 3))!r}}}'
        )
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError) as exc:
                if not self._failed:
                    self._failed = True
                    _log.error("the audit log cannot be written: %s", type(exc).__name__)

    def close(self) -> None:
        """Close the file (stderr is left open)."""
        if self._owned:
            with self._lock:
                self._stream.close()
