"""Capture real topic records for tests: play the demo calls through the whole local pipeline
and write every record of every topic to ``tests/data/topic_records.jsonl``.

    .venv/bin/python scripts/capture_topic_records.py [--out PATH] [--audio-frames 3]

Starts the embedded broker, the stack (ingest, one worker, routing) in a private namespace and
``agentstream simulate`` with the nine demo calls; then reads each topic to its end. Each line is
one record: topic (catalogue name), partition, offset, key, timestamp_ms, headers and the value
(JSON text, or base64 for audio). Audio is cut to the first ``--audio-frames`` frames of each
call so the file stays small.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson

from agentstream.sql.reader import read_topics
from agentstream.stack.broker import EmbeddedBroker
from agentstream.stack.local import LocalStack
from agentstream.stack.topics import create_topics
from schemas.topics import ALL_TOPICS, prefixed

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "topic_records.jsonl")
    parser.add_argument("--audio-frames", type=int, default=3)
    args = parser.parse_args()
    prefix = "cap."
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as logs:
        create_topics(broker.bootstrap, prefix)
        with LocalStack(broker.bootstrap, prefix, workers=1, log_dir=Path(logs)) as stack:
            subprocess.run(  # noqa: S603 - our own CLI
                [
                    sys.executable,
                    "-m",
                    "agentstream.cli",
                    "simulate",
                    "--quiet",
                    "--ingest",
                    stack.ingest_url,
                    "--routing",
                    stack.routing_url,
                    "--bootstrap",
                    broker.bootstrap,
                    "--topic-prefix",
                    prefix,
                ],
                check=False,
            )
            topics = {prefixed(spec, prefix): spec.name.rsplit(".", 1)[-1] for spec in ALL_TOPICS}
            records = read_topics(broker.bootstrap, topics, idle_ms=3000)
    frames: Counter[bytes | None] = Counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as out:
        for name, rows in records.items():
            for r in rows:
                if name == "audio":
                    frames[r.key] += 1
                    if frames[r.key] > args.audio_frames:
                        continue
                    value = {"value_base64": base64.b64encode(r.value or b"").decode()}
                else:
                    value = {"value": (r.value or b"").decode()}
                line = {
                    "topic": name,
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": (r.key or b"").decode(),
                    "timestamp_ms": r.timestamp_ms,
                    "headers": [[k, v.decode()] for k, v in r.headers],
                    **value,
                }
                out.write(orjson.dumps(line) + b"\n")
    print({name: len(rows) for name, rows in records.items()}, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
