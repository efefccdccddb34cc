"""The audio agent sees every offset of a partition, in order, or reads the missing ones again.

:mod:`analytics.gapless` keeps faust from being handed a record past a gap. faust can still
lose a record after taking it: a record taken while its flow stops for a rebalance is never
passed on to the agent. Only the agent knows what it really received, so it checks too: per
partition, the next offset it must see (from the committed offset at the first record after an
assignment, then from each record). A record past it is not processed; the partition is sought
back once and the agent skips what was already in flight until the missing offset arrives. A
record before it (one already processed, delivered again after a seek) is skipped. Plain class,
no I/O; the agent does the seek.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Literal

Verdict = Literal["ok", "stale", "gap", "wait"]


class Contiguity:
    """Per-partition expected offsets of one consumer (see module docstring)."""

    def __init__(self, max_wait: int = 20_000) -> None:
        self.max_wait = max_wait  # records skipped waiting for a gap before giving up on it
        self._next: dict[Hashable, int] = {}
        self._asked: dict[Hashable, int] = {}
        self._waited: dict[Hashable, int] = {}
        self.gaps = 0
        self.abandoned = 0

    def check(self, key: Hashable, offset: int, committed: int | None) -> tuple[Verdict, int]:
        """``ok``: process it; ``stale``: seen already, skip; ``gap``: seek back to the returned
        offset and skip this one; ``wait``: a gap already asked for, skip until it is filled."""
        want = self._next.get(key, committed)
        if want is None or offset == want:
            self._next[key] = offset + 1
            self._asked.pop(key, None)
            return "ok", offset
        if offset < want:
            return "stale", want
        if self._asked.get(key) == want:
            self._waited[key] = self._waited.get(key, 0) + 1
            if self._waited[key] <= self.max_wait:
                return "wait", want
            self.abandoned += 1  # the missing records are gone (retention): go on without them
            self._next[key] = offset + 1
            self._asked.pop(key, None)
            return "ok", offset
        self._asked[key] = want
        self._waited[key] = 0
        self.gaps += 1
        return "gap", want

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Partitions were revoked: the next assignment starts from its committed offsets."""
        for key in keys:
            self._next.pop(key, None)
            self._asked.pop(key, None)
            self._waited.pop(key, None)
