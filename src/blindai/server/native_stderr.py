"""What native libraries write to the server's stderr is counted, not shown.

The server's own lines hold no request data or model bytes; libraries written in C++ or Rust
write to file descriptor 2 behind Python's back, and what they write may quote a request. The
``tokenizers`` library (Rust) prints a panic's message there before Python sees the exception,
and Rust's messages quote the strings they were given (``byte index 3 is not a char boundary;
it is inside 'é' (bytes 2..4) of `<the text>```); libstdc++ prints an uncaught exception's text
before an abort. In a TEE, stderr leaves the TEE: the host's console or log collector reads it.

:func:`divert_native_stderr` keeps Python's ``sys.stderr`` (and every logging handler writing
to it) on the real stderr, through a duplicate of descriptor 2, and points descriptor 2 itself
at a pipe that a thread drains: it counts the bytes and logs one line (how many bytes, never
which) at most every ``REPORT_EVERY_S`` seconds. The pipe is always drained, so a native write
never blocks. :meth:`Diverted.restore` puts descriptor 2 and ``sys.stderr`` back.

Child processes (the compile guard's, the model hosts) have their stderr on ``/dev/null``.
"""

from __future__ import annotations

import io
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["REPORT_EVERY_S", "Diverted", "divert_native_stderr"]

_log = logging.getLogger("blindai.server")

REPORT_EVERY_S = 10.0
"""Longest time between two lines about native writes (one line per burst at most)."""
_QUIET_S = 0.5
"""A burst ends when nothing more was written for this long: its line is logged then."""


class Diverted:
    """Descriptor 2 on a drained pipe, Python's stderr on the real one (see the module)."""

    def __init__(
        self,
        *,
        report: Callable[[int], None] | None = None,
        report_every_s: float = REPORT_EVERY_S,
    ) -> None:
        self._report = report or _log_native
        self._every = report_every_s
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._python = _text_stream(self._saved)
        self._old = sys.stderr
        read, write = os.pipe()
        os.set_inheritable(read, False)
        self._read = read
        os.dup2(write, 2)  # dup2 leaves descriptor 2 inheritable, as it was
        os.close(write)
        _move_handlers(self._old, self._python)
        sys.stderr = self._python
        self.dropped = 0
        """Bytes native code wrote to descriptor 2 so far (read by tests)."""
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._drain, name="blindai-native-stderr", daemon=True
        )
        self._thread.start()

    def _drain(self) -> None:
        """In the thread: read the pipe until its write end is gone; count, report, drop.
        A burst is reported once nothing more came for ``_QUIET_S``, a flood every
        ``report_every_s``; never two lines within ``report_every_s``."""
        pending, last_report, first = 0, float("-inf"), 0.0
        while True:
            try:
                ready, _, _ = select.select([self._read], [], [], _QUIET_S)
                chunk = os.read(self._read, 1 << 16) if ready else None
            except OSError:
                break
            now = time.monotonic()
            if chunk is not None:
                if not chunk:  # every write end closed: restored
                    break
                with self._lock:
                    self.dropped += len(chunk)
                if not pending:
                    first = now
                pending += len(chunk)
                if now - first < self._every or now - last_report < self._every:
                    continue  # a flood is reported every report_every_s
            elif not pending or now - last_report < self._every:
                continue
            self._report(pending)
            pending, last_report = 0, now
        if pending:
            self._report(pending)
        os.close(self._read)

    def restore(self) -> None:
        """Descriptor 2 and ``sys.stderr`` as they were; the thread reports what is left."""
        self._python.flush()
        os.dup2(self._saved, 2)  # the pipe's last write end closes: the thread ends
        _move_handlers(self._python, self._old)
        sys.stderr = self._old
        self._thread.join(5)
        self._python.close()  # closes the duplicate too


def divert_native_stderr(
    *, report: Callable[[int], None] | None = None, report_every_s: float = REPORT_EVERY_S
) -> Diverted | None:
    """Divert descriptor 2 (see the module); None when it cannot be (no descriptor 2, or
    ``sys.stderr`` is not on it: the caller redirected it already)."""
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return None
        os.fstat(2)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return Diverted(report=report, report_every_s=report_every_s)


def _text_stream(fd: int) -> TextIO:
    """A line-buffered text stream on ``fd``, encoded as ``sys.stderr`` is."""
    return open(
        fd,
        "w",
        buffering=1,
        encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
        errors="backslashreplace",
        closefd=True,
    )


def _move_handlers(old: object, new: TextIO) -> None:
    """Point every logging stream handler that writes to ``old`` at ``new``."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)


def _log_native(count: int) -> None:
    _log.warning(
        "a native library (onnxruntime, tokenizers, ...) wrote %d bytes to stderr; they are "
        "not shown, since they may quote a request (docs/server.md#native-stderr)",
        count,
    )
