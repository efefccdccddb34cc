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
        self.refused: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.protocol_errors: Counter[int] = Counter()
        self.unknown_events: Counter[str] = Counter()
        self.produce_latency = Histogram()


class _StatsCollector(Collector):
    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily("ingest_active_calls", "calls connected now", value=s.active_calls)
        yield GaugeMetricFamily(
            "ingest_buffer_bytes", "bytes waiting for a Kafka ack", value=s.buffer_bytes
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
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, label, counts in (
            ("ingest_refused", "connections refused at the handshake", "reason", s.refused),
            ("ingest_closes", "WebSocket closes by close code", "code", s.closes),
            ("ingest_protocol_errors", "protocol errors by close code", "code", s.protocol_errors),
            ("ingest_unknown_events", "unknown event types skipped", "event", s.unknown_events),
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
