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
  spare at most, one started per start: a start forks no more processes than before. A spare
  that ended before it took the model (killed as it was handed over: the OOM killer, an
  operator) is replaced by a new child (``Host.start``): nothing of the model reached it, so
  the start neither fails nor counts as the model's crash;
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

Here: :class:`ModelHosts` and :class:`HostLimits`. :class:`HostedModel` is in ``_hosted_model``,
its crash counts and the keys' charges in ``_host_crashes``, the server's side of a host process
in ``_host_process``, the spare and the restarter in ``_host_starts``, the child in
``_model_host_worker``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from blindai.errors import ModelNotReady
from blindai.server._host_process import Spawned
from blindai.server._host_starts import Restarter, Spare
from blindai.server._hosted_model import HostedModel
from blindai.server.model_file import ModelFile

__all__ = [
    "CRASH_LIMIT",
    "CRASH_WINDOW_S",
    "KEY_CRASH_LIMIT",
    "TERMINATE_GRACE_S",
    "HostLimits",
    "HostedModel",
    "ModelHosts",
]

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
        self,
        *,
        limits: HostLimits,
        ended: Callable[[str], None] = lambda why: None,
        spare: bool = True,
    ) -> None:
        self.limits = limits
        self.ended = ended
        """Called with ``"crash"`` for each host that ended during runs, ``"stopped"`` for
        each killed to stop a run (the server counts them: ``blindai_model_host_ends``)."""
        self._lock = threading.Lock()
        self._models: set[HostedModel] = set()
        self._closed = False
        self._spare = Spare(enabled=spare)
        """One child started ahead, handed to the next start (``_host_starts``); none with
        ``spare`` False (``--no-spare-processes``)."""
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

    def take_spare(self) -> Spawned:
        """A child for a start: the spare when it is alive, else a new one (``Spare.take``)."""
        return self._spare.take()

    def replenish_spare(self) -> None:
        """Start the next spare (a start handed its model to the one it took)."""
        self._spare.replenish()

    def forget(self, model: HostedModel) -> None:
        """``model`` was released and its host stopped: nothing of it is left to stop."""
        with self._lock:
            self._models.discard(model)
        self._restarter.forget(model)

    def unqueue(self, model: HostedModel) -> None:
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
