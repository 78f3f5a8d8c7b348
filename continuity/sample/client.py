"""A ledger client that follows the route, so it keeps working across a failover.

It asks where the primary is (the route in Redis while it agrees with the live
lease, :func:`continuity.state.routes.serving_route`; or the routes file when
given a path), sends the write there, and on a refused (409: fenced), failed or
unreachable primary looks the route up again and retries until its deadline.
``append`` returns True only for an acknowledged write: the drills' load
generator counts those and later checks none of them was lost.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from continuity.state import routes


class LedgerClient:
    def __init__(self, source: str | Path, service: str = "ledger", timeout: float = 10.0,
                 request_timeout: float = 1.0) -> None:
        self.service = service
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.redis: Any = None
        self.routes_path: Path | None = None
        text = str(source)
        if text.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
            from continuity.redisd import connect

            self.redis = connect(text, socket_timeout=1, socket_connect_timeout=1)
        else:
            self.routes_path = Path(source)
        self.retries = 0
        self.last_ack: dict[str, Any] = {}  # the answer to the last acknowledged write: who took it (node, epoch)

    def route(self) -> dict[str, Any] | None:
        """Where the primary is right now (None when no route is published yet or the source is unreadable)."""
        try:
            if self.redis is not None:
                route = routes.serving_route(self.redis, self.service)
                return route.as_dict() if route else None
            assert self.routes_path is not None
            doc = json.loads(self.routes_path.read_text(encoding="utf-8"))
            return doc.get("services", {}).get(self.service)
        except Exception:  # noqa: BLE001 - an unreadable route is "no route yet": retry
            return None

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except (ValueError, OSError, http.client.HTTPException):
                return exc.code, {}
        # a primary killed or demoted mid-answer cuts the body short (IncompleteRead) or sends no status line:
        # like a refused connection, that is "not acknowledged, ask the route again", never an exception that
        # ends the caller's write loop
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            return 0, {"error": str(exc) or type(exc).__name__}

    def append(self, seq: int, data: dict[str, Any] | None = None, timeout: float | None = None) -> bool:
        """True once some primary acknowledged ``seq`` (durably written); False at the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        body = {"seq": seq, **(data or {})}
        while True:
            route = self.route()
            if route and route.get("url"):
                status, answer = self._request("POST", route["url"].rstrip("/") + "/records", body)
                if status == 200:
                    self.last_ack = answer
                    return True
            if time.monotonic() >= deadline:
                return False
            self.retries += 1
            time.sleep(0.05)

    def records(self, timeout: float | None = None) -> list[int]:
        """Sequence numbers the current primary holds (raises TimeoutError if none answers in time)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            route = self.route()
            if route and route.get("url"):
                status, doc = self._request("GET", route["url"].rstrip("/") + "/records?after=-1")
                if status == 200:
                    return [int(r["seq"]) for r in doc.get("records", [])]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no primary of {self.service} answered within the deadline")
            time.sleep(0.05)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
