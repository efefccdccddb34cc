"""The audio agent sees every offset of a partition, in order, or reads the missing ones again.

:mod:`analytics.gapless` keeps faust from being handed a record past a gap. faust can still
lose a record after taking it: a record taken while its flow stops for a rebalance is never
passed on to the agent. Only the agent knows what it really received, so it checks too: per
partition, the next offset it must see (at the first record after an assignment, the group's
committed offset as the broker has it, or the partition's first offset when nothing is
committed; then from each record). A record past it is not processed; the partition is sought
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
        self._asked_at: dict[Hashable, float] = {}
        self._begun: set[Hashable] = set()
        self.gaps = 0
        self.abandoned = 0

    def started(self, key: Hashable) -> bool:
        """Whether :meth:`begin` was called since the partition's assignment."""
        return key in self._begun

    def begin(self, key: Hashable, start: int | None) -> None:
        """Where the partition starts: the group's committed offset, or its first offset when
        nothing is committed; ``None`` when unknown (the first record is then trusted)."""
        self._begun.add(key)
        if start is not None:
            self._next[key] = start

    def check(self, key: Hashable, offset: int, now: float = 0.0) -> tuple[Verdict, int]:
        """``ok``: process it; ``stale``: seen already, skip; ``gap``: seek back to the returned
        offset and skip this one; ``wait``: a gap already asked for, skip until it is filled."""
        self._begun.add(key)
        want = self._next.get(key)
        if want is None or offset == want:
            self._next[key] = offset + 1
            self._asked.pop(key, None)
            self._asked_at.pop(key, None)
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
            self._asked_at.pop(key, None)
            return "ok", offset
        self._asked[key] = want
        self._asked_at[key] = now
        self._waited[key] = 0
        self.gaps += 1
        return "gap", want

    def waiting(self, key: Hashable) -> bool:
        """Whether a re-read of the partition was asked for and its first record has not come
        (records after it are skipped meanwhile, overdue ones included)."""
        return key in self._asked

    def overdue(self, now: float, after_s: float) -> list[tuple[Hashable, int]]:
        """Re-reads asked for more than ``after_s`` ago that have not come: ask again (the seek
        was lost, or nothing later arrives to show the gap). Their clocks restart."""
        late = [(k, self._asked[k]) for k, at in self._asked_at.items() if now - at > after_s]
        for key, _ in late:
            self._asked_at[key] = now
        return late

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Partitions were revoked: the next assignment starts from its committed offsets."""
        for key in keys:
            self._next.pop(key, None)
            self._asked.pop(key, None)
            self._waited.pop(key, None)
            self._asked_at.pop(key, None)
            self._begun.discard(key)
