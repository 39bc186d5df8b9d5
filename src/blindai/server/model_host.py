"""Process-isolated runs (``--run-isolation process``): each model's session in a child process.

A run executes onnxruntime's kernels on a request's values; a kernel that crashes on them
(SIGSEGV, SIGABRT, SIGFPE) ends the process it runs in. In the server's process that is every
tenant's runs; admission refuses the crashes that are known (``unsafe_kernels``), not those
nobody has found. :class:`HostedModel` has the interface of
:class:`~blindai.server.runtime.OnnxModel` but keeps the session in a child, the model's host
(``blindai.server._model_host_worker``), built there exactly as the server would build it
(``runtime.session_options``, the arena capped by ``run_guard.cap_arena``):

- **a crash** fails the runs in flight on that model only (InferenceFailed, 422, naming the
  signal); the server goes on serving every other model, and the host is started again (the
  model loaded again) at once, in the background, so that the next request finds it running
  (:meth:`ModelHosts.restart_soon`: one such start at a time for the whole server, one per
  crash, none for a model refused as below), and it is handed the spare (below). A model
  whose host crashed ``CRASH_LIMIT`` times
  within the last ``CRASH_WINDOW_S`` is not started again until the oldest of them leaves the
  window (or it is unloaded and loaded again): its runs answer ModelNotReady (503) meanwhile,
  so that a tenant cannot keep the server busy starting processes; not for good, since a public
  model is run by every key: another tenant's crashes would stop it for its owner's clients
  until the owner noticed. Each crash is also charged to the keys whose runs were in flight:
  a key charged ``KEY_CRASH_LIMIT`` times within the window has its runs of that model refused
  (PermissionDenied, 403) while those charges lie within it, and every other key is served. A
  tenant with one key can then end the model's process at most ``KEY_CRASH_LIMIT`` times a
  window (so it cannot keep a public model stopped for the others), and a key that was in
  flight beside it when it did is charged too (its runs answer ServerBusy: it cannot be told
  apart from the culprit);
- **a host that ends with no run in flight** (a kernel that corrupted the heap aborts once its
  answer is sent and its buffers freed) counts as a crash too, charged to the keys whose runs
  it answered within the second before (``RECENT_S``), and is started again in the background
  the same way (within the same limits);
- **a run stopped** (``RunOptions.terminate``: the run timeout, the client gone) is cancelled in
  the host; a host that has not answered ``TERMINATE_GRACE_S`` later (one long kernel) is
  killed and started again in the background: the run timeout bounds a single kernel too.
  The other runs of that model in flight then answer ServerBusy (503, try again);
- **memory**: each host has its own arena capped at ``memory_bytes`` (``--max-run-memory``
  applies per model, not to all of them together);
- **the spare**: one child started ahead for the whole server (:meth:`ModelHosts.warm`), its
  interpreter started and onnxruntime imported, which has received nothing (no tenant's data,
  no setting): each start (an upload's, a restart's) is handed it, then starts the next one,
  so that a start is the session's build alone (7 ms instead of 0.3 s for a small model). One
  spare at most, one started per start: a start forks no more processes than before;
- unloading the model (or deleting it) stops its host once its runs in flight are over, and
  gives up a start under way (its child killed within ``POLL_S``); the server's end
  (:meth:`ModelHosts.close`) stops every host, every start and the spare; a host (or the spare)
  whose server died sees its socket end and exits.

The model reaches the host as a read-only descriptor of a :class:`~blindai.server.model_file.
ModelFile` (sealed when in memory; a model given as bytes is put in one), never as a path;
requests and replies cross the socket as raw buffers with a JSON header (``_host_wire``: no
pickle, so a host taken over by a hostile model cannot run code in the server). Nothing of the
requests or the model is logged. Cost: every request's tensors are copied to the host and its
outputs back (docs/performance.md).

Not for Gramine-SGX: there a child process is a new enclave (slow, and its manifest must allow
it); this mode is for confidential VMs (TDX, SEV-SNP) and simulation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from blindai.errors import (
    BlindAIError,
    InferenceFailed,
    ModelNotFound,
    ModelNotReady,
    PermissionDenied,
    ServerBusy,
)
from blindai.server._host_process import (
    POLL_S,
    Crashed,
    Host,
    Pending,
    StartStopped,
    described,
    error_from,
)
from blindai.server._host_starts import Restarter, Spare
from blindai.server._host_wire import (
    Frame,
    FrameError,
    Stopped,
    decode_arrays,
    encode_arrays,
    write_frame,
)
from blindai.server._inline import InlineGate
from blindai.server.model_file import ModelFile
from blindai.server.run_guard import HostArenaError

__all__ = [
    "CRASH_LIMIT",
    "CRASH_WINDOW_S",
    "KEY_CRASH_LIMIT",
    "TERMINATE_GRACE_S",
    "HostLimits",
    "HostedModel",
    "ModelHosts",
]

_log = logging.getLogger("blindai.server")

CRASH_LIMIT = 5
"""Crashes of one model's host within ``CRASH_WINDOW_S`` after which it is not started again
while they lie within that window."""
CRASH_WINDOW_S = 60.0
"""The window, in seconds, of ``CRASH_LIMIT`` and ``KEY_CRASH_LIMIT``."""
KEY_CRASH_LIMIT = 2
"""Crashes charged to one key (its runs were in flight) within ``CRASH_WINDOW_S`` after which
that key's runs of the model are refused while they lie within that window."""
TERMINATE_GRACE_S = 0.25
"""How long a host has to stop a run it was told to stop before it is killed."""
_STOPPED_WITH = (
    "another run of this model was stopped (its time was up, or its client left) and the "
    "model's process with it; try again"
)


