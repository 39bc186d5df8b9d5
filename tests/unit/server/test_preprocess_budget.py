"""The preprocessing budget: worst cases held while they run, refusals at once."""

from __future__ import annotations

import threading

import pytest

from blindai.errors import InvalidInput, ServerBusy
from blindai.server.preprocess_budget import PreprocessBudget


def test_a_step_holds_its_worst_case_until_its_block_ends():
    budget = PreprocessBudget(100)
    with budget.holding(60):
        assert budget.held == 60
        with budget.holding(40):
            assert budget.held == 100
    assert budget.held == 0


def test_what_does_not_fit_now_is_server_busy_and_takes_nothing():
    budget = PreprocessBudget(100)
    with budget.holding(60):
        with pytest.raises(ServerBusy, match="--max-preprocess-memory") as info:
            with budget.holding(41):
                pass
        assert info.value.status_code == 503
        assert budget.held == 60
    with budget.holding(100):  # fits once the other is done
        pass


def test_what_can_never_fit_is_invalid_input():
    with pytest.raises(InvalidInput, match="more than this server allows") as info:
        with PreprocessBudget(100).holding(101):
            pass
    assert info.value.status_code == 400


def test_a_failing_step_gives_its_share_back():
    budget = PreprocessBudget(100)
    with pytest.raises(ValueError), budget.holding(70):
        raise ValueError("decoder failed")
    assert budget.held == 0


def test_threads_never_hold_more_than_the_total():
    budget = PreprocessBudget(10)
    peak = []
    errors = []
    start = threading.Barrier(8)

    def step() -> None:
        start.wait()
        for _ in range(200):
            try:
                with budget.holding(3):
                    peak.append(budget.held)
            except ServerBusy:
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=step) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert max(peak) <= 10 and budget.held == 0


def test_one_tenants_key_holds_at_most_half():
    """A tenant's large inputs cannot take the whole budget from the others."""
    budget = PreprocessBudget(100)
    with budget.holding(40, "tenant-a"):
        with pytest.raises(ServerBusy, match="one key may hold 50"):
            with budget.holding(20, "tenant-a"):
                pass
        with budget.holding(50, "tenant-b"), budget.holding(10):  # the others still fit
            assert budget.held == 100
    assert budget.held == 0 and budget._shares.of("tenant-a") == budget._shares.of("tenant-b") == 0
    with pytest.raises(InvalidInput, match="half of it for one key"):
        with budget.holding(51, "tenant-a"):
            pass
    with budget.holding(100):  # the admin key, or an open server's callers
        pass


def test_a_full_budget_does_not_tell_a_tenant_what_the_others_hold():
    """The refusal said "the requests in progress hold N bytes": any tenant read there what
    every other key's inputs held. A tenant now reads the budget's size and its own key's
    hold; the admin key (no share, sees the server's metrics) still reads the total held."""
    budget = PreprocessBudget(1000)
    with budget.holding(450, "alice"), budget.holding(437):  # Alice's, then the admin's
        with budget.holding(30, "bob"):
            with pytest.raises(ServerBusy) as info:
                with budget.holding(90, "bob"):
                    pass
            message = info.value.message
            assert "1000" in message and "this key holds 30 bytes" in message
            for figure in ("917", "887", "450", "437"):  # everyone's, the others', theirs
                assert figure not in message, message
            with pytest.raises(ServerBusy, match="hold 917 bytes"):
                with budget.holding(90):  # the admin key
                    pass
