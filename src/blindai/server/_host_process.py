"""The server's side of one model host process (``model_host``): start it, hand each reply to
the run waiting for it, and tell why it ended.

One :class:`Host` is one started child (``blindai.server._model_host_worker``) and the server's
end of its socket. A reader thread reads every reply and wakes the run that waits for it; when
the socket ends (the child crashed, or was killed) it fails the runs still waiting: with
:class:`Crashed` (the signal), or ServerBusy when the server killed the child to stop a run.
What a child answers is not trusted: frames are checked (``_host_wire``), and only the errors
the server's own sessions raise are taken from it (:func:`error_from`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors

from blindai.errors import InferenceFailed, InvalidInput, ModelNotReady, ServerBusy, ServerError
from blindai.server._host_wire import Frame, FrameError, read_frame
from blindai.server.runtime import _ORT_TYPES, TensorSpec

__all__ = [
    "POLL_S",
    "RECENT_S",
    "START_TIMEOUT_S",
    "Crashed",
    "Host",
    "Pending",
    "Spawned",
    "StartStopped",
    "child_env",
    "described",
    "discard",
    "error_from",
    "spawn",
    "spec_from",
]

_log = logging.getLogger("blindai.server")

POLL_S = 0.02
"""How often a waiting run looks at its ``RunOptions.terminate`` (and a reader at closing)."""
RECENT_S = 1.0
"""A host that ends by itself with no run in flight is charged to the keys of the runs it
answered within this many seconds before (one whose values corrupted its heap ends it once its
answer is sent and its buffers freed)."""
START_TIMEOUT_S = 120.0
"""Longest a child may take to load its model (it compiled before, in the compile guard)."""


class Crashed(Exception):
    """The host ended while runs were in flight: why, in words, how many runs were in flight
    then (``runs``: more than one, and none of them can be told it crashed the host), and the
    keys that had sent them (``keys``)."""

    runs: int = 1
    keys: frozenset[str] = frozenset()


class _NotTaken(Exception):
    """The child ended before it took its setup and the model's descriptor."""


_UNREAD = (BrokenPipeError, ConnectionResetError)
"""How a child's socket tells that it ended before it took the setup: closed before the send
(EPIPE), or with the setup still unread in it (ECONNRESET: Linux resets a stream socket's peer
when it is closed with data unread). The setup is the only frame sent to a child before its
answer, and its first read takes it whole: once taken, the child's end reads as the end of the
stream (or of a frame), never as a reset."""


class StartStopped(Exception):
    """A start given up because its ``stop()`` became true (the model was released, the server
    is closing, or the upload's client went away): its child was killed."""


@dataclass
class Pending:
    """A run waiting for its answer: the reply's frame, or why none will come."""

    done: threading.Event = field(default_factory=threading.Event)
    frame: Frame | None = None
    failure: BaseException | None = None
    caller: str | None = None
    """The key id that sent the run (None: an open server's caller)."""


