"""The rules of who may run, delete and list a model."""

from __future__ import annotations

import pytest

from blindai.server.access import ADMIN, ANONYMOUS, Principal

ALICE = Principal("tenant", "k_alice", "alice")
BOB = Principal("tenant", "k_bob", "bob")

# (caller, owner, public) -> (may_run, may_delete, may_list)
RULES = [
    (ANONYMOUS, "k_alice", False, (True, True, True)),
    (ANONYMOUS, None, False, (True, True, True)),
    (ALICE, "k_alice", False, (True, True, True)),
    (ALICE, "k_alice", True, (True, True, True)),
    (BOB, "k_alice", False, (False, False, False)),
    (BOB, "k_alice", True, (True, False, True)),
    (BOB, None, False, (True, False, True)),  # uploaded while the server was open
    (ADMIN, "k_alice", False, (False, True, True)),
    (ADMIN, "k_alice", True, (True, True, True)),
    (ADMIN, "admin", False, (True, True, True)),
    (ADMIN, None, False, (True, True, True)),
    (ALICE, "admin", False, (False, False, False)),
]


@pytest.mark.parametrize("caller,owner,public,expected", RULES)
def test_rules(caller: Principal, owner: str | None, public: bool, expected):
    got = (
        caller.may_run(owner=owner, public=public),
        caller.may_delete(owner=owner),
        caller.may_list(owner=owner, public=public),
    )
    assert got == expected


def test_a_tenant_without_id_owns_nothing():
    ghost = Principal("tenant", None, "ghost")
    assert not ghost.may_delete(owner=None)
    assert not ghost.may_run(owner="k_alice", public=False)


@pytest.mark.parametrize(
    "caller,owner,expected",
    [
        (ANONYMOUS, "k_alice", True),
        (ALICE, "k_alice", True),
        (BOB, "k_alice", False),
        (ADMIN, "k_alice", False),  # the admin deletes tenants' models, never reads them
        (ADMIN, "admin", True),
        (ADMIN, None, True),
        (BOB, None, False),
    ],
)
def test_export_is_for_the_owner(caller: Principal, owner: str | None, expected: bool):
    assert caller.may_export(owner=owner) is expected
