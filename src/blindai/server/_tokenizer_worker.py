"""The child side of a tokenizer's process: compile one ``tokenizer.json``, then tokenize.

Started by ``blindai.server.tokenizer_host`` as ``python -m blindai.server._tokenizer_worker``,
its standard input one end of a ``SOCK_STREAM`` socket pair. The first message holds the setup
(a JSON object: the step, the limits, the budgets) and, passed with it (``SCM_RIGHTS``), a
read-only descriptor of the server's file of the ``tokenizer.json``: the child opens no path it
is told. Before reading it the child caps its address space (RLIMIT_AS) at its size now plus
``--compile-memory``; it compiles the file as the server did
(:func:`~blindai.pipeline._text.study_tokenizer`: the pattern allowlist, the library's parse,
the bounds), answers its facts (``_host_wire`` frames), then lowers its cap to its size now
plus ``--max-preprocess-memory`` (the most one text may take to tokenize) and serves requests
one at a time: ``encode`` (the text's UTF-8 in one buffer; the answer, its ids, attention mask
and type ids as one int64 buffer) and ``decode`` (one token's label).

While it compiles, it is ended by the kernel if the server goes (``_child_side``); while it
serves, it exits when its socket ends. It is non-dumpable and writes no core file
(``no_dumps``); it ignores SIGINT and SIGTERM (the server stops it). Nothing of a text or of
the tokenizer is written anywhere but to the server.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
from typing import Any

import numpy as np

from blindai.errors import PipelineError
from blindai.pipeline._text import decode_each, encode_text, study_tokenizer
from blindai.pipeline._tokenizer_bounds import Expansion
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput
from blindai.server._child_side import (
    FAILED_EXIT,
    MEMORY_EXIT,
    end_with_parent,
    outlive_no_parent,
    receive_setup,
    vm_status,
)
from blindai.server._host_wire import FrameError, encode_arrays, read_frame, write_frame
from blindai.server.no_dumps import forbid_dumps

__all__ = ["FAILED_EXIT", "MEMORY_EXIT", "main"]


def _compile(setup: dict[str, Any], fd: int) -> Any:
    """The tokenizer and its facts' answer (a PipelineError: the refusal's answer)."""
    size = int(setup["size"])
    data = os.pread(fd, size, 0)
    os.close(fd)
    if len(data) != size:
        raise PipelineError("the tokenizer.json could not be read")
    spec = TextInput.model_validate(setup["spec"])
    limits = PipelineLimits(**setup["limits"])
    tok, facts = study_tokenizer(data, str(setup["name"]), spec, limits, bool(setup["decoder"]))
    decoded: Any = facts.decoded
    if isinstance(decoded, Expansion):
        decoded = [decoded.factor, decoded.extra]
    answer = {
        "ok": True,
        "factor": facts.expansion.factor,
        "extra": facts.expansion.extra,
        "longest": facts.longest_token,
        "vocab": facts.vocab_size,
        "decoded": decoded,
        "peak_bytes": vm_status("VmHWM"),
    }
    return tok, answer


def _serve(channel: socket.socket, tok: Any, max_request: int) -> None:
    """Answer requests until the socket ends."""
    while (frame := read_frame(channel, max_bytes=max_request)) is not None:
        op = frame.header.get("op")
        try:
            if op == "encode" and len(frame.buffers) == 1:
                special = bool(frame.header.get("special", True))
                text = bytes(frame.buffers[0]).decode("utf-8", "surrogatepass")
                del frame
                ids, mask, types = encode_text(tok, text, add_special_tokens=special)
                tokens = np.concatenate((ids, mask, types))
                write_frame(channel, {"ok": True, "n": len(ids)}, [tokens])
            elif op == "decode":
                labels = decode_each(tok, [int(i) for i in frame.header["ids"]])
                entries, buffers = encode_arrays([("labels", np.array(labels, dtype=object))])
                write_frame(channel, {"ok": True, "labels": entries}, buffers)
            else:
                write_frame(channel, {"ok": False, "message": "not a request"})
        except PipelineError as exc:
            write_frame(channel, {"ok": False, "message": str(exc)})
        except MemoryError:
            write_frame(channel, {"ok": False, "kind": "memory", "message": ""})


def main() -> None:
    """Compile the tokenizer the first message sends, answer its facts, serve requests."""
    forbid_dumps()  # execve made this process dumpable again; a crash must not write the file
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    channel = socket.socket(fileno=0)
    received = receive_setup(channel)
    if received is None:
        os._exit(0)
    setup, fd = received
    end_with_parent(channel)
    start = vm_status("VmSize")
    preprocess = int(setup["preprocess_bytes"])
    hard = start + int(setup["memory_bytes"]) + preprocess
    resource.setrlimit(resource.RLIMIT_AS, (start + int(setup["memory_bytes"]), hard))
    try:
        tok, answer = _compile(setup, fd)
    except PipelineError as exc:
        write_frame(channel, {"ok": False, "kind": "pipeline", "message": str(exc)})
        os._exit(0)
    except MemoryError:
        os._exit(MEMORY_EXIT)
    except BaseException:
        os._exit(FAILED_EXIT)
    resource.setrlimit(resource.RLIMIT_AS, (min(hard, vm_status("VmSize") + preprocess), hard))
    outlive_no_parent(channel)
    try:
        write_frame(channel, answer)
        _serve(channel, tok, int(setup["max_request"]))
    except (OSError, FrameError):
        pass
    os._exit(0)  # skip the interpreter's teardown


if __name__ == "__main__":
    main()