class Host:
    """One started child: its process, socket, and the runs waiting for an answer."""

    def __init__(self, process: subprocess.Popen[bytes], channel: socket.socket) -> None:
        self.process = process
        self.channel = channel
        self.ids = itertools.count()
        self.lock = threading.Lock()
        """Held to write a frame (and to close the socket)."""
        self.pending: dict[int, Pending] = {}
        self.pending_lock = threading.Lock()
        """Held to add, answer or fail pending runs, and to mark the host closing."""
        self.closing = False
        self.killed_for: str | None = None
        """Why the server killed it (None: it ended on its own, a crash)."""
        self.counted = False
        """Whether its end was counted among the model's crashes."""
        self.answered: deque[tuple[float, str]] = deque(maxlen=64)
        """When the last runs sent with a key were answered, and their keys."""

    @property
    def alive(self) -> bool:
        """Whether the child runs and is not being stopped."""
        return not self.closing and self.process.poll() is None

    @classmethod
    def start(
        cls,
        setup: dict[str, Any],
        fd: int,
        *,
        max_bytes: int,
        stop: Callable[[], bool] = lambda: False,
        spawned: Spawned | None = None,
        handed: Callable[[], object] = lambda: None,
        ended_alone: Callable[[Host, Crashed], object] = lambda host, why: None,
    ) -> tuple[Host, dict[str, Any]]:
        """Start a child (``spawned``: one started before, which has received nothing yet),
        send it ``setup`` and the model's descriptor (then call ``handed()``), wait for its
        answer (the model's specs), and start the thread that reads its replies. ModelNotReady
        when it did not start; the load's own error when the model failed; StartStopped, its
        child killed, once ``stop()`` is true (looked at every ``POLL_S`` while it loads).
        ``ended_alone(host, why)``: called by the reader thread once the child ended by itself
        with no run in flight (see :meth:`serve_replies`).

        ``spawned`` ended before it took the model (killed as it was handed over: the OOM
        killer, an operator; the spare, or with ``--no-spare-processes`` the child just forked
        for this start): nothing of the model reached it, so that is no failure of the model's
        (a restart's would count as its crash); a new child is started instead, once.
        """
        try:
            host, answer = cls._loaded(
                setup, fd, spawned or spawn(), max_bytes, stop, handed, spare=spawned is not None
            )
        except _NotTaken:
            _log.warning("model host: a process ended before it took its model; starting another")
            host, answer = cls._loaded(setup, fd, spawn(), max_bytes, stop, handed, spare=False)
        threading.Thread(
            target=host.serve_replies,
            args=(max_bytes, ended_alone),
            name="blindai-model-host",
            daemon=True,
        ).start()
        return host, answer

    @classmethod
    def _loaded(
        cls,
        setup: dict[str, Any],
        fd: int,
        spawned: Spawned,
        max_bytes: int,
        stop: Callable[[], bool],
        handed: Callable[[], object],
        *,
        spare: bool,
    ) -> tuple[Host, dict[str, Any]]:
        """The host of child ``spawned``, sent ``setup`` and the model, and its answer (see
        :meth:`start`). ``spare``: a child that ended with them unread raises _NotTaken."""
        host = cls(*spawned)
        channel = host.channel
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            socket.send_fds(channel, [json.dumps(setup).encode()], [fd])
            handed()
            channel.settimeout(POLL_S)
            frame = read_frame(
                channel,
                max_bytes=max_bytes,
                closing=lambda: stop() or time.monotonic() > deadline,
            )
            if frame is None:
                host.stop("")
                raise host.ended()
            if not frame.header.get("ok"):
                raise error_from(frame.header.get("error"))
        except (OSError, FrameError, Crashed) as exc:
            host.stop("")
            channel.close()
            if stop():
                raise StartStopped("the start was stopped") from None
            if spare and isinstance(exc, _UNREAD):
                raise _NotTaken from None
            why = str(exc) if isinstance(exc, Crashed) else type(exc).__name__
            if time.monotonic() > deadline:
                why = f"no answer within {START_TIMEOUT_S:g} s"
            raise ModelNotReady(f"the model's process could not be started ({why})") from None
        except BaseException:
            host.stop("")
            channel.close()
            raise
        return host, frame.header

    def add(self, run_id: int, waiting: Pending) -> bool:
        """Register a run (False when the host is ending: none will be answered)."""
        with self.pending_lock:
            if self.closing:
                return False
            self.pending[run_id] = waiting
            return True

    def forget(self, run_id: int) -> None:
        """Stop waiting for run ``run_id`` (its answer, if one comes, is dropped)."""
        with self.pending_lock:
            self.pending.pop(run_id, None)

    @property
    def idle(self) -> bool:
        """Whether no run waits for an answer."""
        with self.pending_lock:
            return not self.pending

    def serve_replies(
        self,
        max_bytes: int,
        ended_alone: Callable[[Host, Crashed], object] = lambda host, why: None,
    ) -> None:
        """In the reader thread: hand each reply to its run; at the end, fail the rest and
        close the socket (only this thread reads it, and only it closes it). A child that
        ended by itself (not stopped by the server) with no run in flight, which no run can
        report (a kernel that corrupted the heap aborts once its answer is sent and its
        buffers freed), is told to ``ended_alone(self, why)``, ``why.keys`` those of the runs
        it answered within ``RECENT_S`` before."""
        why: BaseException | None = None
        try:
            while (frame := self._next(max_bytes)) is not None:
                with self.pending_lock:
                    waiting = self.pending.pop(int(frame.header.get("id", -1)), None)
                if waiting is not None:
                    if waiting.caller is not None:
                        self.answered.append((time.monotonic(), waiting.caller))
                    waiting.frame = frame
                    waiting.done.set()
        except Exception as exc:
            # the child ended mid-frame (a crash while it wrote, or with our frame unread:
            # ECONNRESET), or it answered what breaks the format (it is not trusted): killed
            if not self.closing and not self._ends_alone():
                why = Crashed(f"an unreadable answer ({type(exc).__name__})")
        by_us = self.closing  # stopped by the server: an unload, a stopped run, its end
        self.stop("")
        why = why or self.ended()
        with self.pending_lock:
            self.closing = True
            left, self.pending = list(self.pending.values()), {}
        if isinstance(why, Crashed):
            why.runs = len(left)
            why.keys = frozenset(w.caller for w in left if w.caller is not None)
        for waiting in left:
            waiting.failure = why
            waiting.done.set()
        with self.lock:
            self.channel.close()
        if isinstance(why, Crashed) and not left and not by_us:
            now = time.monotonic()
            why.keys = frozenset(key for at, key in self.answered if now - at <= RECENT_S)
            ended_alone(self, why)

    def _ends_alone(self) -> bool:
        """Whether the child exits by itself within half a second (it crashed)."""
        try:
            self.process.wait(0.5)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _next(self, max_bytes: int) -> Frame | None:
        return read_frame(self.channel, max_bytes=max_bytes, closing=lambda: self.closing)

    def ended(self) -> BaseException:
        """Why the child ended (it has ended, or been killed): Crashed, or ServerBusy."""
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - stop() killed it
            return Crashed("it closed its socket")
        if self.killed_for is not None:
            return ServerBusy(self.killed_for)
        if code < 0:
            return Crashed(signal.Signals(-code).name)
        return Crashed(f"exit status {code}")

    def stop(self, reason: str) -> None:
        """Kill the child and reap it; its runs in flight then fail with ``reason``
        (ServerBusy) when one is given (the reader thread fails them and closes the socket)."""
        if reason and self.killed_for is None and self.process.poll() is None:
            self.killed_for = reason
        self.closing = True
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
            pass


