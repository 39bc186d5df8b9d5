"""The body budget's charge: a v2 inference request's JSON counts JSON_WEIGHT times."""

from __future__ import annotations

from blindai.server.body_budget import JSON_WEIGHT, BodyBudget, charge

MOST = 1 << 30
HEAD = b"inference-header-content-length"


def test_bodies_count_their_length_outside_v2_inference():
    for path in ("/run", "/upload", "/v2/repository/index", "/v2/models/m/ready"):
        assert charge(path, [], 1000, MOST) == 1000


def test_a_v2_json_body_counts_json_weight_times():
    for path in ("/v2/models/m/infer", "/v2/models/m/versions/2/infer"):
        assert charge(path, [], 1000, MOST) == JSON_WEIGHT * 1000


def test_with_binary_data_only_the_json_head_is_weighted():
    headers = [(HEAD, b"100")]
    assert charge("/v2/models/m/infer", headers, 1000, MOST) == 1000 + (JSON_WEIGHT - 1) * 100
    # a head longer than the body, or no number, counts the whole body as JSON
    assert charge("/v2/models/m/infer", [(HEAD, b"5000")], 1000, MOST) == JSON_WEIGHT * 1000
    assert charge("/v2/models/m/infer", [(HEAD, b"x")], 1000, MOST) == JSON_WEIGHT * 1000
    assert charge("/v2/models/m/infer", [(HEAD, b"-5")], 1000, MOST) == JSON_WEIGHT * 1000


def test_a_charge_is_at_most_a_share_and_at_least_the_body():
    assert charge("/v2/models/m/infer", [], 1000, 5000) == 5000
    assert charge("/v2/models/m/infer", [], 1000, 10) == 1000


def test_the_budget_takes_and_gives_back_charges():
    budget = BodyBudget(10_000, per_key=8_000)
    size = charge("/v2/models/m/infer", [], 300, budget.per_key)
    assert size == JSON_WEIGHT * 300 and budget.take(size) is None
    assert budget.take(size) is not None  # a second one does not fit
    budget.give(size)
    assert budget.held == 0


def test_a_tenants_unread_answers_fill_its_own_share():
    """Answers held for a key count in its share: its next request is refused, another key's
    still fits."""
    budget = BodyBudget(10_000, per_key=5_000)
    budget.hold(4_000, "alice")  # answers she has not taken
    assert budget.take(2_000, "alice") is not None
    assert budget.take(2_000, "bob") is None
    budget.give(4_000, "alice")
    assert budget.take(2_000, "alice") is None
    budget.give(2_000, "alice")
    budget.give(2_000, "bob")
    assert budget.held == 0 and budget.of("alice") == budget.of("bob") == 0
