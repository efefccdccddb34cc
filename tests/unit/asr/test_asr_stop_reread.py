"""A stop while the call's audio partition is read again (fake recogniser, fake clock, no broker).

After a kill or a rebalance a call's remaining frames can come seconds after its ``stop``: the
grace must not end the session meanwhile, and frames coming after a session ended at its stop
must not open a session that no stop ends.
"""

from __future__ import annotations

import pytest

from analytics.asr.audio import chunks
from analytics.asr.service import TranscriptionService
from analytics.asr.stops import Stop, Stops
from schemas.records import AudioFrameMeta
from tests.helpers import async_wait_until
from tests.unit.asr.asr_fakes import FakeRecognizer, call_pcm
from tests.unit.asr.test_asr_service import FakeClock, make_service
from tests.unit.asr.test_asr_stop import OrderedSink

pytestmark = pytest.mark.unit

PARTITION = 3
FRAMES = chunks(call_pcm([0.2, 0.35]), 8000, 100)  # 29 frames of 100 ms
STOP = len(FRAMES) + 1  # Exotel: the stop's sequence number is the last media's + 1
HEAD = 5  # frames that come before the re-read


class Harness:
    """A service whose partition ``PARTITION`` is read again while ``rereading`` says so."""

    def __init__(self) -> None:
        self.clock, self.sink = FakeClock(), OrderedSink()
        self.rereading: set[int] = set()
        self.acked: set[int] = set()
        self.stops_acked: list[None] = []  # the stop's acknowledgements (its offset committed)
        self.service: TranscriptionService = make_service(
            FakeRecognizer(),
            self.sink,  # type: ignore[arg-type]
            self.clock,
            rereading=lambda partition: partition in self.rereading,
        )

    def feed(self, first: int, last: int) -> None:
        """Frames ``first``..``last`` (sequence numbers, from 1) of call CA1."""
        for seq in range(first, last + 1):
            meta = AudioFrameMeta(
                call_sid="CA1",
                stream_sid="S-CA1",
                sequence_number=seq,
                sample_rate_hz=8000,
                received_at_ms=int(self.clock.now * 1000),
                offset_ms=(seq - 1) * 100,
            )
            self.service.on_frame(meta, FRAMES[seq - 1], lambda s=seq: self.acked.add(s), PARTITION)

    async def head_then_stop(self, sequence: int | None = STOP) -> None:
        await self.service.start()
        self.feed(1, HEAD)
        await async_wait_until(lambda: self.service.sessions["CA1"].last_sequence == HEAD)
        self.service.on_stop(
            "CA1", sequence_number=sequence, acked=lambda: self.stops_acked.append(None)
        )

    def later(self, seconds: float) -> None:
        self.clock.now += seconds
        self.service.sweep()

    def ended(self) -> bool:
        return "CA1" not in self.service.sessions


async def test_a_stop_waits_through_a_re_read_longer_than_its_grace() -> None:
    h = Harness()
    try:
        h.rereading.add(PARTITION)
        await h.head_then_stop()
        for _ in range(5):  # 5 s of re-read, five times the grace
            h.later(1.0)
            assert not h.service.sessions["CA1"].ending
        h.rereading.clear()  # the re-read comes: the rest of the call's frames
        h.feed(HEAD + 1, len(FRAMES))
        h.later(0.1)
        await async_wait_until(h.ended)
        assert h.sink.kinds() == ["amp 0.20", "amp 0.35", "end"]
        assert h.service.calls_started == h.service.calls_ended == 1
        assert h.acked == set(range(1, len(FRAMES) + 1))
    finally:
        await h.service.stop()


async def test_after_a_re_read_the_grace_runs_from_when_it_was_last_seen() -> None:
    h = Harness()
    try:
        h.rereading.add(PARTITION)
        await h.head_then_stop()
        h.later(5.0)
        h.rereading.clear()  # served, but this call's frames are further on
        h.later(0.5)
        assert not h.service.sessions["CA1"].ending
        h.later(0.5)  # a grace after the last sweep that saw the re-read
        await async_wait_until(h.ended)
        assert h.sink.kinds()[-1] == "end"
    finally:
        await h.service.stop()


