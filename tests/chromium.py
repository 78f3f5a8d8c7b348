"""Headless Chromium driven over the DevTools protocol, for tests that look at a page the way a person does.

Debian's ``chromium`` package (``/usr/bin/chromium``; the Makefile's test prerequisites install it). The
browser runs with its own profile directory and a DevTools port it picks itself (read back from
``DevToolsActivePort``); the protocol is spoken over tornado's websocket client (tornado comes with Flower).
:meth:`Chromium.load` opens a URL and returns what the page logged as errors (console errors, uncaught
exceptions, blocked or failed loads), :meth:`Chromium.evaluate` runs JavaScript, :meth:`Chromium.screenshot`
returns a PNG of the whole page.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect

NAMES = ("chromium", "chromium-browser", "google-chrome")


def find() -> str | None:
    return next((p for p in map(shutil.which, NAMES) if p), None)


class Chromium:
    def __init__(self, profile: Path, width: int = 1200, height: int = 900) -> None:
        binary = find()
        if binary is None:
            raise RuntimeError("no chromium on PATH")
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            pages = [t for t in json.load(resp) if t.get("type") == "page"]
        self.loop = IOLoop()
        self.ws = self.loop.run_sync(lambda: websocket_connect(pages[0]["webSocketDebuggerUrl"],
                                                               max_message_size=256 * 1024 * 1024), timeout=30)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept in :attr:`events`."""
        self.next_id += 1
        mid = self.next_id

        async def exchange() -> dict[str, Any]:
            await self.ws.write_message(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                raw = await self.ws.read_message()
                if raw is None:
                    raise RuntimeError("DevTools connection closed")
                msg = json.loads(raw)
                if msg.get("id") == mid:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                if "method" in msg:
                    self.events.append(msg)

        return self.loop.run_sync(exchange, timeout=timeout)

    def _wait_event(self, method: str, timeout: float) -> None:
        async def wait() -> None:
            while not any(e["method"] == method for e in self.events):
                raw = await self.ws.read_message()
                if raw is None:
                    raise RuntimeError("DevTools connection closed")
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)

        self.loop.run_sync(wait, timeout=timeout)

    def load(self, url: str, timeout: float = 60) -> list[str]:
        """Navigate and wait for the load event; the errors the page produced (empty when clean)."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired", timeout)
        self.evaluate("1")  # a round trip, so messages logged during load have arrived
        return self.errors()

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + str(p["exceptionDetails"].get("text")))
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')}")
        return out

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
                self.loop.close(all_fds=True)
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
