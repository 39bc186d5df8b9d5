"""Compile guard: a model is checked and compiled once in a limited child process first.

onnxruntime's session creation cannot be interrupted and its memory cannot be capped inside
the server: a few megabytes of nested ``If`` nodes or constant-folded shapes can take
gigabytes and minutes. So every upload is first compiled by a child process
(``blindai.server._compile_worker``) whose address space is capped (RLIMIT_AS: its start-up
size, five times the model, and ``memory_bytes``) and which is killed after ``timeout_s``,
counted from the job it is sent once it said it is set up (its own start, when no spare was
ready, is bounded apart: :data:`START_TIMEOUT_S`).
Only a model that compiled there is compiled by the server, with the same options, so the
server's own compilation is bounded by what the child measured.

The child also runs the admission checks (``blindai.server.admission``): parsing a large
protobuf and shape inference cost memory too, and they happen under the same limits. One
child is kept started ahead (imports done) so that an upload does not wait for Python and
onnxruntime to load; each child serves one model and exits. The next one is started by the
caller once it has done with the upload's compilation (:meth:`CompileGuard.replenish`): started
while the child worked, its start-up (about 0.35 s of CPU) took a core from the check and the
server's own compilation on a small machine.

The model reaches the child as a read-only descriptor of the server's file of it
(:class:`~blindai.server.model_file.ModelFile`, sealed when in memory), passed over a
``SOCK_SEQPACKET`` socket pair with the job: no copy of it is made in the server for the
child, and none goes through a pipe. A model given as bytes is put in such a file first.

Inside Gramine-SGX a child process is a new enclave (slow, and the manifest must allow it);
there, ``enabled=False`` runs the admission checks in the server's thread instead, without the
time and memory guard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from typing import Any

from blindai._documents import loads_json
from blindai.errors import InvalidInput
from blindai.server._compile_worker import MEMORY_EXIT, READY
from blindai.server.abandon import Abandon
from blindai.server.admission import AdmissionLimits, check_model, parse_model
from blindai.server.model_file import ModelFile

__all__ = ["START_TIMEOUT_S", "CompileGuard", "CompileLimits", "CompileReport"]

_log = logging.getLogger("blindai.server")
START_TIMEOUT_S = 60.0
"""How long a child may take to start (its interpreter, onnx and onnxruntime, before it is sent
a model): apart from ``--compile-timeout``, which counts from the job."""
_CRASHES = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})
"""Signals of a child that crashed (a fault), not one the allocator or the kernel stopped."""


@dataclass(frozen=True, kw_only=True)
class CompileLimits:
    """What one upload may cost to check and compile (the server builds them from its settings)."""

    timeout_s: float
    """Wall-clock time for parsing, checks and onnxruntime's session creation."""
    memory_bytes: int
    """Address space beyond the child's start-up size and five times the model."""
    admission: AdmissionLimits
    """The model's bounds (external data, nodes, depth, static shapes)."""
    intra_op_threads: int = 0
    """onnxruntime's intra-op threads while compiling (the server's setting; 0: all cores)."""


@dataclass(frozen=True)
class CompileReport:
    """What the child measured while compiling (None when the guard is off)."""

    seconds: float | None
    peak_bytes: int | None
    empty_unsafe: tuple[str, ...] = ()
    """The model's operators that end the process on an empty tensor
    (:class:`~blindai.server.admission.Admitted`)."""


@dataclass(frozen=True)
class _Child:
    """A started child and the parent's end of its socket pair."""

    process: subprocess.Popen[bytes]
    channel: socket.socket


