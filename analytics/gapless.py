"""Never let a record be skipped: the worker's faust consumer reads each partition without gaps.

faust-streaming drops fetched records in a few places (a batch cut short when its flow stops or
the group generation changes during a rebalance, a partition not yet active again after one),
while the client's fetch position has already moved past them. The next record it delivers is
then further on, and faust books the offsets in between as a "gap" that counts as acknowledged:
the next commit passes records that no agent ever saw. Seen on a two-worker kill: the survivor
took a partition over at committed offset 6, was handed offset 236 first, and the 230 frames in
between (two calls' speech) were committed unread.

Our topics are neither compacted nor transactional, so a gap in them is never real. This mixin
keeps the offset each stream partition must deliver next (from the committed offsets faust
seeks to, then from each delivered record): a record beyond it is not delivered, the partition
is sought back to it and the skipped records come again; a record before it (a replay of one
already delivered) is dropped. Table changelogs, which faust's recovery seeks on its own, are
left alone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

logger = logging.getLogger(__name__)


def _tracked(tp: Any) -> bool:
    return not str(tp.topic).endswith("-changelog")


class GaplessMixin:
    """Mix into a faust ``Consumer`` (before it in the bases)."""

    _next_offsets: dict[Any, int]
    gaps_refetched: int = 0

    def _expected(self) -> dict[Any, int]:
        if not hasattr(self, "_next_offsets"):
            self._next_offsets = {}
        return self._next_offsets

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109 - faust API
        expected = self._expected()
        refetching: set[Any] = set()
        async for tp, message in super().getmany(timeout):  # type: ignore[misc]
            if not _tracked(tp):
                yield tp, message
                continue
            want = expected.get(tp)
            offset = message.offset
            if want is not None and offset != want:
                if offset > want and tp not in refetching:
                    refetching.add(tp)
                    self.gaps_refetched += 1
                    logger.warning(
                        "%s[%d]: handed offset %d, expected %d: reading %d records again",
                        tp.topic,
                        tp.partition,
                        offset,
                        want,
                        offset - want,
                    )
                    await self.seek(tp, want)  # type: ignore[attr-defined]
                continue  # beyond a gap (re-read after the seek) or already delivered
            expected[tp] = offset + 1
            yield tp, message

    async def perform_seek(self) -> None:
        """faust seeks every partition to its committed offset (after an assignment, or when a
        fetch came while its flow was stopped): expect that offset, except where this
        assignment already delivered further (those records are in flight in the agents, so a
        second delivery would be a duplicate)."""
        await super().perform_seek()  # type: ignore[misc]
        expected = self._expected()
        for tp, offset in self._read_offset.items():  # type: ignore[attr-defined]
            if offset is not None and _tracked(tp) and tp not in expected:
                expected[tp] = offset

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        expected = self._expected()
        for tp in revoked:
            expected.pop(tp, None)
        await super().on_partitions_revoked(revoked)  # type: ignore[misc]
