"""``agentstream tail TOPIC``: follow one topic and print each record as readable JSON.

JSON topics print their value; the audio topic prints the frame's metadata headers and the size
of the PCM, never the audio. TOPIC is a catalogue name (``agentstream.decisions``) or its last
part (``decisions``); ``--topic-prefix`` adds a test namespace.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.records import AUDIO_HEADER_PREFIX
from schemas.settings import KafkaFields
from schemas.topics import ALL_TOPICS, prefixed

SHORT_NAMES = (
    "audio",
    "calls",
    "transcripts",
    "scores",
    "decisions",
    "deadletter",
    "call_summaries",
)


class InspectSettings(KafkaFields, BaseSettings):
    """Where ``tail``, ``call`` and ``query`` read (``AGENTSTREAM_``, KAFKA_BOOTSTRAP_SERVERS)."""

    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_", frozen=True, populate_by_name=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("tail", help="follow a topic, pretty JSON (audio as metadata only)")
    parser.add_argument("topic", help=f"topic name or one of: {', '.join(SHORT_NAMES)}")
    add_kafka_options(parser)
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    parser.add_argument("--call", help="only records of this call SID (the record key)")
    parser.add_argument("-n", "--max", type=int, default=0, help="stop after this many records")
    parser.add_argument("--compact", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--no-follow", action="store_true", help="stop when the topic has been read to its end"
    )
    parser.set_defaults(func=run)


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-prefix", help="topic namespace prefix (AGENTSTREAM_TOPIC_PREFIX)")


def settings_from(args: argparse.Namespace) -> InspectSettings:
    overrides = {
        key: value
        for key, value in (
            ("bootstrap_servers", args.bootstrap),
            ("topic_prefix", args.topic_prefix),
        )
        if value is not None
    }
    return InspectSettings(**overrides)


def topic_name(name: str, prefix: str) -> str:
    for spec in ALL_TOPICS:
        if name in (spec.name, spec.name.rsplit(".", 1)[-1]):
            return prefixed(spec, prefix)
    return name


def is_audio_topic(topic: str) -> bool:
    return topic.endswith(".audio")


def render(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> dict[str, Any]:
    """A record as a plain dict: the JSON value, or the audio frame's metadata."""
    if is_audio_topic(topic):
        meta = {
            name[len(AUDIO_HEADER_PREFIX) :]: raw.decode("utf-8", "replace")
            for name, raw in (headers or [])
            if name.startswith(AUDIO_HEADER_PREFIX)
        }
        return {"audio_frame": meta, "pcm_bytes": len(value or b"")}
    try:
        decoded = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return {"undecodable_bytes": len(value or b""), "key": (key or b"").decode("replace")}
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def record_time_ms(record: dict[str, Any], fallback_ms: int) -> int:
    """The record's own event time (whichever ``*_at_ms`` it carries), else Kafka's timestamp."""
    frame = record.get("audio_frame")
    if isinstance(frame, dict) and str(frame.get("received_at_ms", "")).isdigit():
        return int(frame["received_at_ms"])
    for name in ("occurred_at_ms", "produced_at_ms", "scored_at_ms", "decided_at_ms"):
        value = record.get(name)
        if isinstance(value, int):
            return value
    return fallback_ms


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topic = topic_name(args.topic, settings.topic_prefix)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        client_id="agentstream-tail",
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            print(f"error: topic {topic} not found on {settings.bootstrap_servers}")
            return 2
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if args.from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        option = 0 if args.compact else orjson.OPT_INDENT_2
        shown = 0
        want = args.call.encode() if args.call else None
        while True:
            batches = consumer.poll(timeout_ms=500)
            if not batches and args.no_follow:
                return 0
            for messages in batches.values():
                for message in messages:
                    if want is not None and message.key != want:
                        continue
                    body = render(topic, message.key, message.value, message.headers)
                    line = {
                        "topic": topic,
                        "partition": message.partition,
                        "offset": message.offset,
                        "key": (message.key or b"").decode("utf-8", "replace"),
                        "value": body,
                    }
                    print(orjson.dumps(line, option=option).decode(), flush=True)
                    shown += 1
                    if args.max and shown >= args.max:
                        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
