"""Validating what routing reads from Kafka; bad scores and call events become dead letters."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from routing.metrics import RoutingMetrics
from routing.publisher import DecisionPublisher
from schemas.deadletter import Source, dead_letter
from schemas.records import Record

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)

_DEAD_LETTERED = ("scores", "calls")  # a bad decision or transcript is only counted


class RecordParser:
    """Validates records read by the decision reader and the evaluator loop."""

    def __init__(self, metrics: RoutingMetrics, publisher: DecisionPublisher) -> None:
        self.metrics = metrics
        self.publisher = publisher

    def parse(
        self,
        topic_kind: str,
        model: type[R],
        raw: Any,
        kinds: frozenset[str] | None = None,
    ) -> R | None:
        """Validate one record; with ``kinds``, skip other call-event kinds before validating."""
        try:
            data = orjson.loads(raw.value)
            if kinds is not None and isinstance(data, dict) and data.get("kind") not in kinds:
                return None
            return model.model_validate(data)
        except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
            self.metrics.bad_records.labels(topic_kind).inc()
            logger.warning("bad %s record at %s/%s: %s", topic_kind, raw.partition, raw.offset, exc)
            if topic_kind in _DEAD_LETTERED:
                self.publisher.publish_dead_letter(
                    dead_letter(
                        "routing",
                        str(exc),
                        raw=raw.value,
                        call_sid=raw.key,
                        source=Source(raw.topic, raw.partition, raw.offset),
                    )
                )
            return None
