"""WorkerPool: results and errors reach the loop, at most N threads, cancelled work never runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from blindai.server._workers import WorkerPool


def test_results_errors_and_keyword_arguments_come_back():
    pool = WorkerPool(2, name="t")

    def divide(a: int, *, by: int) -> float:
        return a / by

    async def main() -> None:
        assert await pool.run(divide, 6, by=3) == 2.0
        with pytest.raises(ZeroDivisionError):
            await pool.run(divide, 1, by=0)
        assert await pool.submit(threading.current_thread) is not threading.current_thread()

    asyncio.run(main())
    pool.close()


def test_at_most_the_given_threads_and_the_rest_waits():
    pool = WorkerPool(2, name="cap")
    release = threading.Event()
    running: list[str] = []
    lock = threading.Lock()

    def work() -> str:
        with lock:
            running.append(threading.current_thread().name)
        release.wait(10)
        return threading.current_thread().name

    async def main() -> list[str]:
        futures = [pool.submit(work) for _ in range(5)]
        while len(running) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert len(running) == 2  # the other three wait for a thread
        release.set()
        return await asyncio.gather(*futures)

    names = asyncio.run(main())
    assert set(names) == {"cap_0", "cap_1"} and len(running) == 5
    pool.close()


def test_a_future_cancelled_before_a_worker_takes_it_never_runs():
    pool = WorkerPool(1, name="c")
    gate = threading.Event()
    ran: list[int] = []

    async def main() -> None:
        first = pool.submit(lambda: gate.wait(10))
        second = pool.submit(lambda: ran.append(1))
        second.cancel()
        gate.set()
        await first
        await pool.run(lambda: None)  # the worker went past the cancelled one

    asyncio.run(main())
    assert ran == []
    pool.close()


def test_close_cancels_what_has_not_started_and_refuses_more():
    pool = WorkerPool(1, name="s")
    gate = threading.Event()

    async def main() -> None:
        busy = pool.submit(lambda: gate.wait(10))
        waiting = pool.submit(lambda: "never")
        await asyncio.sleep(0.05)
        pool.close()
        gate.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(RuntimeError, match="stopped"):
            pool.submit(lambda: None)

    asyncio.run(main())


def test_waiting_work_is_taken_in_turns_between_groups():
    """A group that queued much first (a tenant's burst) does not hold another group's work
    back behind all of it: one job of each group in turn, oldest first within a group."""
    pool = WorkerPool(1, name="turns")
    gate, started = threading.Event(), threading.Event()
    order: list[str] = []

    def job(label: str):
        def run() -> None:
            if label == "a0":
                started.set()
                gate.wait(10)
            order.append(label)

        return run

    async def main() -> None:
        futures = [pool.submit(job("a0"), group="a")]
        assert await asyncio.to_thread(started.wait, 10)  # the one thread is busy
        futures += [pool.submit(job(f"a{i}"), group="a") for i in (1, 2, 3)]
        futures += [pool.submit(job(f"b{i}"), group="b") for i in (1, 2)]
        futures.append(pool.submit(job("anonymous")))
        gate.set()
        await asyncio.gather(*futures)

    asyncio.run(main())
    pool.close()
    assert order == ["a0", "a1", "b1", "anonymous", "a2", "b2", "a3"]


def test_a_group_held_to_a_share_leaves_the_other_threads_to_others():
    """Group "a" (share 2 of 4 threads) sends four jobs that block: two run, two wait although
    two threads are free, and "b"'s job runs at once; each of "a"'s that ends lets the next
    one start."""
    pool = WorkerPool(4, name="share")
    gates = [threading.Event() for _ in range(4)]
    started: list[str] = []
    lock = threading.Lock()

    def job(label: str, gate: threading.Event | None):
        def run() -> str:
            with lock:
                started.append(label)
            if gate is not None:
                gate.wait(10)
            return label

        return run

    async def until(count: int) -> None:
        for _ in range(1000):
            if len(started) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(started)

    async def main() -> None:
        held = [pool.submit(job(f"a{i}", gates[i]), group="a", share=2) for i in range(4)]
        await until(2)
        assert await pool.submit(job("b", None), group="b", share=2) == "b"
        await asyncio.sleep(0.05)
        # a2 and a3 wait for one of a's to end (a0 and a1 start in either order)
        assert sorted(started[:2]) == ["a0", "a1"] and started[2:] == ["b"]
        gates[1].set()
        await until(4)
        assert started[3] == "a2"
        await asyncio.sleep(0.05)
        assert len(started) == 4  # a3 still waits: a0 and a2 run
        gates[0].set()
        gates[2].set()
        gates[3].set()
        assert await asyncio.gather(*held) == ["a0", "a1", "a2", "a3"]
        assert await pool.submit(job("after", None), group="a", share=2) == "after"

    asyncio.run(main())
    pool.close()
    assert pool._running == {} and pool._held == 0


def test_a_share_is_at_least_one_thread():
    pool = WorkerPool(2, name="bad")

    async def main() -> None:
        with pytest.raises(ValueError, match="at least one"):
            pool.submit(lambda: None, group="a", share=0)

    asyncio.run(main())
    pool.close()
