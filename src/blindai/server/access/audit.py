"""The audit log: one JSON line per request that touches a model or a key; content-free.

Each line holds exactly::

    {"time": "2025-07-01T12:00:00.123Z", "key": "alice", "key_id": "k_0123456789abcdef",
     "action": "run", "model": "3f0c...-uuid", "target_key": null, "status": 200,
     "duration_ms": 1.84}

``key`` is the key's name (``admin`` for the admin key, null when access control is off or the
request carried no valid key, but a key revoked lately is named on its 401s, with a store after
a restart too) and ``key_id`` its id (``admin``, or ``k_`` and 16 hex digits):
a name is free again once its key is revoked, the id never is; ``model`` is the id of the model
the request resolved to (a random UUID), null when none was found; ``target_key`` is the id of
the key a ``key-create`` made or a ``key-revoke`` revoked (null otherwise). A request whose
head the HTTP layer refused unread (431, 400) is written ``unread``, with no key and no model.
Never written:
inputs, outputs, model bytes, model names, the names a caller asked for, API keys or their
hashes. The fields are typed, so no free text can slip in.
"""

from __future__ import annotations

import enum
import errno
import json
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from blindai.errors import ConfigurationError
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
    UNREAD = "unread"
    """A request the HTTP layer answered before reading its head whole (431: request line or
    headers over the limits; 400: not HTTP): what it asked, and with which key, is unknown."""


def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")


def _text(value: str | None) -> str:
    """A JSON string (or null): the only fields that are not the server's own constants."""
    return "null" if value is None else json.dumps(value)


class _Lines(Protocol):
    def write(self, text: str, /) -> object: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _FileLines:
    """A file opened for appending, written one line per ``write(2)``, nothing buffered.

    A buffered file kept the lines a full disk refused and wrote some of them (8 KiB) later,
    among newer lines, while the rest were gone: no count of what was lost could be true. Here
    a line is written now or not at all: one the disk filled in the middle of is taken back
    (the file truncated to where the line began). Where it cannot be (not a regular file, or
    another writer appended after it) the next line starts with a newline, so that the
    fragment stays a line of its own.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._cut = False

    def write(self, text: str, /) -> None:
        if self._fd < 0:  # closed: its number may be another file's by now
            raise ValueError("the audit log is closed")
        data = memoryview((("\n" if self._cut else "") + text).encode())
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if written and not self._take_back(written):
                self._cut = True
            raise
        self._cut = False

    def _take_back(self, written: int) -> bool:
        """Truncate the ``written`` bytes of a line the file took only part of; False where
        that could cut what is not ours (not a regular file, or the file grew after them)."""
        try:
            end = os.lseek(self._fd, 0, os.SEEK_CUR)  # where our last write ended
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != end:
                return False
            os.ftruncate(self._fd, end - written)
        except OSError:
            return False
        return True

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _mode(path: Path) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


class AuditLog:
    """Writes audit lines to a text stream (stderr, or a file opened for appending, 0600).

    A line that cannot be written is lost, never retried, and never fails its request: the
    first of an outage is reported (an error naming the exception's class), and so is its end
    (how many lines were lost), or the log's close while it lasts, so that every outage and its
    size shows in the server's log.
    """

    def __init__(
        self, stream: _Lines, *, owned: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self._stream = stream
        self._owned = owned
        self._clock = clock
        self._lock = threading.Lock()
        self._lost = 0
        """Lines lost since the last one written (the outage in progress)."""
        self._second: tuple[int, str] = (-1, "")
        """The last whole second written and its text: formatting a date is most of a line."""

    @classmethod
    def open(cls, path: Path | None) -> AuditLog:
        """Append to ``path`` (created 0600), or write to stderr when ``path`` is None;
        ConfigurationError naming ``--audit-log`` when it cannot be opened (a FIFO: when it
        has no reader, instead of waiting for one)."""
        if path is None:
            return cls(sys.stderr)
        # without O_NONBLOCK, opening a FIFO waits for its reader: with none, the start hung
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if exc.errno == errno.ENXIO and stat.S_ISFIFO(_mode(path)):
                reason = "a FIFO with no reader"
            raise ConfigurationError(
                f"--audit-log {path}: cannot be opened for appending ({reason})"
            ) from exc
        os.set_blocking(fd, True)  # each line is written whole (see _FileLines)
        return cls(_FileLines(fd), owned=True)

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
        """Write one line for a request of ``caller`` (None: no valid key); a line that cannot
        be written is counted as lost (see the class docstring), never raised."""
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
                self._lost += 1
                if self._lost == 1:
                    _log.error(
                        "the audit log cannot be written: %s; its lines are lost until it can",
                        type(exc).__name__,
                    )
                return
            if self._lost:
                _log.warning("the audit log is written again; %d lines were lost", self._lost)
                self._lost = 0

    def unread(self, status: int, duration_s: float) -> None:
        """Write the line of a request answered ``status`` before its head was read whole
        (:attr:`AuditAction.UNREAD`): no key, no model."""
        self.record(
            caller=None, action=AuditAction.UNREAD, model=None, status=status, duration_s=duration_s
        )

    def close(self) -> None:
        """Close the file (stderr is left open). An outage still going is reported now with
        the lines it lost: no later line will end it."""
        with self._lock:
            if self._lost:
                _log.warning("the audit log is closed; %d lines were lost", self._lost)
                self._lost = 0
            if self._owned:
                self._stream.close()
