"""The child side of a model host: one model's onnxruntime session, in a process of its own.

Started by ``blindai.server.model_host`` as ``python -m blindai.server._model_host_worker``, its
standard input one end of a ``SOCK_STREAM`` socket pair. The first frame (``_host_wire``) holds
the session's settings and, passed with it (``SCM_RIGHTS``), a read-only descriptor of the
server's file of the model: the child opens no path it is told. It caps onnxruntime's arena
(``run_guard.cap_arena``) and builds the session exactly as the server would
(:class:`~blindai.server.runtime.OnnxModel`, ``shared_arena``), answers the model's inputs,
outputs and metadata, then serves runs: each run frame is run in a thread of a pool, with its
own ``RunOptions``; a cancel frame sets that run's ``terminate``.

The child is non-dumpable and writes no core file (``no_dumps``); it ignores SIGINT and SIGTERM
(a terminal's Ctrl-C reaches the whole process group, and the server finishes its runs first)
and exits as soon as its socket ends: when the server closes it, or dies. Nothing of a request
or the model is written anywhere but to the server.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blindai._malloc import keep_freed_memory
from blindai.errors import BlindAIError
from blindai.server._child_side import receive_setup
from blindai.server._host_wire import (
    Frame,
    FrameError,
    decode_arrays,
    encode_arrays,
    read_frame,
    write_frame,
)
from blindai.server.no_dumps import forbid_dumps
from blindai.server.run_guard import RunControl, cap_arena
from blindai.server.runtime import OnnxModel, TensorSpec

__all__ = ["main"]

_OOM_MARKERS = ("Available memory of", "Failed to allocate memory", "bad_alloc")
_RUN_THREADS = 64
"""Runs at once in the host (the server holds a model to ``--max-model-runs``; beyond, they
wait here, and a run stopped meanwhile starts already terminated)."""


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "shape": list(spec.shape),
        "onnx_type": spec.onnx_type,
        "symbols": list(spec.symbols),
    }


def _error(exc: BaseException) -> dict[str, Any]:
    """What the server needs of a failed run or load: our own errors with their message (they
    quote no input values), onnxruntime's by type only, but for an allocation failure's text
    (sizes: the server tells 422 from 503 by it)."""
    cause = exc.__cause__
    if isinstance(exc, BlindAIError) and isinstance(cause, Exception):
        if not isinstance(cause, BlindAIError):  # OnnxModel's wrapping of onnxruntime's error
            exc = cause
    if isinstance(exc, BlindAIError):
        return {
            "kind": "blindai",
            "type": type(exc).__name__,
            "message": getattr(exc, "message", ""),
        }
    text = str(exc)
    oom = text if any(marker in text for marker in _OOM_MARKERS) else ""
    return {"kind": "runtime", "type": type(exc).__name__, "message": oom[:1000]}


class _Host:
    """The serving loop over one socket."""

    def __init__(self, channel: socket.socket, model: OnnxModel) -> None:
        self.channel = channel
        self.model = model
        self.lock = threading.Lock()
        self.runs: dict[int, RunControl] = {}
        self.pool = ThreadPoolExecutor(_RUN_THREADS, thread_name_prefix="run")

    def send(self, header: dict[str, Any], buffers: list[Any] | None = None) -> None:
        with self.lock:
            write_frame(self.channel, header, buffers or [])

    def serve(self) -> None:
        while True:
            frame = read_frame(self.channel, max_bytes=1 << 62)
            if frame is None:
                os._exit(0)  # the server closed the socket (or died): nothing left to do
            op = frame.header.get("op")
            run_id = int(frame.header.get("id", -1))
            if op == "cancel":
                control = self.runs.get(run_id)
                if control is not None:
                    control.terminate("cancelled")
            elif op == "run":
                control = RunControl()
                self.runs[run_id] = control
                self.pool.submit(self.run, run_id, frame, control)

    def run(self, run_id: int, frame: Frame, control: RunControl) -> None:
        """In a pool thread: one run, answered with its outputs or its error."""
        try:
            wanted = frame.header.get("outputs")
            feeds = dict(decode_arrays(frame.header.get("feeds"), frame.buffers))
            del frame
            names = None if wanted is None else [str(n) for n in wanted]
            outputs = self.model.predict(feeds, names, run_options=control.options)
            del feeds
            entries, buffers = encode_arrays(outputs)
            del outputs
        except Exception as exc:
            error = {**_error(exc), "others": len(self.runs) - 1}  # runs sharing the arena
            self.runs.pop(run_id, None)
            self.send({"id": run_id, "ok": False, "error": error})
            return
        self.runs.pop(run_id, None)
        self.send({"id": run_id, "ok": True, "outputs": entries}, buffers)


def _load(setup: dict[str, Any], fd: int) -> OnnxModel:
    keep_freed_memory(int(setup.get("keep_freed_memory", 0)))
    cap_arena(int(setup["memory_bytes"]))
    return OnnxModel(
        f"/proc/self/fd/{fd}",
        optimize=bool(setup["optimize"]),
        intra_op_threads=int(setup["intra_op_threads"]),
        shared_arena=True,
        max_map_bytes=int(setup.get("max_map_bytes", 1 << 30)),
    )


def main() -> None:
    """Load the model the first frame names, answer its specs, serve runs until the socket
    ends."""
    forbid_dumps()  # execve made this process dumpable again; a crash must not write the model
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    channel = socket.socket(fileno=0)
    received = receive_setup(channel)
    if received is None:
        os._exit(0)
    setup, fd = received
    try:
        model = _load(setup, fd)
    except Exception as exc:  # a refused output type, or onnxruntime's own failure
        write_frame(channel, {"ok": False, "error": _error(exc)})
        os._exit(0)
    finally:
        os.close(fd)
    channel.settimeout(None)
    write_frame(
        channel,
        {
            "ok": True,
            "inputs": [_spec(s) for s in model.inputs],
            "outputs": [_spec(s) for s in model.outputs],
            "metadata": model.metadata,
            "pid": os.getpid(),
        },
    )
    try:
        _Host(channel, model).serve()
    except (OSError, FrameError):
        pass
    os._exit(0)  # skip the interpreter's teardown (onnxruntime's threads)


if __name__ == "__main__":
    main()
