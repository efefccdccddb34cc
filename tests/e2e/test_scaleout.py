"""Scale-out: two worker processes in one consumer group share the partitions; killing one
mid-run moves its calls to the other with no lost and no duplicated transcript or decision.

Real processes on the session's embedded broker. Call SIDs are chosen so that half the calls
hash (Kafka's murmur2 partitioner, as ingest uses) to partitions of each worker. The victim is
SIGKILLed right after it published a transcript of one of its calls: the worst moment, since
the frames of that utterance may not be committed yet and its successor replays them.

"No lost": every stretch of speech in each call's audio is (mostly) inside final transcripts.
"No duplicate": no utterance is transcribed, scored or decided twice, at most one escalation per
call, and each call's expected decision is reached exactly once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from agentstream.sim.calls import CallRun, SimOptions, Simulator, load_scenarios, plan_calls
from agentstream.sim.results import TopicWatcher
from agentstream.stack.local import LocalStack
from agentstream.stack.topics import create_topics
from schemas.topics import AUDIO
from tests.helpers import async_wait_until

# One rerun: the pass/fail depends on a real recogniser hearing the demo phrases and on timing
# under a shared 2-core CPU; a second failure is a real one.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.flaky(reruns=1),
]

ROOT = Path(__file__).resolve().parents[2]
CALLS = ("asks-for-human", "collections-calm", "interview-calm", "legal-threat")
PARTITIONS = AUDIO.partitions


def partition_of(call_sid: str) -> int:
    return int(murmur2(call_sid.encode()) & 0x7FFFFFFF) % PARTITIONS


def active_partitions(log: str) -> set[int]:
    """Partitions of the latest assignment, from faust's "Highwater - Active" recovery table
    (the worker's table is co-partitioned with the audio topic)."""
    blocks = log.split("Executing _on_partitions_assigned")
    if len(blocks) < 2 or "Highwater - Active" not in blocks[-1]:
        return set()
    # The table runs from its title to the next log line (which starts with "[").
    table = blocks[-1].split("Highwater - Active", 1)[1].split("\n[", 1)[0]
    return {int(n) for n in re.findall(r"^\|[^|]*\|\s*(\d+)\s*\|", table, re.M)}


async def group_members(bootstrap: str, group: str) -> tuple[str, set[str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = (await admin.describe_consumer_groups([group]))[0]
    finally:
        await admin.close()
    _, _, state, _, _, members = response.groups[0]
    return state, {member[0].rsplit("-", 5)[0] for member in members}


def speech_spans_ms(path: Path, min_gap_ms: int = 600) -> list[tuple[int, int]]:
    """Stretches of speech in a demo call (20 ms energy frames, gaps shorter than min_gap
    joined): what a complete transcription must cover."""
    audio, rate = sf.read(str(path), dtype="float32")
    hop = rate // 50
    energy = np.sqrt(np.mean(audio[: len(audio) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    loud = np.flatnonzero(energy > 0.02)
    spans: list[tuple[int, int]] = []
    for frame in loud:
        start, end = int(frame) * 20, int(frame) * 20 + 20
        if spans and start - spans[-1][1] < min_gap_ms:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return [s for s in spans if s[1] - s[0] >= 300]


def _assign_sids(runs: list[CallRun], owners: dict[str, set[int]]) -> dict[str, str]:
    """Give half the calls SIDs on worker-1's partitions and half on worker-2's."""
    names = sorted(owners)
    owner_of: dict[str, str] = {}
    counter = 0
    for n, run in enumerate(runs):
        wanted = owners[names[n % 2]]
        while True:
            counter += 1
            sid = f"{run.call_sid}x{counter}"
            if partition_of(sid) in wanted:
                break
        run.call_sid = sid
        owner_of[sid] = names[n % 2]
    return owner_of


def coverage(span: tuple[int, int], finals: list[Any]) -> float:
    """The share of a speech span inside the audio of the final transcripts (a resumed call
    that skipped frames it never transcribed has only part of the span)."""
    start, end = span
    covered, cursor = 0, start
    for t in sorted(finals, key=lambda t: t.start_ms):
        lo, hi = max(t.start_ms, cursor), min(t.end_ms, end)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return covered / max(1, end - start)


MIN_COVERAGE = 0.6  # of each speech stretch; VAD edges and joined pauses make it under 1


def _covered(run: CallRun, watcher: TopicWatcher) -> bool:
    records = watcher.calls[run.call_sid]
    finals = records.finals
    spans = speech_spans_ms(run.spec.path)
    heard = all(coverage(span, finals) >= MIN_COVERAGE for span in spans)
    escalated = any(d.decision == "escalate" for d in records.decisions)
    return heard and (escalated or run.spec.expected != "escalate")


async def test_two_workers_share_calls_and_survive_a_kill(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    missing = [
        s
        for s in ("ingest", "worker", "routing")
        if importlib.util.find_spec(f"agentstream.commands.{s}") is None
    ]
    if missing:
        pytest.skip(f"services not in the repository yet: {missing}")
    create_topics(kafka_bootstrap, topic_prefix)
    stack = LocalStack(kafka_bootstrap, topic_prefix, workers=2, log_dir=tmp_path)
    group = f"agentstream-analytics-{topic_prefix.strip('.')}"
    with stack:
        workers = {name: stack.service(name) for name in ("worker-1", "worker-2")}

        async def both_active() -> bool:
            state, members = await group_members(kafka_bootstrap, group)
            if state != "Stable" or members != set(workers):
                return False
            owned = [active_partitions(w.log()) for w in workers.values()]
            tails = [
                w.log().rsplit("Executing _on_partitions_assigned", 1)[-1] for w in workers.values()
            ]
            return all(owned) and all("Worker ready" in t for t in tails)

        await async_wait_until(both_active, timeout=60, interval=0.5)
        owners = {name: active_partitions(w.log()) for name, w in workers.items()}
        # The two workers share the partitions: disjoint, and together all of them.
        assert not owners["worker-1"] & owners["worker-2"], owners
        assert owners["worker-1"] | owners["worker-2"] == set(range(PARTITIONS)), owners

        specs = {s.name: s for s in load_scenarios(ROOT / "demo" / "scenarios.yaml")}
        options = SimOptions(
            ingest_url=stack.ingest_url,
            routing_url=stack.routing_url,
            speed=1.0,
            rates=(8000,),
            ramp_ms=300,
        )
        runs = plan_calls([specs[name] for name in CALLS], len(CALLS), options)
        owner_of = _assign_sids(runs, owners)
        watcher = TopicWatcher(kafka_bootstrap, topic_prefix)
        watcher.watch(run.call_sid for run in runs)
        await watcher.start()
        victim_calls = [sid for sid, owner in owner_of.items() if owner == "worker-1"]
        try:
            playing = asyncio.create_task(Simulator(runs, options).run())
            # Kill worker-1 right after it published a transcript of one of its calls.
            await async_wait_until(
                lambda: any(watcher.calls[sid].finals for sid in victim_calls), timeout=60
            )
            killed_at = time.monotonic()
            workers["worker-1"].kill()
            assert any(r.frames_sent < r.frames_total for r in runs), "kill was not mid-run"
            await playing

            # The survivor takes over only after the victim's session times out, so wait for
            # what a complete run must have (every speech stretch transcribed, every expected
            # escalation), then a little longer for anything duplicated to show up.
            def complete() -> bool:
                return all(_covered(run, watcher) for run in runs)

            try:
                await async_wait_until(complete, timeout=90, interval=0.25)
                settled = True
            except TimeoutError:
                settled = False
            await watcher.settle(10.0)
            await asyncio.sleep(2.0)
        finally:
            await watcher.stop()
        failover_s = time.monotonic() - killed_at
        logs = "\n".join(f"--- {s.name}\n{s.log()[-2500:]}" for s in stack.services)
        summary = {
            run.spec.name: [
                (t.start_ms, t.end_ms, t.text) for t in watcher.calls[run.call_sid].finals
            ]
            for run in runs
        }
        assert settled, f"incomplete {failover_s:.0f} s after the kill: {summary}\n{logs}"
        assert workers["worker-2"].alive()

    for run in runs:
        records = watcher.calls[run.call_sid]
        label = f"{run.spec.name} ({owner_of[run.call_sid]}, {run.call_sid})"
        assert run.error is None, label
        finals = records.finals
        # No duplicate: each utterance transcribed, scored and decided once.
        ids = Counter(t.utterance_id for t in finals)
        assert max(ids.values()) == 1, f"{label}: duplicated transcripts {ids}"
        scored = Counter(s.utterance_id for s in records.scores)
        assert max(scored.values()) == 1, f"{label}: duplicated scores {scored}"
        decided = Counter(d.utterance_id for d in records.decisions)
        assert max(decided.values()) == 1, f"{label}: duplicated decisions {decided}"
        # No loss: every stretch of speech in the audio overlaps a final transcript.
        for start, end in speech_spans_ms(run.spec.path):
            assert coverage((start, end), finals) >= MIN_COVERAGE, (
                f"{label}: speech at {start}-{end} ms is not (all) transcribed: "
                f"{[(t.start_ms, t.end_ms, t.text) for t in finals]}"
            )
        escalations = [d for d in records.decisions if d.decision == "escalate"]
        expected = 1 if run.spec.expected == "escalate" else 0
        assert len(escalations) == expected, (
            f"{label}: escalations {[d.rule_id for d in escalations]}; "
            f"transcripts {[(t.utterance_id, t.text) for t in finals]}; "
            f"decisions {[(d.utterance_id, d.decision, d.rule_id) for d in records.decisions]}"
        )