@dataclass(frozen=True, kw_only=True)
class HostLimits:
    """What every model host is given (the server builds them from its settings)."""

    memory_bytes: int
    """The host's arena cap (``--max-run-memory``, for this model alone)."""
    max_reply_bytes: int
    """Largest answer a host may send (its outputs' bytes), beyond which it is killed."""
    max_map_bytes: int = 1 << 30
    """``--max-string-memory``: the most a run's ZipMap maps the host makes may take
    (``blindai.server._zipmap``)."""
    keep_freed_memory: int = 0
    """``--keep-freed-memory`` for the host (``blindai._malloc``): its request and reply
    buffers are then reused from its heap, not page-faulted in anew for each request."""
    crash_limit: int = CRASH_LIMIT
    """Crashes within ``crash_window_s`` after which a model is not started again (until the
    oldest of them leaves the window)."""
    crash_window_s: float = CRASH_WINDOW_S
    """The window of ``crash_limit`` and ``key_crash_limit``, in seconds."""
    key_crash_limit: int = KEY_CRASH_LIMIT
    """Crashes charged to one key within ``crash_window_s`` after which its runs of the model
    are refused (until the oldest of them leaves the window)."""
    terminate_grace_s: float = TERMINATE_GRACE_S
    """How long a host has to stop a run it was told to stop before it is killed."""


