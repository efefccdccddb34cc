"""Headless Chromium for browser tests, driven over the DevTools protocol (no extra packages).

Debian's ``chromium`` is started with the flags the project's tests agree on, a private profile
and ``--remote-debugging-port=0``; the port is read from ``DevToolsActivePort`` in the profile.
:class:`Page` sends DevTools commands over the page's WebSocket (``websockets``' sync client):
navigate, evaluate JavaScript, wait for a condition with a bounded deadline, take a screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.helpers import wait_until

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
INSTALL_HINT = (
    "Chromium is not installed: `sudo apt-get install chromium` (Debian/Ubuntu), "
    "or run `make test` as root, which installs it"
)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One browser tab, spoken to over the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{method}: no answer within {timeout}s")
            reply = json.loads(self._ws.recv(timeout=remaining))
            if reply.get("id") != message_id:
                continue  # an event
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            result = reply.get("result", {})
            assert isinstance(result, dict)
            return result

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Until ``expression`` is truthy in the page (bounded)."""
        check = f"Boolean({expression})"  # a DOM node does not serialise by value
        wait_until(lambda: self.evaluate(check) is True, timeout=timeout, interval=0.1)

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def chromium(
    width: int = 1440, height: int = 900, headers: dict[str, str] | None = None
) -> Iterator[Page]:
    """A headless Chromium with one blank tab; closed (and its profile removed) on exit."""
    binary = chromium_path()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    profile = Path(tempfile.mkdtemp(prefix="agentstream-chromium-"))
    proc = subprocess.Popen(  # noqa: S603 - the system browser, our own flags
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, 30)
        port = int(port_file.read_text().splitlines()[0])

        def page_target() -> dict[str, Any] | None:
            url = f"http://127.0.0.1:{port}/json/list"
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - localhost
                targets = json.loads(response.read())
            return next((t for t in targets if t.get("type") == "page"), None)

        wait_until(lambda: page_target() is not None, 30)
        target = page_target()
        assert target is not None
        with connect(target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as ws:
            page = Page(ws)
            page.send("Page.enable")
            page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            if headers:
                page.send("Network.enable")
                page.send("Network.setExtraHTTPHeaders", headers=headers)
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
