"""Per-model statistics: counts and cumulative phase durations, success and failure apart."""

from __future__ import annotations

import threading
import time

from blindai.server.statistics import PHASES, Duration, ModelStatistics, Timing


def test_a_model_that_served_nothing_is_all_zero() -> None:
    snap = ModelStatistics().snapshot("m")
    assert snap.success == Duration(0, 0)
    assert snap.fail == Duration(0, 0)
    assert snap.last_inference_ms == 0
    assert set(snap.phases) == set(PHASES)


def test_successes_add_up_per_phase() -> None:
    stats = ModelStatistics()
    for _ in range(3):
        timing = Timing()
        timing.add("decode", 10)
        timing.add("queue", 20)
        timing.add("infer", 30)
        timing.add("encode", 40)
        stats.record("m", timing, success=True)
    snap = stats.snapshot("m")
    assert snap.inference_count == 3
    assert snap.phases["decode"] == Duration(3, 30)
    assert snap.phases["infer"] == Duration(3, 90)
    assert snap.success.ns >= 3 * 100 - 0  # whole durations include the phases
    assert snap.last_inference_ms <= time.time_ns() // 1_000_000
    assert snap.last_inference_ms > 0
    assert stats.snapshot("other").success.count == 0


def test_failures_count_apart_and_leave_phases_alone() -> None:
    stats = ModelStatistics()
    timing = Timing()
    timing.add("decode", 5)
    stats.record("m", timing, success=False)
    snap = stats.snapshot("m")
    assert snap.fail.count == 1
    assert snap.success.count == 0
    assert snap.phases["decode"] == Duration()
    assert snap.last_inference_ms == 0


def test_phase_context_manager_and_forget() -> None:
    stats = ModelStatistics()
    timing = Timing()
    with timing.phase("encode"):
        pass
    with timing.phase("encode"):
        pass
    assert timing.ns["encode"] >= 0
    stats.record("m", timing, success=True)
    assert stats.snapshot("m").phases["encode"].count == 1
    stats.forget("m")
    assert stats.snapshot("m").success.count == 0


def test_concurrent_records_are_all_counted() -> None:
    stats = ModelStatistics()
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(250):
            t = Timing()
            t.add("infer", 1)
            stats.record("m", t, success=True)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = stats.snapshot("m")
    assert snap.success.count == 2000
    assert snap.phases["infer"] == Duration(2000, 2000)


def test_each_key_reads_its_own_requests_and_none_reads_them_all():
    """A public model serves several tenants: each key's statistics count its own requests
    (the totals told one tenant when another ran the model, and how long that took)."""
    stats = ModelStatistics()
    for key in ("alice", "alice", "bob", None):
        stats.record("m", Timing(), success=True, key=key)
    stats.record("m", Timing(), success=False, key="alice")
    assert stats.snapshot("m", "alice").success.count == 2
    assert stats.snapshot("m", "alice").fail.count == 1
    assert stats.snapshot("m", "bob").success.count == 1
    assert stats.snapshot("m", "bob").fail.count == 0
    assert stats.snapshot("m", "carol") == stats.snapshot("other")  # never ran it: zero
    assert stats.snapshot("m", "carol").last_inference_ms == 0
    assert stats.snapshot("m").success.count == 4 and stats.snapshot("m").fail.count == 1
    stats.forget("m")
    assert stats.snapshot("m", "alice").success.count == 0
