"""Ingest counters kept as plain integers on the hot path, exposed to Prometheus on scrape.

A frame costs a few integer additions instead of a locked prometheus_client counter; the
collector turns them into metric families only when ``/metrics`` is read. Each server has its
own registry, so several servers can live in one process (tests).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Metric labels come from closed sets: anything else is counted as "other".
CLOSE_CODE_LABELS = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011})
LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Fixed-bucket histogram without locks (single event loop)."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", self.count))
        return out


class IngestStats:
    """Every number the ingest server reports; mutated only on the event loop."""

    def __init__(self) -> None:
        self.active_calls = 0
        self.calls_total = 0
        self.frames_in = 0
        self.audio_bytes_in = 0
        self.records_acked = 0
        self.frames_acked = 0
        self.frames_dropped = 0
        self.buffer_bytes = 0
        self.produce_retries = 0
        self.gaps = 0
        self.duplicates = 0
        self.deadletters = 0
        self.handoffs = 0
        self.bad_frames = 0  # undecodable messages dead-lettered while the call went on
        self.events_before_start = 0  # connections that sent media/stop/... before start
        self.rate_disagreements = 0  # URL sample-rate != media_format: decided from frames
        self.outbound_frames = 0  # media.track outbound (bot/agent) frames kept, not the caller
        self.records_too_large = 0  # records over the size limit, dead-lettered instead
        self.prestart_dropped = 0  # /voicebot messages before start past the buffer cap
        self.refused: Counter[str] = Counter()
        self.closes: Counter[int | str] = Counter()  # keys from CLOSE_CODE_LABELS or "other"
        self.protocol_errors: Counter[int] = Counter()
        self.unknown_events: Counter[str] = Counter()  # always "other": names are input
        self.codecs: Counter[str] = Counter()  # pcm16, mulaw, alaw, unknown
        self.call_sid_sources: Counter[str] = Counter()  # call_sid, callSid, leg_sid, ...
        self.produce_latency = Histogram()
        self.process_index: int | None = None  # which of `ingest --processes N` (None: the only)

    def count_close(self, code: int) -> None:
        self.closes[code if code in CLOSE_CODE_LABELS else "other"] += 1


class _StatsCollector(Collector):
    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily("ingest_active_calls", "calls connected now", value=s.active_calls)
        yield GaugeMetricFamily(
            "ingest_buffer_bytes", "bytes waiting for a Kafka ack", value=s.buffer_bytes
        )
        if s.process_index is not None:
            yield GaugeMetricFamily(
                "ingest_process_index",
                "which process of `agentstream ingest --processes N` answered (0 .. N-1)",
                value=s.process_index,
            )
        for name, doc, value in (
            ("ingest_calls", "calls accepted", s.calls_total),
            ("ingest_frames", "media frames received", s.frames_in),
            ("ingest_audio_bytes", "PCM bytes received", s.audio_bytes_in),
            ("ingest_records_acked", "records acknowledged by Kafka", s.records_acked),
            ("ingest_frames_acked", "audio frames acknowledged by Kafka", s.frames_acked),
            ("ingest_frames_dropped", "audio frames dropped: buffer full", s.frames_dropped),
            ("ingest_produce_retries", "batches retried after a Kafka error", s.produce_retries),
            ("ingest_sequence_gaps", "sequence gaps seen in Exotel streams", s.gaps),
            ("ingest_sequence_duplicates", "duplicate sequence numbers seen", s.duplicates),
            ("ingest_deadletters", "dead-letter records written", s.deadletters),
            ("ingest_handoffs", "voicebot calls handed off to an agent", s.handoffs),
            ("ingest_bad_frames", "undecodable messages dead-lettered", s.bad_frames),
            (
                "ingest_events_before_start",
                "connections with events before start",
                s.events_before_start,
            ),
            (
                "ingest_rate_disagreements",
                "URL and media_format sample rates differed",
                s.rate_disagreements,
            ),
            (
                "ingest_outbound_frames",
                "media frames of the outbound (bot) track",
                s.outbound_frames,
            ),
            (
                "ingest_records_too_large",
                "records over the size limit, dead-lettered",
                s.records_too_large,
            ),
            (
                "ingest_prestart_dropped",
                "voicebot messages before start over the cap",
                s.prestart_dropped,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, label, counts in (
            ("ingest_refused", "connections refused at the handshake", "reason", s.refused),
            ("ingest_closes", "WebSocket closes by close code", "code", s.closes),
            ("ingest_protocol_errors", "protocol errors by close code", "code", s.protocol_errors),
            ("ingest_unknown_events", "unknown event types skipped", "event", s.unknown_events),
            ("ingest_calls_by_codec", "started calls by audio codec", "codec", s.codecs),
            (
                "ingest_call_sid_source",
                "started calls by call SID field",
                "source",
                s.call_sid_sources,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(counts.items(), key=lambda kv: str(kv[0])):
                family.add_metric([str(key)], value)
            yield family
        hist = HistogramMetricFamily(
            "ingest_produce_latency_seconds", "frame read to Kafka ack", labels=[]
        )
        hist.add_metric([], s.produce_latency.buckets(), s.produce_latency.total)
        yield hist


def make_registry(stats: IngestStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
