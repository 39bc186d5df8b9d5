"""Text pipelines' tokenizers, each compiled and run in a limited process of its own.

The tokenizers library holds Python's GIL while it parses a ``tokenizer.json`` (the largest
taken at the default ``--compile-memory`` took about 12.6 s; with the server's own reading of
it, the bounds and the vocabulary, some 14 s in all), and while it tokenizes a text (about 6 s
for the largest normalized text at the defaults), and neither can be stopped: in the server's
process every other request waited (during a tokenization too: another thread did not run
at all during a 4.5 s one), and a tokenization went on past ``--run-timeout``. Here
each text pipeline's tokenizer lives in a child (``blindai.server._tokenizer_worker``):

- **compile**: the child caps its address space at its start-up size plus ``--compile-memory``
  and compiles the file as the server did (the pattern allowlist, the library, the bounds); one
  that has not answered within ``--compile-timeout`` is killed, and the upload refused (400
  naming the setting), as is one that ran out of memory. The server waits on a socket, without
  the GIL; it never parses the file itself;
- **tokenize**: each request's text goes to the child (its UTF-8 bytes), the tokens come back
  as one int64 buffer (ids, attention mask, type ids); requests to one pipeline take turns.
  A run stopped meanwhile (its ``--run-timeout``, its client gone) kills the child at once
  (looked at every ``POLL_S``): the worker is free, the run answers 504 as a model's run does,
  and the child is started again at once in the background (compiling the file anew, under the
  same limits; the file is kept as a sealed memory file, handed over as a read-only
  descriptor); a child that ended otherwise is started again by the next request. A child
  that ended during requests (stopped or crashed) ``restart_limit`` times within
  ``restart_window_s`` (:class:`TokenizerLimits`: the model hosts' crash limit) is not started
  again while they lie within it: the pipeline answers ModelNotReady (503), so that texts past
  the timeout cannot keep the server compiling the file (``_host_crashes.CrashLog``);
- **the spare**: one child started ahead (its interpreter and the library imported, nothing
  received) is handed to the next start, which then starts the next one (``_host_starts.
  Spare``, as model hosts do; the first once a text pipeline is compiled, none with
  ``--no-spare-processes``);
- **lifetime**: the child ends when its pipeline is dropped (the model deleted: the step is
  collected), when its socket ends (the server died), and at the server's end
  (:meth:`TokenizerHosts.close`).

Not with ``--no-compile-isolation`` (Gramine: a child process is a new enclave): there the
tokenizer is compiled and run in the server's process (:func:`blindai.pipeline._text.
load_local`), with the stalls above. Cost: one process per text pipeline (an interpreter with
the tokenizers library: 71 MB resident, 33 MB of it its own, for a small tokenizer), and a
round trip per request (about 0.3 ms and 0.3 ms of CPU, docs/pipelines.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from blindai.errors import InferenceFailed, ModelNotReady, PipelineError
from blindai.pipeline._tokenizer_bounds import Expansion
from blindai.pipeline.limits import PipelineLimits
from blindai.server._child_side import MEMORY_EXIT
from blindai.server._host_crashes import CrashLog
from blindai.server._host_process import (
    POLL_S,
    Spawned,
    StartStopped,
    child_env,
    discard,
    spawn,
)
from blindai.server._host_starts import Spare
from blindai.server._host_wire import (
    MAX_HEADER,
    Frame,
    FrameError,
    Stopped,
    decode_arrays,
    read_frame,
    write_frame,
)
from blindai.server.model_file import ModelFile
from blindai.server.model_host import CRASH_LIMIT, CRASH_WINDOW_S

if TYPE_CHECKING:  # the tokenizers library is imported once a text pipeline is compiled
    from blindai.pipeline._text import Encoded, Stop, TokenizerFacts
    from blindai.pipeline.spec import TextInput

__all__ = ["HostedTokenizer", "TokenizerHosts", "TokenizerLimits"]

_log = logging.getLogger("blindai.server")
_MESSAGE_MAX = 2000
_MODULE = "blindai.server._tokenizer_worker"
_BYTES_PER_TOKEN = 346
"""The least memory a token takes (``blindai.pipeline._text.BYTES_PER_TOKEN`` is the most): the
most tokens ``--max-preprocess-memory`` lets a text make, for the largest answer taken."""


@dataclass(frozen=True, kw_only=True)
class TokenizerLimits:
    """What compiling one tokenizer may cost (the server's compile limits)."""

    timeout_s: float
    """``--compile-timeout``: wall-clock time for the child's compile."""
    memory_bytes: int
    """``--compile-memory``: address space for it beyond the child's start-up size."""
    restart_limit: int = CRASH_LIMIT
    """Ends of one tokenizer's child during requests (killed at a run's timeout, or crashed)
    within ``restart_window_s`` after which it is not started again (its pipeline answers
    ModelNotReady, 503) while they lie within that window: each start compiles the file anew
    (up to about 14 s of CPU), so a tenant's texts that run past the timeout cannot keep the
    server compiling (the limit of a model host's crashes, ``model_host``)."""
    restart_window_s: float = CRASH_WINDOW_S
    """The window of ``restart_limit``, in seconds."""


def _spawn() -> Spawned:
    return spawn(_MODULE, _env())


def _env() -> dict[str, str]:
    env = child_env()
    env["MALLOC_ARENA_MAX"] = "1"  # RLIMIT_AS counts each arena's reserved 64 MiB
    env["TOKENIZERS_PARALLELISM"] = "false"  # no thread pool (its stacks are address space)
    env["RAYON_NUM_THREADS"] = "1"
    return env


def _never() -> bool:
    return False


class _NotTaken(Exception):
    """The child ended before it took the setup and the file (it exits 0 only then)."""


class _Stopped(RuntimeError):
    """The run was stopped while its text was being tokenized (the child was killed)."""


class HostedTokenizer:
    """A tokenizer in a child process (:class:`~blindai.pipeline._text.Tokenize`)."""

    def __init__(self, hosts: TokenizerHosts, source: ModelFile, setup: dict[str, Any]) -> None:
        self._hosts = hosts
        self._source = source
        self._setup = setup
        self._lock = threading.Lock()
        """Held for one request to the child (they take turns), or to start it."""
        self._child: list[Spawned] = []
        """The running child, if any (a list: the finalizer holds it, not this object)."""
        self._ends = CrashLog(
            limit=hosts.limits.restart_limit,
            key_limit=hosts.limits.restart_limit,  # no key is charged: runs' keys stay unseen
            window_s=hosts.limits.restart_window_s,
            logged="tokenizer: a tokenizer's process ended %d times; not restarted for now",
        )
        """The ends of the child during requests (guarded by ``_lock``)."""
        self._max_reply = 24 * (int(setup["preprocess_bytes"]) // _BYTES_PER_TOKEN) + MAX_HEADER
        weakref.finalize(self, _close, self._child, source)

    def start(self, stop: Stop) -> dict[str, Any]:
        """Start the child (the spare, when there is one) and compile the file there (see
        :meth:`TokenizerHosts.load`); the caller holds the lock (or is the only one who knows
        this tokenizer yet). A child that ended before it took the file (a spare killed as it
        was handed over) is replaced once: nothing of the file reached it."""
        try:
            return self._started(self._hosts.take(), stop)
        except _NotTaken:
            return self._started(self._hosts.take(), stop)
        finally:  # the next spare starts once this compile no longer needs the CPU
            self._hosts.replenish()

    def _started(self, spawned: Spawned, stop: Stop) -> dict[str, Any]:
        process, channel = spawned
        deadline = time.monotonic() + self._hosts.limits.timeout_s
        reader = self._source.reader()
        try:
            socket.send_fds(channel, [json.dumps(self._setup).encode()], [reader])
            channel.settimeout(POLL_S)
            frame = read_frame(
                channel,
                max_bytes=MAX_HEADER,
                closing=lambda: stop() or time.monotonic() > deadline,
            )
        except (OSError, FrameError) as exc:
            frame = None
            unread = isinstance(exc, (BrokenPipeError, ConnectionResetError))
        else:
            unread = False
        finally:
            os.close(reader)
        if frame is None or not frame.header.get("ok"):
            discard(spawned)
            # it exits 0 only when given nothing; a stream socket's peer closed with our setup
            # unread reads as a reset (EPIPE before the send): nothing of the file reached it
            if frame is None and (unread or process.returncode == 0) and not stop():
                raise _NotTaken
            raise self._refusal(frame, process.returncode, stop, deadline)
        if not self._hosts.track(self):
            discard(spawned)
            raise ModelNotReady("the server is shutting down")
        self._child.append(spawned)
        return frame.header

    def _refusal(
        self, frame: Frame | None, code: int | None, stop: Stop, deadline: float
    ) -> Exception:
        name = self._setup["name"]
        if frame is not None and frame.header.get("kind") == "pipeline":
            return PipelineError(str(frame.header.get("message", ""))[:_MESSAGE_MAX])
        if stop():
            return InferenceFailed("the tokenizer's start was stopped")
        if time.monotonic() > deadline:
            return PipelineError(
                f"compiling {name} took longer than this server allows "
                f"({self._hosts.limits.timeout_s:g} s, --compile-timeout)"
            )
        if code == MEMORY_EXIT or (code is not None and code < 0):
            _log.warning("tokenizer: a compile ended for memory (exit status %s)", code)
            return PipelineError(
                f"compiling {name} needs more memory than this server allows "
                f"({self._hosts.limits.memory_bytes} bytes, --compile-memory)"
            )
        _log.error("tokenizer: a compile failed unexpectedly (exit status %s)", code)
        return PipelineError(f"{name} could not be compiled")

    @contextlib.contextmanager
    def _turn(self, stop: Stop) -> Iterator[Spawned]:
        """The running child (started again if it was killed), held for one request."""
        while not self._lock.acquire(timeout=POLL_S):
            if stop():
                raise InferenceFailed("the run was stopped") from _Stopped()
        try:
            if not self._child:
                if self._hosts.closed:
                    raise InferenceFailed("the server is shutting down")
                self._check_ends()
                try:
                    self.start(stop)
                except PipelineError as exc:  # compiled before: this is not the text's fault
                    raise InferenceFailed(f"the tokenizer could not be started: {exc}") from None
            yield self._child[0]
        finally:
            self._lock.release()

    def _ask(self, header: dict[str, Any], buffers: list[bytes], stop: Stop) -> Frame:
        with self._turn(stop) as spawned:
            _, channel = spawned
            try:
                write_frame(channel, header, buffers, should_stop=stop)
                frame = read_frame(channel, max_bytes=self._max_reply, closing=stop)
            except (OSError, FrameError, Stopped):
                frame = None
            if frame is None:
                self._kill()
                again = self._ends.count()  # False at the limit: not started for a while
                if stop():  # killed to stop the run (its timeout): the worker is free now
                    if again:
                        self._restart_soon()
                    raise InferenceFailed("the run was stopped") from _Stopped()
                _log.warning("tokenizer: a tokenizer's process ended during a request")
                raise InferenceFailed("the tokenizer's process ended on this text")
        if not frame.header.get("ok"):
            if frame.header.get("kind") == "memory":
                raise InferenceFailed(
                    "tokenizing this text needs more memory than this server allows "
                    "(--max-preprocess-memory)"
                )
            raise PipelineError(str(frame.header.get("message", ""))[:_MESSAGE_MAX])
        return frame

    def _check_ends(self) -> None:
        """ModelNotReady (503) while the child ended ``restart_limit`` times within the window
        (the caller holds the lock)."""
        wait = self._ends.wait_s()
        if wait is not None:
            limits = self._hosts.limits
            raise ModelNotReady(
                f"this pipeline's tokenizer was stopped {len(self._ends)} times within "
                f"{limits.restart_window_s:g} s (texts past the run timeout, or crashes); it "
                f"is not started again for {wait:.0f} s"
            )

    def _restart_soon(self) -> None:
        """Start the child again in the background, ahead of the next request: compiling a
        large file may take longer than a run may (the next request waits for it, under its own
        run timeout)."""
        threading.Thread(target=self._restart, name="blindai-tokenizer-start", daemon=True).start()

    def _restart(self) -> None:
        with self._lock:
            if self._child or self._hosts.closed:
                return
            try:
                self.start(lambda: self._hosts.closed)
            except Exception as exc:  # the next request starts it, and says why it cannot
                _log.warning(
                    "tokenizer: a process could not be started again (%s)", type(exc).__name__
                )

    def _kill(self) -> None:
        with contextlib.suppress(IndexError):  # close() may have taken it meanwhile
            discard(self._child.pop())

    def encode(self, text: str, *, add_special_tokens: bool, stop: Stop) -> Encoded:
        """See :class:`~blindai.pipeline._text.Tokenize`; InferenceFailed (its cause a
        RuntimeError: the server answers 504 at the run's timeout) when ``stop()`` turned
        true, the child killed."""
        payload = text.encode("utf-8", "surrogatepass")
        frame = self._ask({"op": "encode", "special": add_special_tokens}, [payload], stop)
        try:
            n = int(frame.header["n"])
            tokens = np.frombuffer(frame.buffers[0], dtype=np.int64)
            if n < 0 or len(frame.buffers) != 1 or tokens.size != 3 * n:
                raise ValueError
        except (KeyError, TypeError, ValueError, IndexError):
            self._kill_locked()
            raise InferenceFailed("the tokenizer's process answered unreadably") from None
        return tokens[:n], tokens[n : 2 * n], tokens[2 * n :]

    def _kill_locked(self) -> None:
        with self._lock:
            self._kill()

    def decode(self, tokens: list[int]) -> list[str]:
        """See :class:`~blindai.pipeline._text.Tokenize` (one round trip for all)."""
        frame = self._ask({"op": "decode", "ids": [int(t) for t in tokens]}, [], _never)
        try:
            [(_, labels)] = decode_arrays(frame.header.get("labels"), frame.buffers)
            if labels.dtype.kind != "O" or labels.shape != (len(tokens),):
                raise FrameError("not the labels asked for")
        except (FrameError, ValueError):
            self._kill_locked()
            raise InferenceFailed("the tokenizer's process answered unreadably") from None
        return [str(label) for label in labels]

    def close(self) -> None:
        """Stop the child now, even while a request is in flight (it then fails, as at a
        crash); reaped here, or by that request."""
        for process, _ in list(self._child):
            process.kill()
        if self._lock.acquire(timeout=1.0):
            try:
                self._kill()
            finally:
                self._lock.release()


def _close(child: list[Spawned], source: ModelFile) -> None:
    """A dropped tokenizer's end: its child killed, its file closed."""
    while child:
        discard(child.pop())
    source.close()


def _facts(answer: dict[str, Any]) -> TokenizerFacts:
    """The facts a child answered (it compiled what a tenant sent: checked as data)."""
    from blindai.pipeline._text import TokenizerFacts

    try:
        raw = answer.get("decoded")
        decoded: Expansion | str | None = None
        if isinstance(raw, list):
            decoded = Expansion(int(raw[0]), int(raw[1]))
        elif isinstance(raw, str):
            decoded = raw[:_MESSAGE_MAX]
        facts = TokenizerFacts(
            Expansion(int(answer["factor"]), int(answer["extra"])),
            int(answer["longest"]),
            int(answer["vocab"]),
            decoded,
        )
    except (KeyError, TypeError, ValueError, IndexError):
        raise PipelineError("the tokenizer's process answered unreadably") from None
    if min(facts.expansion.factor, facts.expansion.extra, facts.longest_token) < 0:
        raise PipelineError("the tokenizer's process answered unreadably")
    return facts


class TokenizerHosts:
    """Compiles each text pipeline's tokenizer in a process of its own (the server's
    :data:`~blindai.pipeline._text.TokenizerLoader`), and stops them all at its end."""

    def __init__(self, *, limits: TokenizerLimits, spare: bool = True) -> None:
        self.limits = limits
        self._spare = Spare(enabled=spare, spawner=_spawn)
        """One child started ahead (its interpreter and the library imported), handed to the
        next start; none with ``spare`` False (``--no-spare-processes``). The first is started
        by the first start, not with the server: a server without text pipelines has none."""
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[HostedTokenizer] = weakref.WeakSet()
        self._closed = False

    def load(
        self,
        data: bytes,
        name: str,
        spec: TextInput,
        limits: PipelineLimits,
        decoder: bool,
        *,
        stop: Stop = _never,
    ) -> tuple[HostedTokenizer, TokenizerFacts]:
        """The tokenizer of ``data``, compiled in its child (PipelineError when refused).
        ``stop()`` true (the upload's client went away) kills the child (InferenceFailed)."""
        if self._closed:
            raise PipelineError("the server is shutting down")
        setup = {
            "name": name,
            "size": len(data),
            "spec": spec.model_dump(mode="json"),
            "limits": asdict(limits),
            "decoder": decoder,
            "memory_bytes": self.limits.memory_bytes,
            "preprocess_bytes": limits.max_preprocess_bytes,
            "max_request": 4 * limits.max_text_bytes + MAX_HEADER,
        }
        hosted = HostedTokenizer(self, ModelFile.holding(data), setup)
        answer = hosted.start(lambda: self._closed or stop())
        return hosted, _facts(answer)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (no tokenizer starts any more)."""
        return self._closed

    def take(self) -> Spawned:
        """A child for a start: the spare when it is alive, else a new one; ModelNotReady once
        closed, or when none can be started."""
        try:
            return self._spare.take()
        except StartStopped:
            raise ModelNotReady("the server is shutting down") from None
        except OSError as exc:  # the machine's limits (processes, memory), not the file's
            _log.error("tokenizer: a process could not be started (%s)", type(exc).__name__)
            raise ModelNotReady("the tokenizer's process could not be started") from None

    def replenish(self) -> None:
        """Start the next spare (a start took the last)."""
        self._spare.replenish()

    @property
    def spare_pid(self) -> int | None:
        """The spare's process id (None: there is none now)."""
        return self._spare.pid

    def track(self, hosted: HostedTokenizer) -> bool:
        """``hosted``'s child runs: stopped at :meth:`close` (False: the server is closing;
        the caller stops it)."""
        with self._lock:
            if not self._closed:
                self._live.add(hosted)
            return not self._closed

    def close(self) -> None:
        """Stop every tokenizer's child (the server's end)."""
        with self._lock:
            self._closed = True
            live = list(self._live)
        for hosted in live:
            hosted.close()
        self._spare.close()
