"""Headless Chromium driven over the DevTools protocol, for browser tests: open a page, evaluate JavaScript in it
(values come back as JSON), take a screenshot. Debian's `chromium` and the `websockets` package (uvicorn's) are all it
needs. The browser runs in its own process group, with a profile folder the caller gives; `close` kills the group.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from websockets.sync.client import ClientConnection, connect

START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


NAVIGATED = "Inspected target navigated or closed"  # Chromium's answer to a call that a navigation cut short


class DevToolsError(RuntimeError):
    """The browser answered a call with an error, or a page's script threw."""


class Browser:
    """One headless Chromium and its one page."""

    def __init__(self, executable: str, profile: Path, width: int = 1280, height: int = 1400) -> None:
        self.profile = profile
        argv = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._ids = itertools.count(1)
        self._opened = contextlib.ExitStack()
        self._socket: ClientConnection | None = None
        try:
            url = self._page_socket()
            self._socket = self._opened.enter_context(connect(url, max_size=None, open_timeout=START_TIMEOUT_S))
        except BaseException:
            self.close()
            raise

    def _page_socket(self) -> str:
        """The DevTools websocket of the browser's page, once the browser says on which port it listens."""
        deadline = time.monotonic() + START_TIMEOUT_S
        port_file = self.profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevToolsError(f"chromium exited {self.process.returncode} at start")
            if port_file.exists() and (lines := port_file.read_text().split()):
                with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list", timeout=5) as answer:
                    pages = [t for t in json.load(answer) if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise DevToolsError(f"chromium did not open its DevTools port within {START_TIMEOUT_S:g} s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result (the events meanwhile are dropped)."""
        assert self._socket is not None
        call_id = next(self._ids)
        self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.0, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only; promises are awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', result)}")
        return result["result"].get("value")

    def poll(self, expression: str) -> Any:
        """`evaluate` for a wait: a page that navigated during the call (a form's submit landing) reads as None, to
        be asked again, where `evaluate` raises."""
        try:
            return self.evaluate(expression)
        except DevToolsError as exc:
            if NAVIGATED in str(exc):
                return None
            raise

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Kill the browser and everything it started; remove its profile."""
        self._opened.close()
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for child in children:  # one that left the group (the zygote may) too
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
