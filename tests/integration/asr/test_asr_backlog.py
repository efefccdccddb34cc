"""The backlog bound in a real worker process: frozen (SIGSTOP) while a call's audio arrives.

The worker (fake recogniser, real broker) runs with a 2.5 s bound and a 1 s shed lag. It takes
a first utterance, is frozen for 4 s (under its 6 s session timeout: no rebalance) while two more
utterances reach the audio topic, then let go; silence and a last utterance follow in real time.

* By default finals are never shed: all four are transcribed, the two late ones say ``behind``
  and the live one does not.
* With ``ASR_SKIP_OVER_BOUND`` the two late ones are published as ``gap`` markers instead, and
  the live one is decoded again: the worker caught up.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest

from agentstream.stack.topics import create_topics
from analytics.asr.audio import chunks, float_to_pcm16
from schemas.records import Transcript
from schemas.topics import TRANSCRIPTS, prefixed
from tests.helpers import read_topic, wait_until
from tests.integration.asr.test_asr_worker import Calls, WorkerProc
from tests.unit.asr.asr_fakes import call_pcm, silence

pytestmark = pytest.mark.integration

FREEZE_S = 4.0


def published(bootstrap: str, prefix: str) -> list[Transcript]:
    records = read_topic(bootstrap, prefixed(TRANSCRIPTS, prefix), 1_000_000, timeout=1.0)
    return [Transcript.model_validate(orjson.loads(r.value)) for r in records]


def finals(records: list[Transcript]) -> list[Transcript]:
    return [t for t in records if t.marker is None and t.is_final]


@pytest.mark.parametrize("skip", [False, True], ids=["decode-all", "skip-over-bound"])
def test_a_frozen_worker_over_its_bound(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, skip: bool
) -> None:
    prefix = f"{topic_prefix}{int(skip)}."
    create_topics(kafka_bootstrap, prefix)
    worker = WorkerProc(kafka_bootstrap, prefix, f"asr-backlog-{prefix}", tmp_path)
    worker.env.update(
        {
            "AGENTSTREAM_WORKER_ASR_MAX_LAG_S": "2.5",
            "AGENTSTREAM_WORKER_ASR_SHED_LAG_S": "1",
            "AGENTSTREAM_WORKER_ASR_SKIP_OVER_BOUND": "true" if skip else "false",
        }
    )
    calls = Calls(kafka_bootstrap, prefix)
    call = "CAbacklog"
    try:
        worker.start()
        calls.frames(call, call_pcm([0.2]))  # its lag depends on how soon the worker joins
        wait_until(lambda: any(t.call_sid == call for t in published(kafka_bootstrap, prefix)), 60)
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            calls.frames(call, call_pcm([0.3, 0.4]))  # read by ingest now, taken 4 s later
            threading.Event().wait(FREEZE_S)  # the fault itself
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        # live, as a call streams: the late audio is taken first (same partition, in order)
        for frame in chunks(float_to_pcm16(silence(2000)) + call_pcm([0.45]), 8000, 100):
            calls.frames(call, frame)
            time.sleep(0.1)

        def done() -> bool:
            return any(t.text == "amp 0.45" for t in finals(published(kafka_bootstrap, prefix)))

        wait_until(done, 60)
        records = published(kafka_bootstrap, prefix)
        log = worker.log()[-3000:]
        heard = {t.text: t.behind for t in finals(records) if t.text != "amp 0.20"}
        gaps = [t for t in records if t.marker == "gap"]
        if skip:
            assert list(heard) == ["amp 0.45"], log
            late = [g for g in gaps if g.start_ms >= 1_600]  # the first ends at 1.6 s
            assert len(late) == 2 and all(g.behind for g in late), log
            assert "published as gaps" in log
        else:
            assert list(heard) == ["amp 0.30", "amp 0.40", "amp 0.45"], log
            assert gaps == []
            assert heard == {
                "amp 0.30": True,
                "amp 0.40": True,
                "amp 0.45": False,
            }
        assert not heard["amp 0.45"]  # caught up
        assert worker.proc.poll() is None
    finally:
        if worker.proc is not None:
            os.kill(worker.proc.pid, signal.SIGCONT)
        calls.close()
        worker.stop()
