"""What routing's HTTP side does with input it refuses: a bounded log and bounded dead letters.

A hostile flood must not turn into a flood of log lines or of dead-letter records queued for
Kafka (the publisher's queue is memory). Each kind of complaint gets a token bucket: up to
``burst`` at once, then ``per_s`` a second; what is over is only counted, and the next log line
says how many were suppressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from schemas.deadletter import dead_letter
from schemas.records import DeadLetter

logger = logging.getLogger(__name__)

DeadLetterSink = Callable[[DeadLetter], None]


class TokenBucket:
    """``burst`` tokens, refilled at ``per_s`` a second; :meth:`take` says whether one was left."""

    def __init__(
        self, per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_s = per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Rejects:
    """Rate-limited log lines and dead letters for refused or unreadable callbacks."""

    def __init__(
        self,
        dead_letters: DeadLetterSink | None,
        *,
        per_s: float = 5.0,
        burst: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dead_letters = dead_letters
        self._logs = TokenBucket(per_s, burst, clock)
        self._letters = TokenBucket(per_s * 4, burst * 4, clock)
        self.suppressed = 0
        self.letters_dropped = 0

    def bad_passthru(self, reason: str, raw: bytes, call_sid: str | None = None) -> None:
        """A Passthru answered with the default branch: log it and dead-letter its bytes."""
        self.log("passthru answered with the default branch: %s", reason)
        if self._dead_letters is None:
            return
        if not self._letters.take():
            self.letters_dropped += 1
            return
        self._dead_letters(dead_letter("routing", reason, raw=raw, call_sid=call_sid))

    def refused(self, path: str, reason: str, remote: str | None) -> None:
        self.log("refused %s from %s: %s", path[:100], remote, reason)

    def log(self, message: str, *args: object, level: int = logging.WARNING) -> None:
        """A log line, unless this instance logged its burst already (then only counted)."""
        if not self._logs.take():
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        logger.log(level, message, *args)


class RateLimitFilter(logging.Filter):
    """Lets through at most ``burst`` records at once, then ``per_s`` a second.

    On aiohttp's ``aiohttp.server`` logger: each malformed HTTP request (a request line over
    8,190 bytes, bad framing) logs a traceback there, before any handler of ours runs.
    """

    def __init__(self, per_s: float = 1.0, burst: float = 10.0) -> None:
        super().__init__()
        self._bucket = TokenBucket(per_s, burst)
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self._bucket.take():
            return True
        self.dropped += 1
        return False
