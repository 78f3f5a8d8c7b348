"""Helpers for the replication tests: replicators and a sample ledger on bed hosts, a steady writer, copies.

On the bed (:mod:`continuity.netbed`) each node runs its own replicator process
(``python -m continuity.replication``) inside its namespace, on its own root; the
test (root namespace, the "bed") may read every root, which is how it compares
the copies. The ledger's lease is taken by the test for an hour, so no worker is
needed where a test is about replication alone.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from continuity.blueprint import load_blueprint
from continuity.netbed import Bed
from continuity.pulse import PREFIX
from continuity.services.hooks import service_port
from continuity.state import leases, pulse_stream
from tests.helpers import wait_for

LEASE_TTL = 3600.0


def with_replication(path: Path, service: str = "ledger", **spec: Any) -> Path:
    """The blueprint at ``path`` with ``replication: spec`` on ``service`` (written in place)."""
    doc = yaml.safe_load(path.read_text())
    for dom in doc["domains"].values():
        if service in dom["services"]:
            dom["services"][service]["replication"] = spec
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ledger_path(bed: Bed, node: str, service: str = "ledger") -> Path:
    return bed.host(node).root / "nodes" / node / service / "ledger.jsonl"


def seqs(path: Path) -> list[int]:
    """The seq of every complete record of a ledger copy (read by the bed, which may read any root)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in data[:data.rfind(b"\n") + 1].splitlines():
        try:
            out.append(int(json.loads(line)["seq"]))
        except (ValueError, KeyError, TypeError):
            pass
    return out


@dataclass
class ReplicationBed:
    """Replicators on every host of a bed, the ledger served by ``primary``, its lease held by the test."""

    bed: Bed
    primary: str = "core-a"
    service: str = "ledger"
    procs: dict[str, Any] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    client: Any = None

    def __post_init__(self) -> None:
        self.bp = load_blueprint(self.bed.blueprint_path)
        self.client = self.bed.client()

    def take_lease(self) -> None:
        assert leases.bootstrap(self.client, self.service, self.primary, LEASE_TTL)

    def start_replicator(self, node: str) -> Any:
        self.starts[node] = self.starts.get(node, 0) + 1
        proc = self.bed.run(node, [sys.executable, "-m", "continuity.replication", "--node", node],
                            f"replicator-{node}-{self.starts[node]}")
        self.procs[node] = proc
        return proc

    def start_service(self) -> str:
        node = self.primary
        port = service_port(self.bp, self.service, node)
        address = self.bed.host(node).address
        self.bed.run(node, [sys.executable, "-m", "continuity.sample.ledger_service", "serve", "--service",
                            self.service, "--node", node, "--port", str(port), "--epoch", "1", "--host", address],
                     f"service-{node}")
        url = f"{address}:{port}"
        wait_for(lambda: _health(url) is not None, timeout=60, what=f"the ledger on {node}")
        return url

    def start(self, nodes: tuple[str, ...] = ("core-a", "core-b", "core-c")) -> str:
        self.take_lease()
        for n in nodes:
            self.start_replicator(n)
        return self.start_service()

    def events(self, kind: str) -> list[dict[str, Any]]:
        """Pulse events of ``kind`` (short name) from the Redis stream, oldest first."""
        return [ev for _, ev in reversed(pulse_stream.newest(self.client, 10_000))
                if ev.get("kind") == PREFIX + kind]

    def close(self) -> None:
        self.client.close()


def _health(hostport: str) -> dict[str, Any] | None:
    try:
        conn = http.client.HTTPConnection(hostport, timeout=1)
        conn.request("GET", "/health")
        r = conn.getresponse()
        return json.loads(r.read()) if r.status == 200 else None
    except (OSError, ValueError):
        return None


class Writer:
    """A steady client: writes seq 1, 2, ... to ``hostport`` at about ``rate`` a second, one at a time, on one
    keep-alive connection; remembers each write's HTTP status (0: no answer) and body."""

    def __init__(self, hostport: str, rate: float = 200.0, timeout: float = 5.0) -> None:
        self.hostport = hostport
        self.rate = rate
        self.timeout = timeout
        self.results: dict[int, tuple[int, dict[str, Any]]] = {}
        self.acked_at: dict[int, float] = {}  # seq -> when its acknowledgement arrived (time.monotonic)
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.next = 1

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> Writer:
        self._stop.set()
        self._thread.join(30)
        return self

    def _post(self, conn: http.client.HTTPConnection, seq: int) -> tuple[int, dict[str, Any]]:
        conn.request("POST", "/records", body=json.dumps({"seq": seq}), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            seq = self.next
            self.next += 1
            t0 = time.monotonic()
            try:
                conn = conn or http.client.HTTPConnection(self.hostport, timeout=self.timeout)
                self.results[seq] = self._post(conn, seq)
                if self.results[seq][0] == 200:
                    self.acked_at[seq] = time.monotonic()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                self.results[seq] = (0, {"error": str(exc)})
                if conn is not None:
                    conn.close()
                conn = None
            self.latencies.append(time.monotonic() - t0)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()
        if conn is not None:
            conn.close()

    def acked(self) -> list[int]:
        return sorted(s for s, (code, _) in self.results.items() if code == 200)

    def with_status(self, code: int) -> list[int]:
        return sorted(s for s, (c, _) in self.results.items() if c == code)

    def wait_acked(self, n: int, timeout: float = 60) -> None:
        wait_for(lambda: len(self.acked()) >= n, timeout=timeout, what=f"{n} acknowledged writes")
