"""Prometheus metrics of one analytics worker process (own registry; served on ``/metrics``).

The worker's loops count frames, transcripts, scores and dead letters here; three gauges are
read from the worker when Prometheus scrapes (``watch``): active calls, the ASR backlog
(frames read but not yet transcribed) and the ASR lag (how old the oldest of those is).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "agentstream_worker_frames", "audio frames read from agentstream.audio", registry=r
        )
        self.transcripts = Counter(
            "agentstream_worker_transcripts",
            "transcripts published, by kind",
            ["kind"],
            registry=r,
        )
        self.transcript_latency = Histogram(
            "agentstream_worker_transcript_latency_seconds",
            "speech end (ingest receipt) to final transcript publish",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.scores = Counter(
            "agentstream_worker_scores", "utterances scored and published", registry=r
        )
        self.score_latency = Histogram(
            "agentstream_worker_score_latency_seconds",
            "transcript publish to score publish",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.deadletters = Counter(
            "agentstream_deadletters",
            "records written to agentstream.deadletter, by stage",
            ["stage"],
            registry=r,
        )
        self.active_calls = Gauge(
            "agentstream_worker_active_calls", "calls this worker is transcribing", registry=r
        )
        self.asr_backlog = Gauge(
            "agentstream_worker_asr_backlog_frames",
            "audio frames read but not yet through the VAD (queued in the transcriber)",
            registry=r,
        )
        self.asr_lag = Gauge(
            "agentstream_worker_asr_lag_seconds",
            "age of the oldest frame not yet acknowledged, less the replay lead-in (0 when none)",
            registry=r,
        )

    def watch(
        self,
        active_calls: Callable[[], float],
        backlog_frames: Callable[[], float],
        lag_seconds: Callable[[], float],
    ) -> None:
        """Read these from the worker at each scrape."""
        self.active_calls.set_function(active_calls)
        self.asr_backlog.set_function(backlog_frames)
        self.asr_lag.set_function(lag_seconds)

    def serve(self, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """``/metrics`` on ``host:port`` in a daemon thread (prometheus_client's own server)."""
        return start_http_server(port, addr=host, registry=self.registry)


class DecodeCollector(Collector):
    """The recogniser's decode counters, read at each scrape: batches and utterances decoded
    (their ratio is the mean batch), speculative decodes by outcome (``shed``: refused under
    load, see :mod:`analytics.asr.decoder`; ``behind``: not started, the call over the shed
    lag), and what the backlog bound sheds (:mod:`analytics.asr.service`)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        yield CounterMetricFamily(
            "agentstream_worker_decode_batches", "final decode batches run", counts["batches"]
        )
        yield CounterMetricFamily(
            "agentstream_worker_decoded_utterances",
            "utterances decoded in those batches (speculative ones included)",
            counts["decoded"],
        )
        speculative = CounterMetricFamily(
            "agentstream_worker_speculative_decodes",
            "decodes started before the end of speech was certain, by outcome",
            labels=["outcome"],
        )
        for outcome in ("started", "used", "shed", "behind"):
            speculative.add_metric([outcome], counts[f"speculative_{outcome}"])
        yield speculative
        yield CounterMetricFamily(
            "agentstream_worker_partials_shed",
            "partial transcripts not published: the call was over the shed lag",
            counts["partials_shed"],
        )
        yield CounterMetricFamily(
            "agentstream_worker_untranscribed_utterances",
            "utterances published as gap markers, not decoded: the call was over the backlog "
            "bound and AGENTSTREAM_WORKER_ASR_SKIP_OVER_BOUND is on",
            counts["gaps"],
        )
        yield CounterMetricFamily(
            "agentstream_worker_vad_batches",
            "VAD runs over the waiting frames of every call (frames / batches = mean batch)",
            counts["vad_batches"],
        )
        yield CounterMetricFamily(
            "agentstream_worker_vad_frames", "frames through the VAD", counts["vad_frames"]
        )
        yield GaugeMetricFamily(
            "agentstream_worker_calls_over_bound",
            "live calls whose latest frame was processed over the backlog bound "
            "(AGENTSTREAM_WORKER_ASR_MAX_LAG_S) behind real time",
            value=counts["over_bound"],
        )
