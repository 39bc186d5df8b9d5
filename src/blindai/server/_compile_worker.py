"""The child side of the compile guard: check and compile one model under hard limits.

Started by ``blindai.server.compile_guard`` as ``python -m blindai.server._compile_worker``
in an empty private directory, its standard input one end of a ``SOCK_SEQPACKET`` socket pair.
It imports onnx and onnxruntime, then waits there for one job: one message holding a JSON line
(limits, session options, the model's size) and, passed with it (``SCM_RIGHTS``), a read-only
descriptor of the server's file of the model (a sealed memory file, or an unlinked private
file): the model is not copied through a pipe, and the child opens no path it is told. Before
reading the model it caps its own address space (RLIMIT_AS) to what it has now plus the model's
share and the compile budget; then it reads and parses the model, runs the admission checks and
creates an onnxruntime session with the server's options from the descriptor
(``/proc/self/fd/N``). It answers one JSON line on stdout and exits. A child that runs past the
compile timeout is killed by the parent; one whose parent ended meanwhile (the server killed or
crashed while it compiled) is ended by the kernel as its socket's other end closes (``SIGIO``:
nobody would read its answer, and the timeout was the parent's to enforce).

Nothing of the model (bytes, names) is written anywhere but the answer to the parent: the child
is non-dumpable and writes no core file (``blindai.server.no_dumps``).

Every allocation comes from the heap and what is freed stays there
(:func:`blindai._malloc.keep_all_freed_memory`): onnxruntime's session reuses the pages of the
model's bytes and parsed protobuf, freed before it, instead of faulting in as many fresh ones.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import sys
import time
from typing import Any, BinaryIO

from blindai._malloc import keep_all_freed_memory
from blindai.errors import InvalidInput
from blindai.server._child_side import FAILED_EXIT, MEMORY_EXIT, end_with_parent, vm_status
from blindai.server.admission import AdmissionLimits, check_model, parse_model
from blindai.server.no_dumps import forbid_dumps
from blindai.server.runtime import inference_session, session_options

__all__ = ["FAILED_EXIT", "MEMORY_EXIT", "MODEL_COPIES", "READY", "main"]


MODEL_COPIES = 5
"""Address space granted per byte of model: the bytes read, the parsed protobuf, and what
onnxruntime holds while it builds a session (about 1.2 times the model from the file; three
times from bytes, as the child once did)."""
_HEADER_MAX = 1 << 16
_MEMORY_SLACK = 32 << 20


def _answer(out: BinaryIO, **fields: Any) -> None:
    out.write(json.dumps(fields).encode() + b"\n")
    out.flush()


def _compile(model: bytes | str, job: dict[str, Any]) -> None:
    options = session_options(
        optimize=bool(job["optimize"]), intra_op_threads=int(job.get("intra_op_threads", 1))
    )
    inference_session(model, options=options, providers=["CPUExecutionProvider"])


def _run(job: dict[str, Any], fd: int, out: BinaryIO) -> None:
    size = int(job["size"])
    limit = vm_status("VmSize") + MODEL_COPIES * size + int(job["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    start = time.perf_counter()
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            _answer(out, ok=False, kind="protocol", message="not the model's file")
            return
        model = os.pread(fd, size, 0)
        if len(model) != size:
            _answer(out, ok=False, kind="protocol", message="short model")
            return
        proto = parse_model(model)
        del model
        admitted = check_model(proto, limits=AdmissionLimits(**job["admission"]))
        del proto
        _compile(f"/proc/self/fd/{fd}", job)
    except InvalidInput as exc:
        _answer(out, ok=False, kind="admission", message=exc.message)
        return
    except MemoryError:
        os._exit(MEMORY_EXIT)  # answering could need memory too: the exit status says it
    except Exception as exc:  # onnxruntime raises several types for a bad model
        near_limit = vm_status("VmPeak") + _MEMORY_SLACK >= limit
        kind = "memory" if near_limit or "bad_alloc" in str(exc) else "onnxruntime"
        _answer(out, ok=False, kind=kind, message="")
        return
    _answer(
        out,
        ok=True,
        seconds=time.perf_counter() - start,
        peak_bytes=vm_status("VmHWM"),
        empty_unsafe=list(admitted.empty_unsafe),
    )


def _warm_up() -> None:
    """Set onnxruntime's environment up and load shape inference while waiting for a job."""
    from onnx import TensorProto, helper, shape_inference

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    shape_inference.infer_shapes(model)
    _compile(model.SerializeToString(), {"optimize": True, "intra_op_threads": 1})


def _receive(channel: socket.socket) -> tuple[bytes, int] | None:
    """The job's header and the model's descriptor, from the socket on stdin (None when the
    parent went away or sent something else)."""
    try:
        header, fds, flags, _ = socket.recv_fds(channel, _HEADER_MAX, 1)
    except OSError:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    return header, fds[0]


def _prepare() -> None:
    """Set the process up while it waits for its job (the parent keeps one started ahead)."""
    forbid_dumps()  # execve made this process dumpable again; a crash must not write the model
    # the model's bytes and parsed protobuf are freed before onnxruntime loads it: it reuses
    # their pages from the heap instead of faulting in fresh ones (measured on a 500 MB model:
    # its session took 0.25 s instead of 1.2 s of CPU, most of it page faults and zeroing)
    keep_all_freed_memory()
    _warm_up()


READY = b"r"
"""Sent on the socket once the child is set up: the parent's --compile-timeout counts from the
job it sends after this, never the child's own start (an interpreter, onnx and onnxruntime)."""


def _ready(channel: socket.socket) -> None:
    """Tell the parent this child is set up (the parent may have gone: then nothing to do)."""
    try:
        channel.send(READY)
    except OSError:
        os._exit(0)


def main() -> None:
    """Serve one job from stdin, answer on stdout, and exit at once."""
    _prepare()
    channel = socket.socket(fileno=0)
    _ready(channel)
    out = sys.stdout.buffer
    received = _receive(channel)
    if received is None:
        os._exit(0)  # the parent went away (or sent nothing usable): nothing to do
    header, fd = received
    end_with_parent(channel)
    try:
        _run(json.loads(header), fd, out)
    except MemoryError:
        os._exit(MEMORY_EXIT)
    except BaseException:
        os._exit(FAILED_EXIT)
    os._exit(0)  # skip the interpreter's teardown: the parent waits for this exit


if __name__ == "__main__":
    main()
