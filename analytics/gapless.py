"""Never let a record be skipped: the worker's faust consumer reads each partition without gaps.

faust-streaming drops fetched records in a few places: a batch cut short when its flow stops
or the group generation changes during a rebalance, records of a partition not yet active again
while its recovery runs. The client's fetch position has already moved past them. The next
record faust is handed is further on, and faust books the offsets in between as a "gap" that
counts as acknowledged: the next commit passes records that no agent ever saw. Seen on a
two-worker kill: the survivor took a partition over at committed offset 6, was handed offset
236 first, and the 230 frames in between (two calls' speech) were committed unread.

Our topics are neither compacted nor transactional, so a gap in them is never real. This mixin
checks each record against faust's own read offset (the last record handed to the agents, or
the committed offset after a seek) before faust sees it: a record beyond the next expected
offset is withheld, the partition is sought back to that offset and the skipped records come
again, in order. Table changelogs, which faust's recovery seeks on its own, are left alone.

The expected offset of a partition is, in order: the offset of a seek not served yet (a seek
holds until its record is passed on, see :meth:`GaplessMixin.seek_in_thread`), else one past
the record faust last took. A partition assigned with nothing committed expects its first
offset, asked of the broker. Two checks find what no later record would show: records fetched
and dropped at a partition's end (the fetch position is past the expected offset), and a
partition that faust stopped fetching (the high-water mark is past it and nothing moves for
``STALLED_S``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

logger = logging.getLogger(__name__)

STRANDED_S = 1.0  # how long faust may hold a partition's fetched records before a re-read
STALLED_S = 8.0  # how long a partition with records beyond faust's read offset may not move


def _tracked(tp: Any) -> bool:
    return not str(tp.topic).endswith("-changelog")


class GaplessMixin:
    """Mix into a faust ``Consumer`` (before it in the bases)."""

    gaps_refetched: int = 0

    def _gapless_state(
        self,
    ) -> tuple[dict[Any, int], dict[Any, int], dict[Any, int], dict[Any, int]]:
        """Per partition: the last offset passed to faust, the last one faust took (its read
        offset moved to it), the offset being read again after a gap, and the offset of a seek
        whose record has not been passed on yet."""
        if not hasattr(self, "_gapless_passed"):
            self._gapless_passed: dict[Any, int] = {}
            self._gapless_taken: dict[Any, int] = {}
            self._gapless_refetch: dict[Any, int] = {}
            self._gapless_sought: dict[Any, int] = {}
        return (
            self._gapless_passed,
            self._gapless_taken,
            self._gapless_refetch,
            self._gapless_sought,
        )

    def _next_expected(self, tp: Any) -> int | None:
        """The offset faust must be handed next: the offset of a seek not served yet, else one
        past the last record faust took, or the offset it was sought to (its read offset holds
        either)."""
        passed, taken, _, sought = self._gapless_state()
        if tp in sought:
            return sought[tp]
        read = self._read_offset.get(tp)  # type: ignore[attr-defined]
        if read is None:
            return None
        if passed.get(tp) == read:
            taken[tp] = read  # faust took the last record passed to it
        return int(read) + 1 if taken.get(tp) == read else int(read)

    def _fetch_positions(self) -> dict[Any, int]:
        """The client's fetch position of each assigned partition that has one (aiokafka
        internals, read only; empty when unavailable)."""
        positions: dict[Any, int] = {}
        _, client = self._client()
        try:
            assignment = client._subscription.subscription.assignment
            for tp in client.assignment():
                state = assignment.state_value(tp)
                if state is not None and state.has_valid_position:
                    positions[tp] = int(state.position)
        except (AttributeError, AssertionError):
            return {}
        return positions

    async def _read_again(self, tp: Any, want: int, got: int, why: str) -> None:
        passed, taken, refetch, _ = self._gapless_state()
        refetch[tp] = want
        self.gaps_refetched += 1
        logger.warning(
            "%s[%d]: %s %d, expected %d: reading %d records again",
            tp.topic,
            tp.partition,
            why,
            got,
            want,
            got - want,
        )
        passed.pop(tp, None)
        taken.pop(tp, None)
        await self.seek_in_thread(tp, want)

    def _client(self) -> tuple[Any, Any]:
        """faust's consumer thread and the aiokafka client it runs (``None`` in tests)."""
        thread = getattr(self, "_thread", None)
        return thread, getattr(thread, "_consumer", None)

    async def seek_in_thread(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` inside the client's own thread; the seek holds until its record is passed.

        faust's ``seek`` calls the aiokafka client directly from the app's thread, while the
        client's fetcher runs in the consumer thread. And faust's drain loop, when it was
        waiting to hand an older record to a full agent queue, moves the read offset back past
        the seek once that record is taken, so the records read again would be dropped as seen.
        So the sought offset is kept here until a record at it is passed on, and faust's read
        offset is set to it right then. Off the consumer thread (tests) it is faust's ``seek``.
        """
        thread, client = self._client()
        if client is None:
            await self.seek(tp, offset)  # type: ignore[attr-defined]
        else:
            try:
                at = TopicPartition(tp.topic, tp.partition)
                await thread.call_thread(client.seek, at, offset)
            except (IllegalStateError, AssertionError) as exc:  # revoked meanwhile
                logger.info("%s[%d]: not sought to %d: %r", tp.topic, tp.partition, offset, exc)
                return
            self._read_offset[tp] = offset if offset else None  # type: ignore[attr-defined]
        self._gapless_state()[3][tp] = offset

    async def broker_start_offset(self, tp: Any) -> int | None:
        """Where this group must start reading ``tp``: its committed offset as the broker has
        it (faust's cache can be empty or stale right after an assignment), else the
        partition's first offset. ``None`` off the consumer thread (tests) or on a broker
        error: the caller then trusts the first record."""
        thread, client = self._client()
        if client is None:
            return None
        at = TopicPartition(tp.topic, tp.partition)
        try:
            committed = await thread.call_thread(client.committed, at)
            if committed is not None and committed >= 0:
                return int(committed)
            first = await thread.call_thread(client.beginning_offsets, [at])
            return int(first[at])
        except (KafkaError, KeyError, AssertionError) as exc:
            logger.warning("%s[%d]: start offset not known: %r", tp.topic, tp.partition, exc)
            return None

    async def _check_stranded(self) -> None:
        """Records the client returned but faust discarded at a partition's end: no later record
        comes to show the gap, so compare faust's read offset with the fetch position (equal
        between batches) twice, ``STRANDED_S`` apart."""
        now = time.monotonic()
        if now - getattr(self, "_gapless_checked_at", 0.0) < STRANDED_S:
            return
        self._gapless_checked_at = now
        await self._check_stalled(now)
        seen: dict[Any, tuple[int, int]] = getattr(self, "_gapless_stranded", {})
        stranded: dict[Any, tuple[int, int]] = {}
        for tp, position in self._fetch_positions().items():
            want = self._next_expected(tp) if _tracked(tp) else None
            if want is None or position is None or position <= want:
                continue
            if seen.get(tp) == (want, position):
                await self._read_again(tp, want, position, "fetched up to")
            else:
                stranded[tp] = (want, position)
        self._gapless_stranded = stranded

    async def _learn_starts(self) -> None:
        """A partition assigned with nothing committed has no read offset, so faust takes any
        record as its first, and records dropped before it (or at the partition's end, with none
        after them) would go unseen. So its start is asked of the broker once per assignment
        and expected like a seek's offset."""
        sought = self._gapless_state()[3]
        known: set[Any] = getattr(self, "_gapless_known", set())
        self._gapless_known = known
        for tp in self._fetch_positions():
            if tp in known or not _tracked(tp):
                continue
            known.add(tp)
            if self._read_offset.get(tp) is not None or tp in sought:  # type: ignore[attr-defined]
                continue
            start = await self.broker_start_offset(tp)
            if start is not None and self._read_offset.get(tp) is None:  # type: ignore[attr-defined]
                sought[tp] = start  # faust took no record yet (passed ones may be dropped)

    def _highwaters(self) -> dict[Any, int]:
        """The last known high-water mark of each assigned partition (aiokafka, read only)."""
        marks: dict[Any, int] = {}
        _, client = self._client()
        try:
            for tp in client.assignment():
                mark = client.highwater(tp)
                if mark is not None:
                    marks[tp] = int(mark)
        except (AttributeError, AssertionError):
            return {}
        return marks

    async def _check_stalled(self, now: float) -> None:
        """A partition that has records beyond faust's read offset yet does not move for
        ``STALLED_S``: faust stopped fetching it (seen after a takeover: two records taken,
        then nothing for two minutes). Log what faust and the client hold of it, give it back
        to the fetcher if faust still marks it buffered (a pressure-drop callback lost when a
        rebalance cleared the agent's queue), and read it again from the expected offset."""
        seen: dict[Any, tuple[int, float]] = getattr(self, "_gapless_progress", {})
        progress: dict[Any, tuple[int, float]] = {}
        for tp, mark in self._highwaters().items():
            want = self._next_expected(tp) if _tracked(tp) else None
            if want is None or mark <= want:
                continue
            since = seen.get(tp, (want, now))
            since = since if since[0] == want else (want, now)
            progress[tp] = since
            if now - since[1] < STALLED_S:
                continue
            progress[tp] = (want, now)
            buffered = tp in getattr(self, "_buffered_partitions", ())
            active = tp in (getattr(self, "_active_partitions", None) or ())
            paused = tp in getattr(self, "_paused_partitions", ())
            logger.warning(
                "%s[%d]: no record past %d for %.0f s with the high-water mark at %d "
                "(faust: active %s, buffered %s, paused %s)",
                *(tp.topic, tp.partition, want, now - since[1], mark, active, buffered, paused),
            )
            if buffered and not active and not paused:
                self.on_buffer_drop(tp)  # type: ignore[attr-defined]
            await self._read_again(tp, want, mark, "stalled below")
        self._gapless_progress = progress

    def rereading(self, tp: Any) -> bool:
        """Whether records of ``tp`` are known to be coming late: a seek (or an assignment's
        start) not served yet, a re-read after a gap not started, or a partition seen at two
        checks in a row with records past the expected offset and no progress (the re-read of
        a stall starts only after ``STALLED_S``). The transcription service then lets a stopped
        call wait for its frames (:mod:`analytics.asr.stops`)."""
        _, _, refetch, sought = self._gapless_state()
        if tp in sought or tp in refetch:
            return True
        stuck = getattr(self, "_gapless_progress", {}).get(tp)
        return stuck is not None and stuck[1] < getattr(self, "_gapless_checked_at", 0.0)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109 - faust API
        passed, _, refetch, sought = self._gapless_state()
        await self._learn_starts()
        await self._check_stranded()
        async for tp, message in super().getmany(timeout):  # type: ignore[misc]
            if _tracked(tp):
                want = self._next_expected(tp)
                offset = message.offset
                if want is not None and offset > want:
                    if refetch.get(tp) != want:
                        await self._read_again(tp, want, offset, "handed offset")
                    continue  # withheld: it comes again after the records before it
                if want is not None and offset < want:
                    continue  # faust took it already (a seek went back over it)
                if sought.pop(tp, None) is not None:
                    self._read_offset[tp] = offset  # type: ignore[attr-defined]
                refetch.pop(tp, None)
                passed[tp] = offset
            yield tp, message

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        for state in self._gapless_state():
            for tp in revoked:
                state.pop(tp, None)
        getattr(self, "_gapless_known", set()).difference_update(revoked)
        await super().on_partitions_revoked(revoked)  # type: ignore[misc]
