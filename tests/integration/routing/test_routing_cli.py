"""``agentstream routing`` as a process: prints where it listens, readiness, SIGHUP reload."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from agentstream.stack.topics import create_topics
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

RULES = """version: 1
agent_groups:
  support: {numbers: ["+911"]}
default:
  rules:
    - {id: zero, kind: dtmf, digits: ["0"], target: support}
"""


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_routing_command_serves_and_reloads_on_sighup(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    log = tmp_path / "stderr.log"
    env = dict(
        os.environ,
        AGENTSTREAM_ROUTING_TOPIC_PREFIX=topic_prefix,
        AGENTSTREAM_ROUTING_RULES_POLL_S="0",
        AGENTSTREAM_ROUTING_CONSUMER_GROUP=f"{topic_prefix}cli",
        AGENTSTREAM_ROUTING_READY_REQUIRES_WORKERS="false",  # routing alone, no workers
    )
    with log.open("wb") as err:
        proc = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "agentstream.cli",
                "routing",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--rules",
                str(rules),
                "--bootstrap",
                kafka_bootstrap,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"routing listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        assert "auth: OFF" in line and "routing auth is OFF" in log.read_text()  # loud
        base = f"http://127.0.0.1:{match.group(1)}"
        wait_until(lambda: http_status(f"{base}/ready") == 200, timeout=20)
        assert http_status(f"{base}/exotel/passthru?CallSid=CA1&digits=%220%22") == 302
        assert http_status(f"{base}/exotel/passthru?CallSid=CA2&digits=%229%22") == 200

        rules.write_text(RULES.replace('digits: ["0"]', 'digits: ["0", "9"]'))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "rules reloaded" in log.read_text(), timeout=10)
        assert http_status(f"{base}/exotel/passthru?CallSid=CA1") == 302  # state kept
        assert http_status(f"{base}/exotel/passthru?CallSid=CA3&digits=%229%22") == 302

        # A rules file that is not UTF-8, or nested too deeply, keeps the current rules.
        for bad in (b"version: 1\n# caf\xe9\n", b"a: " + b"[" * 3000 + b"]" * 3000):
            failures = log.read_text(errors="replace").count("rules reload failed")
            rules.write_bytes(bad)
            proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda n=failures: log.read_text(errors="replace").count("rules reload failed") > n,
                timeout=10,
            )
            assert proc.poll() is None
            assert http_status(f"{base}/exotel/passthru?CallSid=CA4&digits=%229%22") == 302
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    assert code == 0, log.read_text()[-2000:]
