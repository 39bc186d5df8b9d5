"""The account both request budgets keep: a total, and one tenant's key's share of it."""

from blindai.server.key_shares import KeyShares


def test_a_key_fits_under_its_share_and_the_total():
    shares = KeyShares(100)
    assert shares.per_key == 50
    assert shares.fit(40, "alice") is None
    assert shares.fit(20, "alice") == "key"  # 60 > her 50, though the total has room
    assert shares.fit(50, "bob") is None
    assert shares.fit(20) == "total"  # no share of its own: the total bounds it
    assert shares.fit(10) is None
    assert (shares.held, shares.of("alice"), shares.of("bob"), shares.of(None)) == (100, 40, 50, 0)


def test_held_memory_counts_beyond_the_bounds_and_comes_back():
    shares = KeyShares(100, per_key=30)
    shares.hold(80, "alice")  # answers she has not taken: already in memory
    assert shares.fit(1, "alice") == "key"
    assert shares.fit(20, "bob") is None
    assert shares.fit(1, "bob") == "total"
    shares.give(80, "alice")
    shares.give(20, "bob")
    assert shares.held == 0 and shares.of("alice") == shares.of("bob") == 0
    assert shares.fit(30, "alice") is None