Spawned = tuple[subprocess.Popen[bytes], socket.socket]
"""A started child and the server's end of its socket."""


def spawn(
    module: str = "blindai.server._model_host_worker", env: dict[str, str] | None = None
) -> Spawned:
    """A started child and the server's end of its socket: it imports onnxruntime, then waits
    for its first frame (the setup and the model's descriptor). ``module``: another child's
    (a tokenizer's: ``tokenizer_host``), ``env`` its environment (default :func:`child_env`).

    The child starts in a private directory that is removed as soon as it has started: a
    missed external reference finds nothing, nothing can be written there, and nothing is left
    behind when the server is killed (a directory the hosts shared was, until an orderly end).
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    directory = tempfile.mkdtemp(prefix="blindai-host-")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=theirs.fileno(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=directory,
            env=child_env() if env is None else env,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        os.rmdir(directory)  # the child's working directory from now on: a removed one
    return process, ours


def discard(spawned: Spawned) -> None:
    """Kill a child that was never handed a model, reap it, and close its socket."""
    process, channel = spawned
    if process.poll() is None:
        process.kill()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        pass
    channel.close()


def child_env() -> dict[str, str]:
    """The child's environment: only what finds Python and its packages (no BLINDAI_ or
    onnxruntime variables)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG", "HOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def spec_from(raw: Any) -> TensorSpec:
    """A spec from a host's answer: its dtype from its ONNX type, as OnnxModel gives it."""
    onnx_type = str(raw["onnx_type"])
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in raw["shape"])
    symbols = tuple(s if isinstance(s, str) and s else None for s in raw["symbols"])
    return TensorSpec(str(raw["name"]), _ORT_TYPES.get(onnx_type), shape, onnx_type, symbols)


def described(
    answer: Mapping[str, Any],
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, str]]:
    """The model's inputs, outputs and metadata properties, as its host's answer to its start
    describes them; ModelNotReady for an answer no host of ours gives (a host is not trusted:
    a hostile model may have taken it over while it loaded)."""
    try:
        inputs = tuple(spec_from(s) for s in answer["inputs"])
        outputs = tuple(spec_from(s) for s in answer["outputs"])
        metadata = {str(k): str(v) for k, v in dict(answer.get("metadata") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelNotReady("the model's process described the model unreadably") from None
    return inputs, outputs, metadata


_OURS: dict[str, type[ServerError]] = {
    cls.__name__: cls for cls in (InferenceFailed, InvalidInput, ModelNotReady)
}
"""The errors a host may report as ours (those OnnxModel raises): a host a hostile model took
over cannot make the server answer another status (401, 403, ...)."""
_MESSAGE_MAX = 2000


def error_from(error: Any) -> Exception:
    """The exception a host described: one of ours by class, onnxruntime's by type (with the
    text of an allocation failure only, which ``run_guard.failure_for`` reads)."""
    if not isinstance(error, dict):
        return RuntimeError("")
    name = str(error.get("type", ""))
    message = str(error.get("message", ""))
    if error.get("kind") == "blindai":  # what OnnxModel raises itself, and no other class
        return _OURS.get(name, InferenceFailed)(message[:_MESSAGE_MAX])
    found = getattr(_ort_errors, name, None)
    if (
        isinstance(found, type)
        and issubclass(found, Exception)
        and found.__module__ == _ort_errors.__name__
    ):
        return found(message[:_MESSAGE_MAX])
    return RuntimeError(message[:_MESSAGE_MAX])
