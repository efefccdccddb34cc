"""The audio agent's per-partition offset check: in order, or read again."""

from __future__ import annotations

from analytics.contiguity import Contiguity

P = ("audio", 3)


def begun(start: int | None) -> Contiguity:
    c = Contiguity()
    c.begin(P, start)
    return c


def test_in_order_from_the_start_offset() -> None:
    c = begun(5)
    assert [c.check(P, o)[0] for o in (5, 6, 7)] == ["ok", "ok", "ok"]


def test_a_first_record_past_the_start_offset_is_a_gap() -> None:
    c = begun(5)
    assert c.check(P, 233) == ("gap", 5)
    assert c.check(P, 234) == ("wait", 5)  # still in flight: skipped
    assert [c.check(P, o)[0] for o in (5, 6)] == ["ok", "ok"]  # read again
    assert c.gaps == 1


def test_nothing_committed_starts_at_the_first_offset_not_where_faust_was_handed() -> None:
    """A successor of a worker killed before its first commit: the broker has no committed
    offset, faust's first record is the partition's end; the agent wants offset 0."""
    c = begun(0)
    assert c.check(P, 552) == ("gap", 0)
    assert [c.check(P, o)[0] for o in range(0, 553)] == ["ok"] * 553


def test_records_below_the_start_are_stale() -> None:
    c = begun(24)
    assert c.check(P, 0) == ("stale", 24)
    assert c.check(P, 24) == ("ok", 24)


def test_a_hole_mid_stream_is_read_again_and_replays_are_skipped() -> None:
    c = begun(35)
    for o in range(35, 65):
        assert c.check(P, o)[0] == "ok"
    assert c.check(P, 105) == ("gap", 65)
    assert c.check(P, 106)[0] == "wait"
    assert [c.check(P, o)[0] for o in range(65, 107)] == ["ok"] * 42
    assert c.check(P, 100)[0] == "stale"


def test_unknown_start_accepts_the_first_record_and_a_revoke_starts_over() -> None:
    c = begun(None)
    assert c.started(P)
    assert c.check(P, 17) == ("ok", 17)
    c.forget([P])
    assert not c.started(P)
    c.begin(P, 9)
    assert c.check(P, 9) == ("ok", 9)


def test_a_gap_that_never_fills_is_given_up_after_a_bound() -> None:
    c = Contiguity(max_wait=3)
    c.begin(P, 10)
    assert c.check(P, 50)[0] == "gap"
    assert [c.check(P, o)[0] for o in (51, 52, 53)] == ["wait"] * 3
    assert c.check(P, 54)[0] == "ok"
    assert c.abandoned == 1


def test_a_re_read_that_does_not_come_is_asked_again() -> None:
    c = begun(5)
    assert c.check(P, 130, now=100.0) == ("gap", 5)
    assert c.overdue(now=102.0, after_s=3.0) == []
    assert c.overdue(now=103.5, after_s=3.0) == [(P, 5)]
    assert c.overdue(now=104.0, after_s=3.0) == []  # its clock restarted
    assert c.check(P, 5, now=105.0) == ("ok", 5)
    assert c.overdue(now=200.0, after_s=3.0) == []
