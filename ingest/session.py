"""One Exotel stream: the per-call protocol state machine, from parsed events to Kafka records.

No sockets and no Kafka here: the connection handler feeds it raw text messages and tells it
how the call ended; it appends the records it wants written to :attr:`StreamSession.outbox`
(:class:`~ingest.outgoing.Outgoing`), which the handler hands to the sink. So the whole
protocol (order of events, sequence gaps and duplicates, sample rate, offsets, synthetic stop)
is unit-testable without a sink.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from ingest.metrics import IngestStats
from ingest.outgoing import AUDIO, CALLS, DEADLETTER, CallTag, Outgoing
from ingest.start import DEFAULT_LABEL, choose_rate, read_start
from schemas.deadletter import dead_letter
from schemas.errors import ProtocolError
from schemas.exotel import (
    DEFAULT_SAMPLE_RATE_HZ,
    BadFrameError,
    DtmfEvent,
    ExotelEvent,
    MarkEvent,
    MediaEvent,
    StartEvent,
    StopEvent,
    UnknownEvent,
    parse_event,
    text_in_binary,
)
from schemas.records import CallEvent

logger = logging.getLogger(__name__)

DEFAULT_TENANT = DEFAULT_LABEL
DEFAULT_MAX_BAD_FRAMES = 50


class TooManyBadFrames(ProtocolError):
    """A run of undecodable frames: close 1007 (each one was dead-lettered already)."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class StreamSession:
    """Protocol state of one Exotel stream (``/stream`` or ``/voicebot``).

    Owned by the ingest process, one per WebSocket connection, alive while the socket is.
    """

    def __init__(
        self,
        stats: IngestStats,
        endpoint: str,
        query: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        max_bad_frames: int = DEFAULT_MAX_BAD_FRAMES,
    ) -> None:
        self.outbox: list[Outgoing] = []  # records to write; the handler drains it
        self.stats = stats
        self.endpoint = endpoint
        self.query = dict(query)
        self.clock = clock
        self.wall_ms = wall_ms
        self.opened_at = clock()
        self.started_at: float | None = None
        self.last_media_at = self.opened_at
        self.stopped = False
        self.ended = False
        self.end_reason: str | None = None  # set by whoever closes the socket on purpose
        self.call_sid: str | None = None
        self.stream_sid = ""
        self.tenant = DEFAULT_TENANT
        self.campaign = DEFAULT_TENANT
        self.custom_parameters: dict[str, str] = {}
        self.sample_rate_hz = DEFAULT_SAMPLE_RATE_HZ
        self.encoding: str | None = None  # media_format.encoding as sent
        self.codec = "pcm16"
        self.call_sid_source: str | None = None
        self.last_sequence: int | None = None
        self.audio_bytes = 0  # inbound (caller) PCM16 bytes: the audio clock
        self.outbound_bytes = 0
        self.frames = 0
        self.max_bad_frames = max_bad_frames
        self.bad_run = 0  # undecodable frames in a row
        self.early_seen = False  # media/stop/dtmf/mark before start (counted once)
        self.unknown_seen = False  # an unknown event was logged
        self._decode: Callable[[bytes], bytes] | None = None  # None: PCM16 as it is
        self._rate_choice: tuple[int, int] | None = None  # (format, URL) rates to decide
        self._pending_start: dict[str, object] | None = None  # held until the rate is decided
        self._key = b""
        self._tag: CallTag | None = None

    @property
    def started(self) -> bool:
        return self.call_sid is not None

    # --- messages -----------------------------------------------------------------------------

    def on_message(self, raw: str | bytes, read_at: float) -> ExotelEvent | UnknownEvent | None:
        """Parse and record one message; None for an undecodable one (dead-lettered).

        Raises ProtocolError when the call must end.
        """
        if isinstance(raw, bytes):
            raw = text_in_binary(raw)
        try:
            event = parse_event(raw)
            if isinstance(event, MediaEvent):
                self._on_media(event, read_at)
            elif isinstance(event, StartEvent):
                self._on_start(event, read_at)
            elif isinstance(event, StopEvent):
                self._on_stop(event, read_at)
            elif isinstance(event, DtmfEvent | MarkEvent):
                if self._started_or_count(event.event) and self._sequence_ok(
                    event.sequence_number, read_at
                ):
                    self._on_dtmf_or_mark(event, read_at)
            elif isinstance(event, UnknownEvent):
                self.stats.unknown_events["other"] += 1
                if not self.unknown_seen:  # once per connection: the names are input
                    self.unknown_seen = True
                    logger.info(
                        "call_sid=%s stream_sid=%s skipping unknown event %r (and later ones)",
                        self.call_sid,
                        self.stream_sid,
                        event.event[:40],
                    )
        except BadFrameError as exc:
            self._bad_frame(raw, exc.reason, read_at)
            return None
        if self.bad_run:
            self.bad_run = 0
        return event

    def _bad_frame(self, raw: str, reason: str, read_at: float) -> None:
        """Dead-letter one undecodable message; too many in a row end the call (1007)."""
        self.bad_run += 1
        self.stats.bad_frames += 1
        if self.bad_run == 1:
            logger.warning(
                "call_sid=%s stream_sid=%s undecodable frame (dead-lettered): %s",
                self.call_sid,
                self.stream_sid,
                reason,
            )
        self.dead_letter(raw, reason, read_at)
        if self.bad_run >= self.max_bad_frames:
            raise TooManyBadFrames(
                f"{self.bad_run} undecodable frames in a row; last: {reason}", close_code=1007
            )

    def _started_or_count(self, what: str) -> bool:
        """True when the call is started; else count the early event (once per connection)."""
        if self.call_sid is None:
            if not self.early_seen:
                self.early_seen = True
                self.stats.events_before_start += 1
                logger.info("stream_sid=%s '%s' before 'start': ignored", self.stream_sid, what)
            return False
        if self.stopped:
            raise ProtocolError(f"'{what}' after 'stop'", close_code=1008)
        return True

    def _on_start(self, event: StartEvent, read_at: float) -> None:
        if self.call_sid is not None:
            raise ProtocolError("second 'start' on one stream", close_code=1008)
        setup = read_start(event, self.query)
        stats = self.stats
        stats.call_sid_sources[setup.call_sid_source] += 1
        stats.codecs[setup.codec] += 1
        if setup.codec == "unknown":
            logger.warning(
                "call_sid=%s unknown media_format.encoding %r: read as PCM16",
                setup.call_sid,
                setup.encoding,
            )
        if setup.rate_choice is not None:
            stats.rate_disagreements += 1
            logger.warning(
                "call_sid=%s media_format says %d Hz, the URL's sample-rate %d Hz: deciding "
                "from the first frame's size",
                setup.call_sid,
                *setup.rate_choice,
            )
        self.call_sid = setup.call_sid
        self.call_sid_source = setup.call_sid_source
        self.stream_sid = setup.stream_sid
        self.tenant = setup.tenant
        self.campaign = setup.campaign
        self.custom_parameters = setup.custom_parameters
        self.encoding = setup.encoding
        self.codec = setup.codec
        self._decode = setup.decode
        self.sample_rate_hz = setup.sample_rate_hz
        self._rate_choice = setup.rate_choice
        self.started_at = read_at
        self.last_media_at = read_at
        self.last_sequence = event.sequence_number
        self._key = setup.call_sid.encode()
        self._tag = self._make_tag()
        info = event.start
        start: dict[str, object] = {
            "sequence_number": event.sequence_number,
            "account_sid": info.account_sid,
            "from_number": info.from_number,
            "to_number": info.to_number,
            "encoding": setup.encoding,
            "codec": setup.codec,
            "call_sid_source": setup.call_sid_source,
            "occurred_at_ms": self.wall_ms(),
        }
        if self._rate_choice is None:
            self._emit("start", read_at, extra={**start, "sample_rate_hz": self.sample_rate_hz})
        else:
            self._pending_start = start  # written once the first frame decides the rate
        logger.info(
            "call_sid=%s (from %s) stream_sid=%s started on %s tenant=%s campaign=%s rate=%d "
            "encoding=%r",
            self.call_sid,
            self.call_sid_source,
            self.stream_sid,
            self.endpoint,
            self.tenant,
            self.campaign,
            self.sample_rate_hz,
            self.encoding,
        )

    def _make_tag(self) -> CallTag:
        assert self.call_sid is not None
        return CallTag(
            self.call_sid,
            self.stream_sid,
            self.tenant,
            self.campaign,
            self.custom_parameters,
            self.sample_rate_hz,
            self.encoding,
        )

    def _decide_rate(self, frame_bytes: int, read_at: float) -> None:
        """media_format and the URL disagree: the first caller frame's size decides."""
        assert self._rate_choice is not None
        format_rate, url_rate = self._rate_choice
        chosen = choose_rate(frame_bytes, format_rate, url_rate)
        logger.info(  # the disagreement itself was logged (warning) once, at start
            "call_sid=%s first frame is %d bytes: %d Hz (media_format %d, URL %d)",
            self.call_sid,
            frame_bytes,
            chosen,
            format_rate,
            url_rate,
        )
        self.sample_rate_hz = chosen
        self._tag = self._make_tag()
        self._flush_start(read_at)

    def _flush_start(self, read_at: float) -> None:
        pending = self._pending_start
        if pending is not None:
            self._pending_start = None
            self._rate_choice = None
            self._emit("start", read_at, extra={**pending, "sample_rate_hz": self.sample_rate_hz})

    def _sequence_ok(self, seq: int | None, read_at: float) -> bool:
        """Record gaps and duplicates; False for a duplicate (its content is not re-emitted)."""
        if seq is None:
            return True
        last = self.last_sequence
        if last is None:
            self.last_sequence = seq
            return True
        if seq <= last:
            self.stats.duplicates += 1
            self._emit(
                "duplicate",
                read_at,
                sequence_number=seq,
                expected_sequence=last + 1,
                received_sequence=seq,
            )
            return False
        if seq > last + 1:
            self.stats.gaps += 1
            self._emit(
                "gap",
                read_at,
                sequence_number=seq,
                expected_sequence=last + 1,
                received_sequence=seq,
                dropped_frames=seq - last - 1,
                params={"cause": "exotel_sequence"},
            )
        self.last_sequence = seq
        return True

    def _on_media(self, event: MediaEvent, read_at: float) -> None:
        if self.call_sid is None or self.stopped:
            self._started_or_count("media")
            return
        media = event.media
        decode = self._decode
        pcm = media.pcm16() if decode is None else decode(media.audio())
        if not pcm:
            raise BadFrameError("media payload is empty")
        seq = event.sequence_number
        track = media.track
        outbound = track is not None and track[:3].lower() == "out"
        if outbound:
            # the bot's/agent's side: kept for replay, never on the caller's audio clock, and
            # never dropped as a duplicate (tracks may number their frames apart or together)
            if seq is not None and (self.last_sequence is None or seq > self.last_sequence):
                self.last_sequence = seq
        elif not self._sequence_ok(seq, read_at):
            return
        received_at_ms = self.wall_ms()
        rate = self.sample_rate_hz
        if outbound:
            offset_ms = self.outbound_bytes * 1000 // (rate * 2)
            self.outbound_bytes += len(pcm)
            self.stats.outbound_frames += 1
        else:
            if self._rate_choice is not None:
                self._decide_rate(len(pcm), read_at)
                rate = self.sample_rate_hz
            self.last_media_at = read_at
            offset_ms = self.audio_bytes * 1000 // (rate * 2)
            self.audio_bytes += len(pcm)
        self.frames += 1
        stats = self.stats
        stats.frames_in += 1
        stats.audio_bytes_in += len(pcm)
        self.outbox.append(
            Outgoing(
                AUDIO,
                self._key,
                pcm,
                read_at,
                self._tag,
                seq if seq is not None else self.frames,
                media.chunk,
                media.timestamp_ms,
                received_at_ms,
                offset_ms,
                False,
                outbound,
            )
        )

    def _on_dtmf_or_mark(self, event: DtmfEvent | MarkEvent, read_at: float) -> None:
        if isinstance(event, DtmfEvent):
            self._emit(
                "dtmf",
                read_at,
                sequence_number=event.sequence_number,
                dtmf_digit=event.dtmf.digit,
                dtmf_duration_ms=event.dtmf.duration_ms,
            )
        else:
            self._emit(
                "mark", read_at, sequence_number=event.sequence_number, mark_name=event.mark.name
            )

    def _on_stop(self, event: StopEvent, read_at: float) -> None:
        if not self._started_or_count("stop"):
            return
        if event.sequence_number is not None:
            self._sequence_ok(event.sequence_number, read_at)
        self._finish(event.stop.reason or "stopped", read_at, event.sequence_number)

    # --- end of call --------------------------------------------------------------------------

    def end(self, read_at: float) -> None:
        """The socket is gone: write the synthetic stop if Exotel did not send one."""
        if self.ended:
            return
        if self.started and not self.stopped:
            self._finish(self.end_reason or "disconnected", read_at, None)
        self.ended = True

    def _finish(self, reason: str, read_at: float, seq: int | None) -> None:
        assert self.call_sid is not None
        self.stopped = True
        # ends_call: the sink writes the call's pending gap record ahead of this stop
        self._emit("stop", read_at, ends_call=True, sequence_number=seq, stop_reason=reason)
        logger.info(
            "call_sid=%s stream_sid=%s stopped (%s) after %d frames",
            self.call_sid,
            self.stream_sid,
            reason,
            self.frames,
        )

    def record_handoff(self, params: dict[str, str], read_at: float) -> None:
        self._emit("handoff", read_at, params=params)

    # --- records ------------------------------------------------------------------------------

    def _emit(
        self,
        kind: str,
        read_at: float,
        ends_call: bool = False,
        extra: dict[str, object] | None = None,
        **fields: object,
    ) -> None:
        assert self.call_sid is not None
        if self._pending_start is not None and kind != "start":
            self._flush_start(read_at)  # no frame decided the rate: media_format's stands
        record = CallEvent.model_validate(
            {
                "kind": kind,
                "call_sid": self.call_sid,
                "stream_sid": self.stream_sid,
                "tenant": self.tenant,
                "campaign": self.campaign,
                "custom_parameters": self.custom_parameters,
                "occurred_at_ms": self.wall_ms(),
                **fields,
                **(extra or {}),
            }
        )
        self.outbox.append(
            Outgoing(CALLS, self._key, record.to_bytes(), read_at, self._tag, ends_call=ends_call)
        )

    def dead_letter(self, raw: str | bytes, error: str, read_at: float) -> None:
        """Write the offending message and the error to the dead-letter topic."""
        record = dead_letter(
            "ingest",
            error,
            raw=raw,
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            occurred_at_ms=self.wall_ms(),
        )
        self.stats.deadletters += 1
        self.outbox.append(Outgoing(DEADLETTER, self._key, record.to_bytes(), read_at))
