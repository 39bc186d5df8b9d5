"""Per-model inference statistics: counts and cumulative durations per phase, no content.

Each inference request is timed in four phases: ``decode`` (the protocol turns the request into
arrays), ``queue`` (waiting for an inference thread), ``infer`` (onnxruntime) and ``encode``
(the protocol writes the reply). :class:`ModelStatistics` adds them up per model id, which is
what the Open Inference Protocol's statistics extension reports (Triton's ``success``,
``fail``, ``queue``, ``compute_input``, ``compute_infer``, ``compute_output``). Nothing about
the inputs or outputs is kept: only how many requests and how long.

With access control, a public model serves several tenants: each tenant's key reads the
statistics of its own requests only (a model's totals, read around another tenant's run,
showed when it ran and how long its request took, which grows with its input); the totals
are the admin key's and an open server's.

Example::

    stats = ModelStatistics()
    timing = Timing()
    with timing.phase("decode"):
        ...
    stats.record("model-id", timing, success=True)
    stats.snapshot("model-id").success.count  # 1
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["PHASES", "Duration", "ModelStatistics", "Phase", "Snapshot", "Timing"]

Phase = Literal["decode", "queue", "infer", "encode"]
PHASES: tuple[Phase, ...] = ("decode", "queue", "infer", "encode")


@dataclass
class Timing:
    """The durations (nanoseconds) of one request's phases, filled in as it goes."""

    ns: dict[Phase, int] = field(default_factory=dict)
    started: int = field(default_factory=time.perf_counter_ns)

    def phase(self, name: Phase) -> _PhaseTimer:
        """Time the ``with`` block as ``name`` (added to what that phase already took)."""
        return _PhaseTimer(self, name)

    def add(self, name: Phase, ns: int) -> None:
        """Add ``ns`` nanoseconds to phase ``name``."""
        self.ns[name] = self.ns.get(name, 0) + max(ns, 0)

    def total(self) -> int:
        """Nanoseconds since this timing was created."""
        return time.perf_counter_ns() - self.started


class _PhaseTimer:
    """The ``with`` block of :meth:`Timing.phase` (a class: cheaper than a generator, and
    every request times several phases)."""

    __slots__ = ("_name", "_start", "_timing")

    def __init__(self, timing: Timing, name: Phase) -> None:
        self._timing = timing
        self._name = name
        self._start = 0

    def __enter__(self) -> None:
        self._start = time.perf_counter_ns()

    def __exit__(self, *_: object) -> None:
        self._timing.add(self._name, time.perf_counter_ns() - self._start)


@dataclass(frozen=True)
class Duration:
    """How many times, and how long in all (nanoseconds)."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class Snapshot:
    """One model's statistics at one moment.

    ``success`` and ``fail``: requests that ended well or not, and their whole durations;
    ``phases``: each phase's count and cumulative duration over successful requests;
    ``last_inference_ms``: milliseconds since the epoch of the last success (0: none yet).
    """

    success: Duration = Duration()
    fail: Duration = Duration()
    phases: dict[Phase, Duration] = field(default_factory=lambda: {p: Duration() for p in PHASES})
    last_inference_ms: int = 0

    @property
    def inference_count(self) -> int:
        """Successful inferences (one per request: requests are not batched together)."""
        return self.success.count


class _Totals:
    """One model's running totals, of every request or one key's (mutable, under the
    statistics' lock)."""

    __slots__ = ("fail", "last_inference_ms", "phases", "success")

    def __init__(self) -> None:
        self.success = [0, 0]
        self.fail = [0, 0]
        self.phases: dict[Phase, list[int]] = {p: [0, 0] for p in PHASES}
        self.last_inference_ms = 0

    def snapshot(self) -> Snapshot:
        return Snapshot(
            success=Duration(*self.success),
            fail=Duration(*self.fail),
            phases={p: Duration(*total) for p, total in self.phases.items()},
            last_inference_ms=self.last_inference_ms,
        )

    def add(self, timing: Timing, total: int, *, success: bool, now_ms: int) -> None:
        if not success:
            self.fail[0] += 1
            self.fail[1] += total
            return
        self.success[0] += 1
        self.success[1] += total
        for name, ns in timing.ns.items():
            phase = self.phases[name]
            phase[0] += 1
            phase[1] += ns
        self.last_inference_ms = now_ms


class ModelStatistics:
    """Thread-safe statistics per model id, in all and per tenant's key; a model's entry goes
    when :meth:`forget` is called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, dict[str | None, _Totals]] = {}
        """Each model's totals (under None) and each tenant's key's own."""

    def record(
        self, model_id: str, timing: Timing, *, success: bool, key: str | None = None
    ) -> None:
        """Add one request that ran (or failed) on ``model_id``, sent by the tenant's key
        ``key`` (None: the admin key, or an open server's callers)."""
        total = timing.total()
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            totals = self._by_model.setdefault(model_id, {})
            for who in (None,) if key is None else (None, key):
                found = totals.get(who)
                if found is None:
                    found = totals[who] = _Totals()
                found.add(timing, total, success=success, now_ms=now_ms)

    def snapshot(self, model_id: str, key: str | None = None) -> Snapshot:
        """The statistics of ``model_id`` (all zero when it has served nothing): the requests
        of the tenant's key ``key``, or every request (None)."""
        with self._lock:
            totals = self._by_model.get(model_id, {}).get(key)
            return Snapshot() if totals is None else totals.snapshot()

    def forget(self, model_id: str) -> None:
        """Drop a deleted model's statistics."""
        with self._lock:
            self._by_model.pop(model_id, None)