class CompileGuard:
    """Runs each model's checks and a trial compilation in a limited, killable child process."""

    def __init__(self, *, limits: CompileLimits, enabled: bool = True, spare: bool = True) -> None:
        self.limits = limits
        self.enabled = enabled
        self.spare = spare
        """Keep a child started ahead for the next check (``--spare-processes``)."""
        self._lock = threading.Lock()
        self._spare: _Child | None = None
        self._closed = False
        self._dir = tempfile.TemporaryDirectory(prefix="blindai-compile-")

    def _spawn(self) -> _Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "blindai.server._compile_worker"],
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=self._dir.name,  # empty: even a missed external reference finds nothing
                env=_child_env(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Child(process, ours)

    def _take(self) -> _Child:
        """The started spare if it is still alive, else a new child. The next spare is the
        caller's to start once its compile is done (:meth:`replenish`)."""
        with self._lock:
            if self._closed:
                raise InvalidInput("the server is shutting down")
            child, self._spare = self._spare, None
        if child is not None and child.process.poll() is None:
            return child
        if child is not None:
            _discard(child)
        return self._spawn()

    def warm(self) -> None:
        """Start the spare child now (at server start), so the first upload finds it ready."""
        if self.enabled and self.spare:
            with self._lock:
                if self._spare is None and not self._closed:
                    self._spare = self._spawn()

    def replenish(self) -> None:
        """Start the next spare unless one is there (a failure here is logged: it is the next
        upload's to report). Called once an upload's checks and compilations are done, not
        while they run: the spare's start-up would compete with them for the CPU."""
        try:
            self.warm()
        except OSError as exc:
            _log.warning("compile guard: the next child could not be started (%s)", exc)

    def check(
        self, model: bytes | ModelFile, *, optimize: bool, abandon: Abandon | None = None
    ) -> CompileReport:
        """Admission checks and a trial compile; InvalidInput (400) or InferenceFailed (400).

        ``model``: its bytes, or the server's (complete) file of them, which the child reads
        through a read-only descriptor. ``abandon`` set (the client went away) kills the child
        and raises ClientGone. The child is used up: call :meth:`replenish` once done.
        """
        if not self.enabled:
            data = model.read() if isinstance(model, ModelFile) else model
            admitted = check_model(parse_model(data), limits=self.limits.admission)
            return CompileReport(None, None, admitted.empty_unsafe)
        if isinstance(model, ModelFile):
            return self._check_file(model, optimize, abandon or Abandon())
        file = ModelFile.holding(model)
        try:
            return self._check_file(file, optimize, abandon or Abandon())
        finally:
            file.close()

    def _check_file(self, model: ModelFile, optimize: bool, abandon: Abandon) -> CompileReport:
        job = {
            "size": model.size,
            "optimize": optimize,
            "memory_bytes": self.limits.memory_bytes,
            "intra_op_threads": self.limits.intra_op_threads,
            "admission": asdict(self.limits.admission),
        }
        child = self._take()
        try:
            with abandon.stopping(child.process.kill):
                _wait_ready(child)
            reader = model.reader()
            try:
                socket.send_fds(child.channel, [json.dumps(job).encode()], [reader])
            finally:
                os.close(reader)
            with abandon.stopping(child.process.kill):
                out, _ = child.process.communicate(timeout=self.limits.timeout_s)
            abandon.check()  # killed because the client went away: not the model's fault
        except subprocess.TimeoutExpired:
            _discard(child)
            raise InvalidInput(
                f"compiling the model took longer than this server allows "
                f"({self.limits.timeout_s:g} s, --compile-timeout)"
            ) from None
        except OSError as exc:  # the child did not start, or died before it took the job
            _discard(child)
            abandon.check()  # killed as it started because the client went away
            _log.error("compile check could not start (%s)", type(exc).__name__)
            raise InvalidInput("the model could not be checked") from None
        except BaseException:
            _discard(child)
            raise
        child.channel.close()
        return _report(child.process.returncode, out, self.limits)

    def close(self) -> None:
        """Stop the spare child and remove the private directory."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            _discard(spare)
        self._dir.cleanup()


def _wait_ready(child: _Child) -> None:
    """Wait (at most START_TIMEOUT_S) for the child to say it is set up (a spare said so long
    ago); OSError when it ended first or took too long (``TimeoutError`` is one)."""
    child.channel.settimeout(START_TIMEOUT_S)
    try:
        said = child.channel.recv(len(READY))
    finally:
        child.channel.settimeout(None)
    if said != READY:
        raise ConnectionResetError("the compile child ended as it started")


def _discard(child: _Child) -> None:
    """Kill a child, reap it, and close its pipe and socket."""
    child.process.kill()
    child.channel.close()
    if child.process.stdout is not None:
        with contextlib.suppress(OSError):
            child.process.stdout.close()
    child.process.wait()


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG", "HOME")}
    # one malloc arena: RLIMIT_AS counts reserved address space, and every other arena, made
    # by whichever onnxruntime pool thread allocated first, reserves 64 MiB (128 MiB while it
    # is made), so whether a compile fit its budget depended on a race between threads
    env["MALLOC_ARENA_MAX"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _report(returncode: int, out: bytes, limits: CompileLimits) -> CompileReport:
    memory = (
        f"compiling the model needs more memory than this server allows "
        f"({limits.memory_bytes} bytes beyond five times the model, --compile-memory)"
    )
    try:
        answer: dict[str, Any] = loads_json(out.splitlines()[-1]) if out.strip() else {}
    except ValueError:
        answer = {}
    if answer.get("ok") is True:
        unsafe = answer.get("empty_unsafe", [])
        return CompileReport(
            float(answer["seconds"]),
            int(answer["peak_bytes"]),
            tuple(str(op) for op in unsafe) if isinstance(unsafe, list) else (),
        )
    kind = answer.get("kind")
    if kind == "admission":
        raise InvalidInput(str(answer.get("message", "the model was refused")))
    if kind == "onnxruntime":
        raise InvalidInput(
            "the model could not be loaded by onnxruntime (not a valid ONNX model, or it "
            "uses operators this runtime lacks)"
        )
    if kind is None and returncode < 0 and -returncode in _CRASHES:
        crash = signal.Signals(-returncode).name
        _log.warning("compile check: onnxruntime crashed on an upload (%s); refused", crash)
        raise InvalidInput(
            f"onnxruntime crashed while compiling the model ({crash}): this server cannot "
            "serve it (the model crashes onnxruntime, or it ran out of memory where "
            "onnxruntime does not check; --compile-memory)"
        )
    if kind == "memory" or returncode < 0 or returncode == MEMORY_EXIT:
        # a signal: the allocator aborted or the kernel killed it, in practice memory
        _log.warning("compile check: refused for memory (%s)", _how_ended(kind, returncode))
        raise InvalidInput(memory)
    _log.error("compile check failed unexpectedly (exit status %d)", returncode)
    raise InvalidInput("the model could not be checked")


def _how_ended(kind: object, returncode: int) -> str:
    """How a check read as needing more memory ended, for the log (no word of the model)."""
    if kind == "memory":
        return "the child said so"
    if returncode < 0:
        try:
            return f"the child ended on {signal.Signals(-returncode).name}"
        except ValueError:
            return f"the child ended on signal {-returncode}"
    return f"the child ran out of memory (exit status {returncode})"
