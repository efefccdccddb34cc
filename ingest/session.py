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
from schemas.deadletter import dead_letter
from schemas.errors import ProtocolError
from schemas.exotel import (
    DEFAULT_SAMPLE_RATE_HZ,
    SUPPORTED_SAMPLE_RATES_HZ,
    DtmfEvent,
    ExotelEvent,
    MarkEvent,
    MediaEvent,
    StartEvent,
    StopEvent,
    UnknownEvent,
    parse_event,
)
from schemas.records import CallEvent

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"


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
        self.last_sequence: int | None = None
        self.audio_bytes = 0
        self.frames = 0
        self._key = b""
        self._tag: CallTag | None = None

    @property
    def started(self) -> bool:
        return self.call_sid is not None

    # --- messages -----------------------------------------------------------------------------

    def on_message(self, raw: str | bytes, read_at: float) -> ExotelEvent | UnknownEvent:
        """Parse and record one message. Raises ProtocolError when the call must end."""
        if isinstance(raw, bytes):
            raise ProtocolError("binary frames are not part of the protocol", close_code=1003)
        event = parse_event(raw)
        if isinstance(event, MediaEvent):
            self._on_media(event, read_at)
        elif isinstance(event, StartEvent):
            self._on_start(event, read_at)
        elif isinstance(event, StopEvent):
            self._on_stop(event, read_at)
        elif isinstance(event, DtmfEvent | MarkEvent):
            self._require_started(event.event)
            if self._sequence_ok(event.sequence_number, read_at):
                self._on_dtmf_or_mark(event, read_at)
        elif isinstance(event, UnknownEvent):
            self.stats.unknown_events[event.event[:40]] += 1
            logger.info(
                "call_sid=%s stream_sid=%s skipping unknown event %r",
                self.call_sid,
                self.stream_sid,
                event.event[:40],
            )
        return event

    def _require_started(self, what: str) -> None:
        if self.call_sid is None:
            raise ProtocolError(f"'{what}' before 'start'", close_code=1008)
        if self.stopped:
            raise ProtocolError(f"'{what}' after 'stop'", close_code=1008)

    def _on_start(self, event: StartEvent, read_at: float) -> None:
        if self.call_sid is not None:
            raise ProtocolError("second 'start' on one stream", close_code=1008)
        info = event.start
        custom = dict(info.custom_parameters)
        self.custom_parameters = custom
        self.tenant = custom.get("tenant") or self.query.get("tenant") or DEFAULT_TENANT
        self.campaign = custom.get("campaign") or self.query.get("campaign") or DEFAULT_TENANT
        if "media_format" in info.model_fields_set:
            self.sample_rate_hz = info.media_format.sample_rate_hz
        else:
            self.sample_rate_hz = self._query_rate()
        self.call_sid = info.call_sid
        self.stream_sid = event.effective_stream_sid
        self.started_at = read_at
        self.last_media_at = read_at
        self.last_sequence = event.sequence_number
        self._key = info.call_sid.encode()
        self._tag = CallTag(
            info.call_sid, self.stream_sid, self.tenant, self.campaign, custom, self.sample_rate_hz
        )
        self._emit(
            "start",
            read_at,
            sequence_number=event.sequence_number,
            account_sid=info.account_sid,
            from_number=info.from_number,
            to_number=info.to_number,
            sample_rate_hz=self.sample_rate_hz,
            encoding=info.media_format.encoding,
        )
        logger.info(
            "call_sid=%s stream_sid=%s started on %s tenant=%s campaign=%s rate=%d",
            self.call_sid,
            self.stream_sid,
            self.endpoint,
            self.tenant,
            self.campaign,
            self.sample_rate_hz,
        )

    def _query_rate(self) -> int:
        text = self.query.get("sample-rate") or self.query.get("sample_rate")
        if text is None:
            return DEFAULT_SAMPLE_RATE_HZ
        if not text.isdigit() or int(text) not in SUPPORTED_SAMPLE_RATES_HZ:
            raise ProtocolError(f"sample-rate {text!r} not one of {SUPPORTED_SAMPLE_RATES_HZ}")
        return int(text)

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
        self._require_started("media")
        pcm = event.media.pcm16()
        seq = event.sequence_number
        if not self._sequence_ok(seq, read_at):
            return
        self.last_media_at = read_at
        received_at_ms = self.wall_ms()
        rate = self.sample_rate_hz
        offset_ms = self.audio_bytes * 1000 // (rate * 2)
        self.audio_bytes += len(pcm)
        self.frames += 1
        stats = self.stats
        stats.frames_in += 1
        stats.audio_bytes_in += len(pcm)
        media = event.media
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
        self._require_started("stop")
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

    def _emit(self, kind: str, read_at: float, ends_call: bool = False, **fields: object) -> None:
        assert self.call_sid is not None
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
