"""The supervisor dashboard in headless Chromium while two scripted calls stream through the stack.

The stack (ingest, one worker, routing) runs on the session's broker with Basic auth on, the page
is opened (with the credentials) *before* the calls start, and everything after that reaches it
over server-sent events, without a reload: one calm call and one that escalates. The test waits
(bounded) for both calls, their transcript words and the escalation with its rule, opens the
escalated call, and saves a screenshot: ``$AGENTSTREAM_TEST_ARTIFACTS/dashboard.png``
(default ``test-artifacts/`` in the repository).

Skipped, with how to install it, where Debian's ``chromium`` is absent.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from agentstream.sim.calls import SimOptions, Simulator, load_scenarios, plan_calls
from agentstream.stack.local import LocalStack
from agentstream.stack.topics import create_topics
from tests.browser import INSTALL_HINT, Page, chromium, chromium_path

# One rerun, as for the other e2e tests: whether the escalating call escalates depends on a real
# recogniser keeping up on a shared 2-core CPU (every wait below is bounded, none is a sleep).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.flaky(reruns=1),
]

ROOT = Path(__file__).resolve().parents[2]
AUTH = "supervisor:s3cret-token"
CALM, ESCALATING = "collections-calm", "asks-for-human"


def artifacts_dir() -> Path:
    path = Path(os.environ.get("AGENTSTREAM_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[LocalStack]:
    if chromium_path() is None:
        pytest.skip(INSTALL_HINT)
    if importlib.util.find_spec("routing.dashboard.http") is None:
        pytest.skip("the dashboard is not in the repository yet")
    create_topics(kafka_bootstrap, topic_prefix)
    env = {"AGENTSTREAM_INGEST_BASIC_AUTH": AUTH, "AGENTSTREAM_ROUTING_BASIC_AUTH": AUTH}
    with LocalStack(
        kafka_bootstrap, topic_prefix, workers=1, log_dir=tmp_path, extra_env=env
    ) as running:
        yield running


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", text.lower()))


def _row_text(page: Page, call_sid: str) -> str:
    return str(
        page.evaluate(
            f"(document.querySelector('tr[data-sid=\"{call_sid}\"]') || {{}}).innerText || ''"
        )
    )


async def test_dashboard_shows_live_calls_transcripts_and_the_escalation(
    stack: LocalStack,
) -> None:
    specs = {s.name: s for s in load_scenarios(ROOT / "demo" / "scenarios.yaml")}
    options = SimOptions(
        ingest_url=stack.ingest_url,
        routing_url=stack.routing_url,
        speed=1.0,
        mode="stream",
        basic_auth=AUTH,
    )
    runs = plan_calls([specs[CALM], specs[ESCALATING]], 2, options)
    calm, angry = runs
    header = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}

    def logs() -> str:
        return "\n".join(f"--- {s.name}\n{s.log()[-1500:]}" for s in stack.services)

    def wait_for(page: Page, expression: str) -> None:
        try:
            page.wait_for(expression, 30)
        except TimeoutError as exc:
            stats = page.evaluate("JSON.stringify(window.agentstreamDashboard)")
            raise AssertionError(
                f"{expression}: {exc}\npage: {stats}\n{page.text()}\n{logs()}"
            ) from exc

    with chromium(headers=header) as page:
        page.navigate(f"{stack.routing_url}/dashboard")
        page.wait_for("window.agentstreamDashboard && window.agentstreamDashboard.connected", 30)
        assert "No calls yet" in page.text()

        await Simulator(runs, options).run()
        assert calm.error is None and angry.error is None, (calm.error, angry.error, logs())
        assert (calm.passthru_status, angry.passthru_status) == (200, 302), logs()

        # Both calls arrived over SSE (no reload), the escalation with its rule and reason.
        for run in runs:
            wait_for(page, f"document.querySelector('tr[data-sid=\"{run.call_sid}\"]')")
        wait_for(page, f"document.querySelector('tr.escalated[data-sid=\"{angry.call_sid}\"]')")
        angry_row = _row_text(page, angry.call_sid)
        assert "wants-human" in angry_row, angry_row
        assert "escalated" not in page.evaluate(
            f"document.querySelector('tr[data-sid=\"{calm.call_sid}\"]').className"
        )
        assert page.evaluate("window.agentstreamDashboard.updates") >= 2

        # Opening a call shows its transcript: words of each scripted call.
        for run, spec in ((calm, specs[CALM]), (angry, specs[ESCALATING])):
            page.evaluate(f"document.querySelector('tr[data-sid=\"{run.call_sid}\"]').click()")
            wait_for(
                page,
                f"document.getElementById('d-title').textContent === '{run.call_sid}'"
                " && document.querySelectorAll('#d-transcript li').length >= 2",
            )
            shown = _words(str(page.evaluate("document.getElementById('d-transcript').innerText")))
            scripted = _words(" ".join(spec.lines))
            assert len(shown & scripted) >= 3, (shown, scripted)
        assert "wants-human" in str(
            page.evaluate("document.getElementById('d-escalation').innerText")
        )
        assert (
            "human"
            in str(page.evaluate("document.getElementById('d-transcript').innerText")).lower()
        )

        shot = page.screenshot(artifacts_dir() / "dashboard.png")
    assert shot.stat().st_size > 10_000

    # Every service serves Prometheus /metrics, the worker included (its port is in its log).
    worker_log = stack.service("worker-1").log()
    found = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", worker_log)
    assert found, worker_log[-2000:]
    ingest_metrics = stack.ingest_url.replace("ws://", "http://") + "/metrics"
    for url, wanted in (
        (found.group(1), "agentstream_worker_frames_total"),
        (f"{stack.routing_url}/metrics", "agentstream_routing_passthru_answers_total"),
        (ingest_metrics, "ingest_frames_total"),
    ):
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            text = await response.text()
        sample = re.search(rf"^{wanted}(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.MULTILINE)
        assert sample and float(sample.group(1)) > 0, (url, wanted)
