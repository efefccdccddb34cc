"""Prometheus metrics of one routing instance (own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DECISION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            "agentstream_routing_callbacks",
            "Exotel callbacks answered, by endpoint and answer",
            ["endpoint", "answer"],
            registry=r,
        )
        self.refused = Counter(
            "agentstream_routing_refused",
            "requests refused before a handler ran, by path ('other' if unknown) and reason",
            ["path", "reason"],
            registry=r,
        )
        self.callback_seconds = Histogram(
            "agentstream_routing_callback_seconds",
            "time to answer an Exotel callback",
            ["endpoint"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.grace_waits = Counter(
            "agentstream_routing_grace_waits",
            "Passthru callbacks that waited for a pending utterance, by outcome",
            ["outcome"],
            registry=r,
        )
        self.decisions = Counter(
            "agentstream_routing_decisions",
            "decisions published, by decision and rule",
            ["decision", "rule"],
            registry=r,
        )
        self.score_to_decision_seconds = Histogram(
            "agentstream_routing_score_to_decision_seconds",
            "score publish to decision publish",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.speech_to_decision_seconds = Histogram(
            "agentstream_routing_speech_to_decision_seconds",
            "speech end (ingest receipt) to decision publish",
            buckets=(0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=r,
        )
        self.bad_records = Counter(
            "agentstream_routing_bad_records",
            "records that could not be parsed, by topic",
            ["topic"],
            registry=r,
        )
        self.publish_errors = Counter(
            "agentstream_routing_publish_errors",
            "records that could not be published, by topic",
            ["topic"],
            registry=r,
        )
        self.rules_reloads = Counter(
            "agentstream_routing_rules_reloads",
            "rules file reloads, by outcome",
            ["outcome"],
            registry=r,
        )
        self.passthru_answers = Counter(
            "agentstream_routing_passthru_answers",
            "Passthru answers, by whether every utterance heard before was decided",
            ["complete"],
            registry=r,
        )
        self.deadletters = Counter(
            "agentstream_deadletters",
            "records written to agentstream.deadletter, by stage",
            ["stage"],
            registry=r,
        )
        self.summaries = Counter(
            "agentstream_routing_call_summaries",
            "call summaries published, by end reason",
            ["end"],
            registry=r,
        )
        self.dashboard_clients = Gauge(
            "agentstream_routing_dashboard_clients", "dashboard pages connected", registry=r
        )
        self.calls_tracked = Gauge(
            "agentstream_routing_calls_tracked", "calls held in memory", registry=r
        )
        self.ready = Gauge(
            "agentstream_routing_ready", "1 once decision state is rebuilt", registry=r
        )