class ModelHosts:
    """Starts model hosts and stops them all at the server's end (one per data plane)."""

    def __init__(
        self, *, limits: HostLimits, ended: Callable[[str], None] = lambda why: None
    ) -> None:
        self.limits = limits
        self.ended = ended
        """Called with ``"crash"`` for each host that ended during runs, ``"stopped"`` for
        each killed to stop a run (the server counts them: ``blindai_model_host_ends``)."""
        self._lock = threading.Lock()
        self._models: set[HostedModel] = set()
        self._closed = False
        self._spare = Spare()
        """One child started ahead, handed to the next start (``_host_starts``)."""
        self._restarter = Restarter()
        """The one thread starting crashed models' hosts again (``_host_starts``)."""

    def warm(self) -> None:
        """Start the spare now (at server start), so that the first start finds it ready."""
        self._spare.warm()

    @property
    def spare_pid(self) -> int | None:
        """The process id of the spare (None: there is none now)."""
        return self._spare.pid

    def load(
        self,
        model: bytes | ModelFile,
        *,
        optimize: bool,
        intra_op_threads: int,
        stop: Callable[[], bool] = lambda: False,
    ) -> HostedModel:
        """A model whose session lives in a host of its own, started now (the model's load
        errors as OnnxModel raises them: InvalidInput, or onnxruntime's, as RuntimeError).
        ``stop()`` true (an upload's client gone) or the server's end while it starts: its
        child is killed within ``POLL_S`` and the load fails with ModelNotReady."""
        with self._lock:
            if self._closed:
                raise ModelNotReady("the server is shutting down")
        hosted = HostedModel(
            model, optimize=optimize, intra_op_threads=intra_op_threads, hosts=self, stop=stop
        )
        with self._lock:
            closed = self._closed
            if not closed:
                self._models.add(hosted)
        if closed:
            hosted.unload()
            raise ModelNotReady("the server is shutting down")
        return hosted

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (no host starts any more)."""
        return self._closed

    def restart_soon(self, model: HostedModel) -> None:
        """Start ``model``'s host again in the background, ahead of its next request (after a
        crash): queued once, started by the one restarter thread, which starts nothing for a
        model refused by its crash limit, released, or already started by a request."""
        self._restarter.soon(model)

    def _forget(self, model: HostedModel) -> None:
        """``model`` was released and its host stopped: nothing of it is left to stop."""
        with self._lock:
            self._models.discard(model)
        self._restarter.forget(model)

    def _unqueue(self, model: HostedModel) -> None:
        """``model`` was released: it is not started again (its host, running its last runs,
        is still stopped at the server's end)."""
        self._restarter.forget(model)

    @property
    def count(self) -> int:
        """Models with a host (started or to be started again)."""
        with self._lock:
            return len(self._models)

    def close(self) -> None:
        """Stop every host now (the server's end): a start under way is given up, its child
        killed, and the spare too, before this returns."""
        with self._lock:
            self._closed = True
            models, self._models = list(self._models), set()
        for model in models:
            model.stop()
        self._restarter.close()  # its start under way gives up within POLL_S
        self._spare.close()


class HostedModel:
    """One model whose session lives in a child process (see the module): the interface the
    data plane uses of :class:`~blindai.server.runtime.OnnxModel`. ``predict`` is thread-safe:
    runs of one model share its host, each answered by its id."""

    def __init__(
        self,
        model: bytes | ModelFile,
        *,
        optimize: bool,
        intra_op_threads: int,
        hosts: ModelHosts,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self._hosts = hosts
        self._limits = hosts.limits
        self._setup = {
            "optimize": optimize,
            "intra_op_threads": intra_op_threads,
            "memory_bytes": self._limits.memory_bytes,
            "keep_freed_memory": self._limits.keep_freed_memory,
            "max_map_bytes": self._limits.max_map_bytes,
        }
        self._file = model if isinstance(model, ModelFile) else ModelFile.holding(model)
        self._owned = not isinstance(model, ModelFile)
        self._fd: int | None = self._file.reader()  # ours: the model's file may be closed
        self._start_lock = threading.Lock()
        """Held while a host starts (one start at a time) and to count crashes."""
        self._file_lock = threading.Lock()
        """Held, briefly, to copy or close the model's descriptor (an unload, on the event
        loop, never waits for a start)."""
        self._host: Host | None = None
        self._crashes: deque[float] = deque()
        self._keys_lock = threading.Lock()
        """Held to charge crashes to keys and to read their charges (never while starting)."""
        self._key_crashes: dict[str, deque[float]] = {}
        """The times of the crashes charged to each key, within the window."""
        self._released = False
        self._loaded = False
        """Whether the first start described the model (until then, a host's end is the
        load's to report, not a crash to start again after)."""
        self.inline: InlineGate | None = None
        """Always None: a hosted model never runs on the event loop."""
        self.empty_unsafe: tuple[str, ...] = ()
        """Set by the data plane, as for OnnxModel."""
        try:
            self.inputs, self.outputs, self.metadata = described(self._start(stop))
        except StartStopped:
            self._close_file()
            raise ModelNotReady("the model's load was stopped") from None
        except BaseException:
            host = self._host
            if host is not None:  # it started, and described the model in a way no model is
                host.stop("")
            self._close_file()
            raise
        self._output_names = [o.name for o in self.outputs]
        self._loaded = True

    @property
    def pid(self) -> int | None:
        """The process id of the model's host (None when none is running)."""
        host = self._host
        return host.process.pid if host is not None and host.alive else None

    def _close_file(self) -> None:
        with self._file_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._owned:
                self._file.close()

    def _start(self, stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Start a host, send it the model, and wait for its specs (raises the load's error).
        The start is given up (StartStopped, its child killed) once the model is released, the
        server closing, or ``stop()`` true."""
        with self._file_lock:  # a copy: an unload meanwhile closes ours, never this one
            fd = None if self._fd is None else os.dup(self._fd)
        if fd is None:
            raise ModelNotFound("the model was deleted or unloaded before this request ran")
        try:
            host, answer = Host.start(
                self._setup,
                fd,
                max_bytes=self._limits.max_reply_bytes + (1 << 20),
                stop=lambda: self._released or self._hosts.closed or stop(),
                spawned=self._hosts._spare.take(),
                handed=self._hosts._spare.replenish,
                ended_alone=self._ended_alone,
            )
        finally:
            os.close(fd)
        self._host = host
        return answer

    def _ended_alone(self, host: Host, why: Crashed) -> None:
        """In the host's reader thread: the host ended by itself with no run in flight (a
        kernel that corrupted the heap aborts once its answer is sent). A crash all the same:
        counted, and charged to the keys whose runs it answered just before (``why.keys``),
        its successor started in the background below the crash limit; uncounted, a model
        ending its host after each answer was started again by each next request without
        bound."""
        if self._released or not self._loaded:
            return
        with self._start_lock:
            again = self._count_crash(host, f"{why}, with no run in flight", why.keys)
        if again:
            self._hosts.restart_soon(self)

    def _live_host(self, run_options: ort.RunOptions | None) -> Host:
        """The running host, started again after a crash (within the crash limit). A run told
        to stop while another run starts the host gives up at once (a start takes seconds for
        a big model): it does not keep its worker until that start is over."""
        host = self._host
        if host is not None and host.alive:
            return host
        stopped = _stopped(run_options)
        while not self._start_lock.acquire(timeout=POLL_S):
            if stopped():
                raise InferenceFailed("the run was stopped") from RuntimeError("terminated")
        with _held(self._start_lock):
            host = self._host
            if host is not None and host.alive:
                return host
            return self._start_again()

    def _start_again(self) -> Host:
        """Start the host again, within the crash limit (the caller holds ``_start_lock``); a
        start that fails counts as a crash."""
        if self._released:
            raise ModelNotFound("the model was deleted or unloaded before this request ran")
        refused = self._refusal()
        if refused is not None:
            raise ModelNotReady(refused)
        try:
            self._start()
        except StartStopped:  # released, or the server's end: not the model's fault
            if self._released:
                raise ModelNotFound(
                    "the model was deleted or unloaded before this request ran"
                ) from None
            raise ModelNotReady("the server is shutting down") from None
        except ModelNotReady as exc:
            self._count_crash(None, exc.message)
            raise
        host = self._host
        assert host is not None
        if self._released:  # unloaded while it started (the unload may not have seen it)
            host.stop("")
            raise ModelNotFound("the model was deleted or unloaded before this request ran")
        return host

    def restart(self) -> None:
        """In the hosts' restarter thread: start the host again ahead of the next request
        (after a crash), unless a request is starting it, it runs, the model was released, or
        its crash limit refuses it. A failed start counts as a crash, as a request's would."""
        if not self._start_lock.acquire(blocking=False):
            return  # a request is starting it
        with _held(self._start_lock):
            host = self._host
            if (host is not None and host.alive) or self._released or self._refusal():
                return
            try:
                self._start_again()
            except Exception as exc:  # the next request meets the same (or starts it itself)
                _log.info("model host: a start in the background failed (%s)", type(exc).__name__)

    def _recent_crashes(self) -> int:
        """The crashes within the last ``crash_window_s`` (the caller holds ``_start_lock``)."""
        return _within(self._crashes, time.monotonic(), self._limits.crash_window_s)

    def _refusal(self) -> str | None:
        """Why the model is not started now: ``crash_limit`` crashes within the window (None:
        it may start). The caller holds ``_start_lock``."""
        limit, window = self._limits.crash_limit, self._limits.crash_window_s
        crashes = self._recent_crashes()
        if crashes < limit:
            return None
        wait = window - (time.monotonic() - self._crashes[-limit])
        return (
            f"this model's process crashed {crashes} times within {window:g} s; it is not "
            f"started again for {max(wait, 0):.0f} s, or until the model is unloaded and loaded "
            "again (POST /v2/repository/models/NAME/unload, then load)"
        )

    def _count_crash(self, host: Host | None, why: str, keys: frozenset[str] = frozenset()) -> bool:
        """Count a crash (once per host; the caller holds ``_start_lock``) and charge it to
        ``keys``; at the limit, the model is not started again while those crashes lie within
        the window. True: a running host crashed, below the limit (its successor is to start
        now, once the caller has released the lock)."""
        if host is not None:
            if host.counted:
                return False
            host.counted = True
        self._hosts.ended("crash")
        now = time.monotonic()
        self._crashes.append(now)
        self._charge(keys, now)
        crashes = self._recent_crashes()
        if crashes >= self._limits.crash_limit:
            if crashes == self._limits.crash_limit:
                _log.warning(
                    "model host: a model's process crashed %d times; not restarted", crashes
                )
            return False
        _log.warning("model host: a model's process ended during a run (%s)", why)
        return host is not None

    def _charge(self, keys: frozenset[str], now: float) -> None:
        """Charge a crash at ``now`` to each of ``keys`` (and forget charges past the window)."""
        window = self._limits.crash_window_s
        with self._keys_lock:
            for key in keys:
                self._key_crashes.setdefault(key, deque()).append(now)
            for key, times in list(self._key_crashes.items()):
                if not _within(times, now, window):
                    del self._key_crashes[key]
                elif key in keys and len(times) == self._limits.key_crash_limit:
                    _log.warning(
                        "model host: key %s was in flight at %d crashes of a model's process; "
                        "its runs of that model are refused for now",
                        key,
                        len(times),
                    )

    def _key_refusal(self, caller: str) -> str | None:
        """Why ``caller``'s runs are refused now: ``key_crash_limit`` crashes charged to it
        within the window (None: it may run)."""
        limit, window = self._limits.key_crash_limit, self._limits.crash_window_s
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

    def predict(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        run_options: ort.RunOptions | None = None,
        caller: str | None = None,
    ) -> list[tuple[str, np.ndarray]]:
        """Run the model in its host, as :meth:`OnnxModel.predict` (the same outputs, bit for
        bit, and the same errors), but for a crash (InferenceFailed naming the signal) and a
        stop the host did not obey in time (its host killed; InferenceFailed, which the data
        plane answers 504 at a timeout). ``caller``: the key id that sent the run, charged
        with the crashes during it (PermissionDenied once it reached ``key_crash_limit``)."""
        if self._released:
            raise ModelNotFound("the model was deleted or unloaded before this request ran")
        if caller is not None and (refused := self._key_refusal(caller)) is not None:
            raise PermissionDenied(refused)
        if run_options is not None and run_options.terminate:
            raise InferenceFailed("the run was stopped") from RuntimeError("terminated")
        try:
            entries, buffers = encode_arrays(list(feeds.items()))
        except ValueError as exc:
            raise InferenceFailed(str(exc)) from None
        names = self._output_names if outputs is None else list(outputs)
        header = {"op": "run", "feeds": entries, "outputs": names}
        host, run_id, waiting = self._send(header, buffers, run_options, caller)
        del buffers
        return self._outputs(self._wait(host, run_id, waiting, run_options), names)

    def _send(
        self,
        header: dict[str, Any],
        buffers: list[Any],
        run_options: ort.RunOptions | None,
        caller: str | None,
    ) -> tuple[Host, int, Pending]:
        """Hand a run to the host (a host found ending is replaced, twice at most)."""
        for _ in range(3):
            host = self._live_host(run_options)
            if caller is not None and (refused := self._key_refusal(caller)) is not None:
                raise PermissionDenied(refused)  # charged while it waited for the start
            run_id = next(host.ids)
            waiting = Pending(caller=caller)
            if not host.add(run_id, waiting):
                continue  # it ended meanwhile: the next one
            try:
                with host.lock:
                    write_frame(
                        host.channel,
                        {**header, "id": run_id},
                        buffers,
                        should_stop=_stopped(run_options),
                    )
            except Stopped:  # stopped while the host would not read: it is stopped too
                host.forget(run_id)
                self._stopped_for_a_run(host)
                self._unload_if_idle(host)
                raise InferenceFailed("the run was stopped") from RuntimeError("terminated")
            except OSError:
                pass  # it ended (or its socket was closed): its reader fails this run
            return host, run_id, waiting
        raise ServerBusy("this model's process is being started again; try again")

    def _wait(
        self, host: Host, run_id: int, waiting: Pending, run_options: ort.RunOptions | None
    ) -> Frame:
        """The host's answer to run ``run_id``; a stopped run is cancelled in the host, and the
        host killed when it does not answer within the grace."""
        cancelled_at: float | None = None
        while not waiting.done.wait(POLL_S):
            if run_options is None or not run_options.terminate:
                continue
            now = time.monotonic()
            if cancelled_at is None:
                cancelled_at = now
                with host.lock:
                    if not host.closing:
                        try:
                            write_frame(host.channel, {"op": "cancel", "id": run_id})
                        except (OSError, Stopped):
                            pass
            elif now - cancelled_at > self._limits.terminate_grace_s:
                host.forget(run_id)
                self._stopped_for_a_run(host)
                self._unload_if_idle(host)
                raise InferenceFailed("the run was stopped") from RuntimeError("terminated")
        self._unload_if_idle(host)
        failure = waiting.failure
        if isinstance(failure, Crashed):
            if not host.counted:  # counted once: the others do not wait for the lock (a start)
                with self._start_lock:
                    again = self._count_crash(host, str(failure), failure.keys)
                if again:  # its successor starts now, not for the next request
                    self._hosts.restart_soon(self)
            if failure.runs > 1:  # not this request's fault, for all it is known
                raise ServerBusy(
                    f"onnxruntime ended the model's process during this run ({failure}) with "
                    f"{failure.runs} runs of the model in flight, any of which may have crashed "
                    "it; try again (a request that crashes it alone gets 422)"
                ) from None
            raise InferenceFailed(
                f"onnxruntime ended the model's process during this run ({failure}), the only "
                "run of the model in flight: this request crashed it; the model is started "
                "again for the next request"
            ) from None
        if failure is not None:
            raise failure
        assert waiting.frame is not None
        return waiting.frame

    def _outputs(self, frame: Frame, names: list[str]) -> list[tuple[str, np.ndarray]]:
        if not frame.header.get("ok"):
            error = frame.header.get("error")
            exc = error_from(error)
            if isinstance(exc, BlindAIError):
                raise exc
            if str(exc) and isinstance(error, dict):  # only an allocation failure has a text
                others = error.get("others")
                exc = HostArenaError(str(exc), others=others if isinstance(others, int) else 1)
            raise InferenceFailed(
                f"the model failed on these inputs: {type(exc).__name__}"
            ) from exc
        try:
            outputs = decode_arrays(frame.header.get("outputs"), frame.buffers)
        except FrameError as exc:
            raise InferenceFailed(
                f"the model's process gave an unreadable answer ({exc})"
            ) from None
        if [n for n, _ in outputs] != names:
            raise InferenceFailed("the model's process answered other outputs than asked")
        return outputs

    def _stopped_for_a_run(self, host: Host) -> None:
        """Kill the host to stop a run that would not stop (its other runs: ServerBusy); its
        successor starts in the background, as after a crash (one start per kill)."""
        if not host.alive:
            host.stop(_STOPPED_WITH)
            return
        self._hosts.ended("stopped")
        host.stop(_STOPPED_WITH)
        self._hosts.restart_soon(self)

    def _unload_if_idle(self, host: Host) -> None:
        """After an unload, the host is stopped once its last run is over."""
        if self._released and host.idle:
            host.stop("")
            self._hosts._forget(self)

    def unload(self) -> None:
        """Release the model: no run starts on it any more; its host is stopped once the runs
        in flight are over. Requests that reach it afterwards get ModelNotFound."""
        self._released = True
        self._hosts._unqueue(self)
        self._close_file()
        host = self._host
        if host is None or host.idle:
            if host is not None:
                host.stop("")
            self._hosts._forget(self)  # else once its last run is over (the server's end
            # stops it meanwhile)

    def stop(self) -> None:
        """Unload and stop the host now, failing its runs in flight (the server's end)."""
        self._released = True
        self._close_file()
        host = self._host
        if host is not None:
            host.stop("the server is shutting down")

    @property
    def released(self) -> bool:
        """Whether :meth:`unload` released the model (no run can use it any more)."""
        return self._released


def _within(times: deque[float], now: float, window: float) -> int:
    """How many of ``times`` lie within ``window`` seconds before ``now`` (older ones are
    dropped from the left)."""
    while times and now - times[0] > window:
        times.popleft()
    return len(times)


@contextlib.contextmanager
def _held(lock: threading.Lock) -> Iterator[None]:
    """Release ``lock``, acquired by the caller, at the end of the block."""
    try:
        yield
    finally:
        lock.release()


def _stopped(run_options: ort.RunOptions | None) -> Any:
    return lambda: run_options is not None and bool(run_options.terminate)
