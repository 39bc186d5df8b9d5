"""Measuring on a shared machine: how much CPU other processes took, interleaved pairs, stats.

A measurement is a *pair*: the in-process reference and the served variant, run back to back
(order alternating). While a pair runs, :class:`Quiet` counts the CPU time the whole machine
spent (``/proc/stat``) minus what this process and the server process spent: the CPU other
processes (other engineers' builds and tests) took. A pair during which they took more than
``max_foreign`` of one core is measured again, up to ``tries`` times; the least disturbed try
is kept, and each result says how disturbed it was.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Pair", "Quiet", "Sample", "load_line", "peak_rss", "rss", "run_clients"]

_HZ = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds the machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / _HZ


def _process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _HZ  # utime, stime (all threads)


def rss(pid: int | str = "self") -> tuple[int, int]:
    """(current, peak) resident set size of a process in bytes (VmRSS, VmHWM)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb, _ = line.split()
                values[key] = int(kb) * 1024
    return values["VmRSS:"], values["VmHWM:"]


def peak_rss(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) in bytes."""
    return rss(pid)[1]


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own processes); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def load_line() -> str:
    """The load averages and the core count, e.g. ``load 0.12 0.30 0.41 on 2 cores``."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {len(os.sched_getaffinity(0))} cores"


@dataclass
class Quiet:
    """Counts other processes' CPU while something runs (see the module docstring)."""

    server_pid: int | None = None
    max_foreign: float = 0.10
    """Largest share of one core other processes may take during a kept pair."""
    tries: int = 3
    pairs: int = 0
    redone: int = 0
    foreign: list[float] = field(default_factory=list)

    def _ours(self) -> float:
        own = _process_cpu(os.getpid())
        return own + (_process_cpu(self.server_pid) if self.server_pid else 0.0)

    def measure(self, fn: Callable[[], object]) -> tuple[object, float]:
        """``fn()`` and the share of one core other processes used meanwhile."""
        m0, o0, w0 = _machine_busy(), self._ours(), time.perf_counter()
        out = fn()
        m1, o1, w1 = _machine_busy(), self._ours(), time.perf_counter()
        return out, max(0.0, (m1 - m0) - (o1 - o0)) / max(w1 - w0, 1e-3)

    def summary(self) -> str:
        """How quiet the run was."""
        if not self.foreign:
            return "no pairs measured"
        f = np.asarray(self.foreign)
        return (
            f"{self.pairs} pairs, {self.redone} measured again because other processes used "
            f"CPU; other processes' share of a core during the kept pairs: median "
            f"{np.median(f):.0%}, worst {f.max():.0%}"
        )


@dataclass(frozen=True)
class Sample:
    """Latencies (ms) of one variant, or a throughput (requests/s)."""

    p50: float
    p90: float
    per_s: float
    n: int
    cpu_ms: float = 0.0
    """CPU time a request, this process and the server together (less disturbed by other
    processes than wall time)."""

    @staticmethod
    def of(times_s: list[float], wall_s: float, cpu_s: float = 0.0) -> Sample:
        """From per-request times, the wall time they took in all, and the CPU time."""
        arr = np.asarray(times_s) * 1e3
        return Sample(
            float(np.percentile(arr, 50)),
            float(np.percentile(arr, 90)),
            len(times_s) / wall_s,
            len(times_s),
            cpu_s / max(len(times_s), 1) * 1e3,
        )


@dataclass(frozen=True)
class Pair:
    """The reference and the variant, measured back to back, and the foreign CPU share."""

    ref: Sample
    got: Sample
    foreign: float


def _cpu(pids: tuple[int, ...]) -> float:
    return time.process_time() + sum(_process_cpu(pid) for pid in pids)


def run_clients(
    call: Callable[[], object], clients: int, count: int, *, server: int | None = None
) -> Sample:
    """``clients`` threads calling ``call`` ``count`` times in all; latency, throughput and
    CPU time (of this process, and of the ``server`` process when given)."""
    pids = () if server is None else (server,)
    if clients == 1:
        times = []
        cpu0 = _cpu(pids)
        start = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        return Sample.of(times, wall, _cpu(pids) - cpu0)
    per = max(1, count // clients)
    out: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def client() -> None:
        mine = []
        barrier.wait()
        try:
            for _ in range(per):
                t0 = time.perf_counter()
                call()
                mine.append(time.perf_counter() - t0)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    cpu0 = _cpu(pids)
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return Sample.of(out, wall, _cpu(pids) - cpu0)


def paired(quiet: Quiet, ref: Callable[[], Sample], got: Callable[[], Sample], flip: bool) -> Pair:
    """``ref`` and ``got`` back to back (``flip``: ``got`` first), redone while disturbed."""
    best: Pair | None = None
    for attempt in range(quiet.tries):
        if attempt:
            quiet.redone += 1

        def both() -> tuple[Sample, Sample]:
            if flip:
                g = got()
                return ref(), g
            r = ref()
            return r, got()

        (r, g), foreign = quiet.measure(both)  # type: ignore[misc]
        pair = Pair(r, g, foreign)
        if best is None or foreign < best.foreign:
            best = pair
        if foreign <= quiet.max_foreign:
            break
    assert best is not None
    quiet.pairs += 1
    quiet.foreign.append(best.foreign)
    return best
