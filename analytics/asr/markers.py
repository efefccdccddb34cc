"""Watermark transcripts: what the ASR stage publishes besides utterances.

A marker is a :class:`schemas.records.Transcript` with ``marker`` set, empty text and
``is_final=False`` (a consumer that knows nothing of markers sees an empty partial and skips it).
It travels on the call's transcripts partition behind the call's utterances, so whoever reads it
has read everything before it:

* ``progress``: the call's audio is transcribed up to ``end_ms`` (no utterance open before it);
  published every ``progress_interval_ms`` of audio while the caller is not speaking. Routing
  measures silence and call duration in this audio time, never in wall-clock time.
* ``end``: the call stopped and its last utterance (flushed at ``stop``) is published.
* ``gap``: the utterance ``start_ms``..``end_ms`` was cut but not decoded, because the worker
  took its audio more than its bound behind real time and skips when over it
  (:mod:`analytics.asr.lag`, opt-in).
  Its ``utterance_index`` is the one its transcript would have had, so a replay of it is seen
  as one; scoring counts it in the call's state, routing marks the call's decisions and
  Passthru answers incomplete.

``speech_end_at_ms`` carries the wall clock at which ingest received the last frame the marker
covers, so routing can tell whether audio received before a Passthru request is analysed.
"""

from __future__ import annotations

from typing import Literal

from schemas.records import AudioFrameMeta, Transcript

MarkerKind = Literal["progress", "end", "gap"]


def marker_transcript(
    kind: MarkerKind,
    *,
    call_sid: str,
    stream_sid: str,
    tenant: str,
    campaign: str,
    audio_ms: int,
    received_at_ms: int,
    produced_at_ms: int,
    engine: str,
    start_ms: int | None = None,
    behind: bool = False,
) -> Transcript:
    """``audio_ms`` is where the marker stands (``end_ms``); ``start_ms`` a gap's start;
    ``behind``: the worker was over its backlog bound (``Transcript.behind``)."""
    start = audio_ms if start_ms is None else start_ms
    return Transcript(
        call_sid=call_sid,
        stream_sid=stream_sid,
        tenant=tenant,
        campaign=campaign,
        utterance_id=f"{call_sid}-{kind}-{start}",
        utterance_index=start,
        is_final=False,
        text="",
        start_ms=start,
        end_ms=audio_ms,
        engine=engine,
        speech_end_at_ms=received_at_ms,
        produced_at_ms=produced_at_ms,
        latency_ms=float(max(0, produced_at_ms - received_at_ms)),
        marker=kind,
        behind=behind,
    )


def call_marker(
    kind: MarkerKind,
    meta: AudioFrameMeta,
    *,
    audio_ms: int,
    received_at_ms: int,
    produced_at_ms: int,
    engine: str,
    start_ms: int | None = None,
    behind: bool = False,
) -> Transcript:
    """The marker of the call a frame (``meta``) belongs to."""
    return marker_transcript(
        kind,
        call_sid=meta.call_sid,
        stream_sid=meta.stream_sid,
        tenant=meta.tenant,
        campaign=meta.campaign,
        audio_ms=audio_ms,
        received_at_ms=received_at_ms,
        produced_at_ms=produced_at_ms,
        engine=engine,
        start_ms=start_ms,
        behind=behind,
    )
