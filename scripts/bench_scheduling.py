"""How should a server run one model's requests? Measured in-process, no server involved.

For each model, each scheduling option is timed at 1 client (p50 latency) and at 4 and 16
concurrent clients (throughput, and CPU seconds per request), in interleaved rounds (every
option once per round, the order rotating), and the best round is kept:

- ``free/T``: one session with T intra-op threads, every client calls ``run`` at once (what a
  thread pool in front of onnxruntime does; ``free/all`` with the default threads is the
  in-process reference of ``make bench``);
- ``gate K/T``: one session with T intra-op threads, at most K runs at once (a semaphore;
  ``gate K/all``, with K > 1, has the runs share the pool of all cores);
- ``parallel K/T``: as ``gate``, with ``ORT_PARALLEL`` execution and 2 inter-op threads;
- ``spin`` variants: onnxruntime's default busy-waiting threads (the server turns spinning off).

Usage: python scripts/bench_scheduling.py [--models distilbert,resnet18,tiny] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from _realmodels import identity_model, real_model

CORES = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Option:
    """One way of scheduling: threads per run, runs at once, execution mode, spinning."""

    label: str
    intra: int
    gate: int | None  # None: no gate
    parallel: bool = False
    spin: bool = False


def options() -> list[Option]:
    """The options measured on this machine's core count."""
    out = [
        Option("free/all (reference)", 0, None, spin=True),
        Option("free/all no-spin", 0, None),
        Option(f"gate 1/{CORES}", CORES, 1),
        Option(f"gate 1/{CORES} spin", CORES, 1, spin=True),
        Option(f"gate {CORES}/1", 1, CORES),
        Option("free/1", 1, None),
    ]
    for k in (2, 4):
        if CORES >= 2 * k and CORES % k == 0:
            out.append(Option(f"gate {k}/{CORES // k}", CORES // k, k))
        out.append(Option(f"gate {k}/{CORES}", CORES, k))  # k runs share all cores
    out.append(Option(f"parallel 1/{CORES}", CORES, 1, parallel=True))
    return out


def session(model: bytes | str, opt: Option) -> ort.InferenceSession:
    """A session with the server's options but for ``opt``'s threads, mode and spinning."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = opt.intra
    so.log_severity_level = 3
    if opt.parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = 2
    if not opt.spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


@dataclass
class Result:
    """What one option did at one concurrency."""

    p50_ms: float
    per_s: float
    cpu_ms: float  # process CPU time per request


def run_clients(call: Callable[[], object], clients: int, seconds: float) -> Result:
    """``clients`` threads calling ``call`` for ``seconds``; latency, throughput, CPU."""
    stop = time.perf_counter() + seconds
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        mine = []
        start.wait()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t0)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = max(1, len(times))
    return Result(float(np.median(times)) * 1e3, n / wall, cpu / n * 1e3)


def gated(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], gate: int | None):
    """``sess.run`` behind a semaphore of ``gate`` (none when None)."""
    if gate is None:
        return lambda: sess.run(None, feeds)
    sem = threading.Semaphore(gate)

    def call() -> object:
        with sem:
            return sess.run(None, feeds)

    return call


def measure(name: str, model: bytes | str, feeds, seconds: float, rounds: int) -> None:
    """Every option at 1, 4 and 16 clients, interleaved rounds; prints the best of each."""
    opts = options()
    sessions = {o.label: session(model, o) for o in opts}
    for o in opts:  # warm-up
        for _ in range(3):
            sessions[o.label].run(None, feeds)
    best: dict[tuple[str, int], Result] = {}
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        order = opts[r % len(opts) :] + opts[: r % len(opts)]
        for clients in (1, 4, 16):
            for o in order:
                res = run_clients(gated(sessions[o.label], feeds, o.gate), clients, seconds)
                key = (o.label, clients)
                old = best.get(key)
                if clients == 1:
                    if old is None or res.p50_ms < old.p50_ms:
                        best[key] = res
                elif old is None or res.per_s > old.per_s:
                    best[key] = res
    print(
        f"\n{name}: best of {rounds} interleaved rounds, {seconds:g} s each; load average "
        f"(1 min) during the rounds: {', '.join(f'{x:.2f}' for x in loads)}"
    )
    print(
        f"  {'option':<24}{'p50 1 client':>13}{'req/s @4':>10}{'req/s @16':>10}"
        f"{'cpu ms/req @16':>15}"
    )
    ref16 = best[(opts[0].label, 16)].per_s
    ref1 = best[(opts[0].label, 1)].p50_ms
    for o in opts:
        one, four, sixteen = (best[(o.label, c)] for c in (1, 4, 16))
        print(
            f"  {o.label:<24}{one.p50_ms:10.2f} ms{four.per_s:10.1f}{sixteen.per_s:10.1f}"
            f"{sixteen.cpu_ms:15.2f}   (p50 {one.p50_ms / ref1:.2f}x, "
            f"@16 {sixteen.per_s / ref16:.2f}x of the reference)"
        )


def main() -> None:
    """Measure the models named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="distilbert,resnet18,tiny")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{CORES} usable cores; onnxruntime {ort.__version__}")
    for name in args.models.split(","):
        if name == "tiny":
            x = np.random.default_rng(0).standard_normal((1, 16), dtype=np.float32)
            measure(name, identity_model([1, 16]), {"x": x}, args.seconds, args.rounds)
        else:
            m = real_model(name)
            measure(name, str(m.path), m.feeds, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
