"""One model whose session lives in a host process of its own (``model_host`` says how, and
why): its starts, its runs, their stops, and its crashes counted (``_host_crashes``)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
from blindai.server._host_crashes import CrashLog
from blindai.server._host_process import (
    POLL_S,
    Crashed,
    Host,
    Pending,
    StartStopped,
    described,
    error_from,
)
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

if TYPE_CHECKING:
    from blindai.server.model_host import ModelHosts

__all__ = ["HostedModel"]

_log = logging.getLogger("blindai.server")

_STOPPED_WITH = (
    "another run of this model was stopped (its time was up, or its client left) and the "
    "model's process with it; try again"
)


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
        self._crashes = CrashLog(
            limit=self._limits.crash_limit,
            key_limit=self._limits.key_crash_limit,
            window_s=self._limits.crash_window_s,
        )
        """Its host's crashes, and those charged to each key (``_host_crashes``)."""
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
                spawned=self._hosts.take_spare(),
                handed=self._hosts.replenish_spare,
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
        self._crashed(host, f"{why}, with no run in flight", why.keys)

    def _crashed(self, host: Host, why: str, keys: frozenset[str]) -> None:
        """Count ``host``'s crash under ``_start_lock`` (once: a host already counted does not
        wait for the lock, which a start may hold), then, below the crash limit, queue its
        successor's start: it starts now, in the background, not for the next request."""
        if host.counted:
            return
        with self._start_lock:
            again = self._count_crash(host, why, keys)
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
        refused = self._crashes.refusal()
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
            if (host is not None and host.alive) or self._released or self._crashes.refusal():
                return
            try:
                self._start_again()
            except Exception as exc:  # the next request meets the same (or starts it itself)
                _log.info("model host: a start in the background failed (%s)", type(exc).__name__)

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
        if not self._crashes.count(keys):
            return False
        _log.warning("model host: a model's process ended during a run (%s)", why)
        return host is not None

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
        if caller is not None and (refused := self._crashes.key_refusal(caller)) is not None:
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
            if caller is not None and (refused := self._crashes.key_refusal(caller)) is not None:
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
            self._crashed(host, str(failure), failure.keys)
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
            self._hosts.forget(self)

    def unload(self) -> None:
        """Release the model: no run starts on it any more; its host is stopped once the runs
        in flight are over. Requests that reach it afterwards get ModelNotFound."""
        self._released = True
        self._hosts.unqueue(self)
        self._close_file()
        host = self._host
        if host is None or host.idle:
            if host is not None:
                host.stop("")
            self._hosts.forget(self)  # else once its last run is over (the server's end
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


@contextlib.contextmanager
def _held(lock: threading.Lock) -> Iterator[None]:
    """Release ``lock``, acquired by the caller, at the end of the block."""
    try:
        yield
    finally:
        lock.release()


def _stopped(run_options: ort.RunOptions | None) -> Any:
    return lambda: run_options is not None and bool(run_options.terminate)
