"""The backlog bound of one call: what its lag lets the transcription service do.

A call's lag is now minus the time ingest read the frame being processed (:class:`CallLag`,
owned by the call's :class:`analytics.asr.call.CallTranscriber`, updated on every frame):

* over ``shed_lag_ms`` the call is *behind*: it gets no speculative decode (batch recognisers)
  and publishes no partial (streaming ones). Partials go first; finals are never shed.
* over ``max_lag_ms`` (the bound) the call is *over the bound*: what it publishes says so
  (``Transcript.behind``), and routing marks every decision made from it ``complete: false``.
  The worker still decodes every utterance, so it may fall further behind, but never in silence:
  the lag gauges, the count of calls over the bound and a WARNING per episode say it.
* ``skip`` (off by default, ``AGENTSTREAM_WORKER_ASR_SKIP_OVER_BOUND``) trades completeness for
  timeliness: past the bound the call *catches up*: its utterances are still cut by the VAD but
  not decoded; each is published as a ``gap`` marker (:mod:`analytics.asr.markers`) until the
  lag is back under ``shed_lag_ms`` (or half the bound when that is 0). VAD alone runs at about
  150 x real time, so the call is live again in seconds. Batch recognisers only: a streaming one
  has decoded an utterance by the time it ends.

Limits of 0 turn each off. The skip episodes are logged per call: a WARNING when the call
passes the bound, an INFO line with its gap count when it is back.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class CallLag:
    """One call's lag state; :meth:`update` on every processed frame."""

    def __init__(self, call_sid: str, shed_lag_ms: int, max_lag_ms: int, skip: bool) -> None:
        self.call_sid = call_sid
        self.shed_lag_ms = shed_lag_ms
        self.max_lag_ms = max_lag_ms
        self.skip = skip and max_lag_ms > 0
        self.resume_ms = shed_lag_ms or max_lag_ms // 2
        self.lag_ms = 0  # of the latest frame processed
        self.catching_up = False  # skipping: utterances become gaps
        self.gaps = 0  # utterances published as gaps in this episode

    @property
    def behind(self) -> bool:
        """Over the shed lag (or catching up): no speculation, no partials."""
        return self.catching_up or 0 < self.shed_lag_ms < self.lag_ms

    @property
    def over_bound(self) -> bool:
        """Over the bound, or catching up after it: what the call publishes says ``behind``."""
        return self.catching_up or 0 < self.max_lag_ms < self.lag_ms

    def update(self, now_ms: int, received_at_ms: int) -> None:
        """A frame ingest read at ``received_at_ms`` is processed at ``now_ms``."""
        lag = self.lag_ms = now_ms - received_at_ms
        if not self.skip:
            return
        if self.catching_up:
            if lag <= self.resume_ms:
                self.catching_up = False
                logger.info(
                    "call %s: audio back to %.1f s behind; decoding again (%d utterances "
                    "published as gaps)",
                    *(self.call_sid, lag / 1000, self.gaps),
                )
                self.gaps = 0
        elif 0 < self.max_lag_ms < lag:
            self.catching_up = True
            logger.warning(
                "call %s: audio processed %.1f s behind real time, over the %g s bound: its "
                "utterances are published as gaps (not decoded) until it is back under %g s",
                *(self.call_sid, lag / 1000, self.max_lag_ms / 1000, self.resume_ms / 1000),
            )
