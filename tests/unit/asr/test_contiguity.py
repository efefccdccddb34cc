"""The audio agent's per-partition offset check: in order, or read again."""

from __future__ import annotations

from analytics.contiguity import Contiguity

P = ("audio", 3)


def test_in_order_from_the_committed_offset() -> None:
    c = Contiguity()
    assert [c.check(P, o, committed=5)[0] for o in (5, 6, 7)] == ["ok", "ok", "ok"]


def test_a_first_record_past_the_committed_offset_is_a_gap() -> None:
    c = Contiguity()
    assert c.check(P, 233, committed=5) == ("gap", 5)
    assert c.check(P, 234, committed=5) == ("wait", 5)  # still in flight: skipped
    assert [c.check(P, o, committed=5)[0] for o in (5, 6)] == ["ok", "ok"]  # read again
    assert c.gaps == 1


def test_a_hole_mid_stream_is_read_again_and_replays_are_skipped() -> None:
    c = Contiguity()
    for o in range(35, 65):
        assert c.check(P, o, committed=35)[0] == "ok"
    assert c.check(P, 105, committed=35) == ("gap", 65)
    assert c.check(P, 106, committed=35)[0] == "wait"
    assert [c.check(P, o, committed=35)[0] for o in range(65, 107)] == ["ok"] * 42
    assert c.check(P, 100, committed=35)[0] == "stale"


def test_unknown_start_accepts_the_first_record_and_a_revoke_starts_over() -> None:
    c = Contiguity()
    assert c.check(P, 17, committed=None) == ("ok", 17)
    c.forget([P])
    assert c.check(P, 9, committed=9) == ("ok", 9)


def test_a_gap_that_never_fills_is_given_up_after_a_bound() -> None:
    c = Contiguity(max_wait=3)
    assert c.check(P, 50, committed=10)[0] == "gap"
    assert [c.check(P, o, committed=10)[0] for o in (51, 52, 53)] == ["wait"] * 3
    assert c.check(P, 54, committed=10)[0] == "ok"
    assert c.abandoned == 1
