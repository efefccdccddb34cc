"""``agentstream call CALL_SID``: every record of one call across all topics, in time order.

Reads each catalogue topic from the beginning to its end and keeps the records keyed by the
call SID. Audio frames are summarised in one line per topic (count, sequence range, audio
length) unless ``--audio`` lists them one by one (metadata only).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from agentstream.commands.tail import add_kafka_options, record_time_ms, render, settings_from
from schemas.topics import ALL_TOPICS, AUDIO, prefixed


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("call", help="one call's whole story across the topics, in order")
    parser.add_argument("call_sid")
    add_kafka_options(parser)
    parser.add_argument("--audio", action="store_true", help="list audio frames one by one")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--idle-ms", type=int, default=1000, help="a topic is read when it is quiet this long"
    )
    parser.set_defaults(func=run)


def read_call(
    bootstrap: str,
    topics: list[str],
    call_sid: str,
    idle_ms: int = 1000,
    fetch_max_wait_ms: int = 30,
) -> list[tuple[str, dict[str, Any], int]]:
    """(topic, rendered record, time ms) for every record keyed ``call_sid`` in ``topics``."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
        client_id="agentstream-call",
    )
    key = call_sid.encode()
    found: list[tuple[str, dict[str, Any], int]] = []
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return found
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        # The embedded broker answers ListOffsets(latest) too low, so "the end" is also
        # "nothing new for idle_ms": whichever comes last.
        ends = consumer.end_offsets(tps)
        quiet_since = time.monotonic()
        while True:
            batches = consumer.poll(timeout_ms=200)
            if batches:
                quiet_since = time.monotonic()
            for messages in batches.values():
                for message in messages:
                    if message.key != key:
                        continue
                    body = render(message.topic, message.key, message.value, message.headers)
                    found.append((message.topic, body, record_time_ms(body, message.timestamp)))
            at_end = all(consumer.position(tp) >= ends.get(tp, 0) for tp in tps)
            if at_end and (time.monotonic() - quiet_since) * 1000 >= idle_ms:
                break
    finally:
        consumer.close()
    found.sort(key=lambda item: item[2])
    return found


def summarise_audio(records: list[tuple[str, dict[str, Any], int]]) -> dict[str, Any]:
    metas = [body["audio_frame"] for _, body, _ in records]
    seqs = [int(m["sequence_number"]) for m in metas if str(m.get("sequence_number")).isdigit()]
    pcm = sum(int(body["pcm_bytes"]) for _, body, _ in records)
    rate = int(metas[0].get("sample_rate_hz", 8000)) if metas else 8000
    return {
        "audio_frames": len(records),
        "sequence": [min(seqs), max(seqs)] if seqs else None,
        "pcm_bytes": pcm,
        "audio_ms": pcm * 1000 // (2 * rate),
        "stream_sid": metas[0].get("stream_sid") if metas else None,
    }


def _line(time_ms: int, topic: str, body: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.gmtime(time_ms / 1000)) + f".{time_ms % 1000:03d}"
    short = topic.rsplit(".", 1)[-1]
    if "audio_frames" in body:
        what = f"{body['audio_frames']} frames, seq {body['sequence']}, {body['audio_ms']} ms audio"
    elif short == "calls":
        what = f"{body.get('kind')} " + " ".join(
            f"{k}={body[k]}"
            for k in ("stop_reason", "dtmf_digit", "answer", "sample_rate_hz", "tenant")
            if body.get(k) not in (None, "")
        )
    elif short == "transcripts":
        what = f"{'final' if body.get('is_final') else 'partial'} #{body.get('utterance_index')}: "
        what += f"{body.get('text', '').strip()!r} ({body.get('latency_ms', 0):.0f} ms)"
    elif short == "scores":
        sentiment = body.get("sentiment") or {}
        cats = sorted({k.get("category", "") for k in body.get("keywords") or []})
        what = f"#{body.get('utterance_index')} sentiment {sentiment.get('score', 0):+.2f} "
        what += f"{sentiment.get('label')} keywords {cats}"
    elif short == "decisions":
        what = f"{body.get('decision')} rule={body.get('rule_id')} -> {body.get('target_group')}"
        what += f": {body.get('reason')}"
    elif short == "deadletter":
        what = f"{body.get('stage')}: {body.get('error')}"
    else:
        what = str(body)[:120]
    return f"{stamp}  {short:<11} {what}"


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topics = [prefixed(spec, settings.topic_prefix) for spec in ALL_TOPICS]
    records = read_call(
        settings.bootstrap_servers, topics, args.call_sid, args.idle_ms, settings.fetch_max_wait_ms
    )
    if not records:
        print(f"no records for call {args.call_sid} on {settings.bootstrap_servers}")
        return 1
    audio_topic = prefixed(AUDIO, settings.topic_prefix)
    audio = [r for r in records if r[0] == audio_topic]
    rows = records if args.audio else [r for r in records if r[0] != audio_topic]
    if audio and not args.audio:
        rows.append((audio_topic, summarise_audio(audio), audio[0][2]))
        rows.sort(key=lambda item: item[2])
    for topic, body, at_ms in rows:
        if args.json:
            print(orjson.dumps({"topic": topic, "time_ms": at_ms, "value": body}).decode())
        else:
            print(_line(at_ms, topic, body))
    return 0