@pytest.mark.parametrize(
    ("rereading", "sequence"),
    [(False, STOP), (True, None)],
    ids=["not-rereading", "stop-without-sequence"],
)
async def test_otherwise_the_grace_ends_the_call_as_before(
    rereading: bool, sequence: int | None
) -> None:
    h = Harness()
    try:
        if rereading:
            h.rereading.add(PARTITION)
        await h.head_then_stop(sequence)
        h.later(0.5)
        assert not h.service.sessions["CA1"].ending
        h.later(0.6)
        await async_wait_until(h.ended)
        assert h.sink.kinds()[-1] == "end"
        assert h.service.calls_ended == 1
    finally:
        await h.service.stop()


async def test_a_re_read_whose_audio_never_comes_ends_at_the_idle_timeout() -> None:
    h = Harness()
    try:
        h.rereading.add(PARTITION)
        await h.head_then_stop()
        h.later(29.0)
        assert not h.service.sessions["CA1"].ending
        h.later(1.0)  # idle_timeout_s (30 s) after its last frame
        await async_wait_until(h.ended)
        assert h.sink.kinds()[-1] == "end"  # it was stopped: the end is marked
    finally:
        await h.service.stop()


@pytest.mark.parametrize("while_ending", [True, False], ids=["while-ending", "after-it-ended"])
async def test_frames_after_a_stopped_session_ended_open_one_that_ends_at_the_stop(
    while_ending: bool,
) -> None:
    """The grace ended the call (nothing said its partition was read again), then the rest of
    its frames come: their session has the stop, so it ends once the frame before the stop is
    processed (no sweep) and marks the end, instead of waiting for the idle timeout unmarked."""
    h = Harness()
    try:
        await h.head_then_stop()
        h.later(1.0)
        if not while_ending:
            await async_wait_until(h.ended)
        h.feed(HEAD + 1, len(FRAMES))
        await async_wait_until(lambda: h.ended() and h.service.calls_ended == 2)
        kinds = h.sink.kinds()
        assert kinds.count("end") == 2 and kinds[-2:] == ["amp 0.35", "end"]
        assert h.acked == set(range(1, len(FRAMES) + 1))
        assert len(h.stops_acked) == 1  # once its first session ended, even while a tail's ran
    finally:
        await h.service.stop()


def test_kept_stops_are_bounded_forgotten_after_the_idle_timeout_and_acknowledged() -> None:
    stops = Stops(grace_s=1.0, idle_timeout_s=30.0, max_calls=2)
    acked: list[str] = []

    def stop(name: str, sequence: int | None) -> Stop:
        return Stop(sequence, acked=lambda: acked.append(name))

    stops.keep("A", stop("A5", 5), now=0.0)
    stops.keep("B", stop("B", None), now=10.0)
    stops.keep("C", stop("C", 7), now=10.0)  # over the bound: not kept, acknowledged
    assert acked == ["C"]
    stops.keep("A", stop("A6", 6), now=20.0)  # a kept call's stop is replaced: the old one acked
    assert acked == ["C", "A5"]
    stops.expire(now=40.0)
    assert acked == ["C", "A5", "B"]  # forgotten: acknowledged
    assert stops.take("C") is None and stops.take("B") is None
    kept = stops.take("A")
    assert kept is not None and kept.sequence == 6
    assert stops.take("A") is None
    kept.ack()
    kept.ack()  # once only
    assert acked == ["C", "A5", "B", "A6"]


async def test_a_stop_is_acknowledged_only_once_its_call_has_ended() -> None:
    h = Harness()
    acked: list[list[str]] = []
    try:
        await h.service.start()
        h.feed(1, HEAD)
        await async_wait_until(lambda: h.service.sessions["CA1"].last_sequence == HEAD)
        h.service.on_stop("CA1", sequence_number=STOP, acked=lambda: acked.append(h.sink.kinds()))
        h.later(0.5)
        assert acked == []  # frames before the stop still to come: a successor must see it
        h.feed(HEAD + 1, len(FRAMES))
        await async_wait_until(h.ended)
        assert acked == [["amp 0.20", "amp 0.35", "end"]]  # after the call's end marker
        h.service.on_stop("CA1", sequence_number=STOP, acked=lambda: acked.append(["again"]))
        h.later(31.0)  # a stop read again, for no session: kept, then forgotten and acked
        assert acked[-1] == ["again"]
    finally:
        await h.service.stop()
