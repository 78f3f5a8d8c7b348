"""Helpers for the failover tests: a fast test fleet on free ports, service cleanup, pulse checks."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity.redisd import free_port
from tests.helpers import ROOT

HOOK = ["{python}", "-m", "continuity.sample.ledger_service"]


def make_blueprint(tmp_path: Path, services: tuple[str, ...] = ("ledger",), start_prefix: list[str] | None = None,
                   third_node: bool = False, **policy: str) -> Path:
    """The sample fleet cut down to ``services``, on free ports (tests never collide with a running demo).

    ``start_prefix`` wraps every start hook (e.g. in :mod:`tests.failover_gatehook`); ``third_node`` adds a
    core node ``core-c`` as every service's last standby.
    """
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    pol = {"heartbeat_interval": "0.5s", "lease_ttl": "2s", "lease_margin": "0.5s", "suspect_after": "1s",
           "dead_after": "1.5s", "failover_cooldown": "30s", "tilt_gap": "3s", "tilt_grace": "5s"}
    pol.update(policy)
    doc["policy"].update(pol)
    for dom in list(doc["domains"]):
        svcs = doc["domains"][dom]["services"]
        for sid in list(svcs):
            if sid not in services:
                del svcs[sid]
            else:
                svcs[sid]["depends_on"] = [d for d in svcs[sid].get("depends_on", []) if d in services]
                if "port" in svcs[sid]:
                    svcs[sid]["port"] = _free_block()
                if start_prefix and svcs[sid].get("hooks", {}).get("start"):
                    svcs[sid]["hooks"]["start"] = list(start_prefix) + svcs[sid]["hooks"]["start"]
        if not svcs:
            del doc["domains"][dom]
    if third_node:
        doc["nodes"]["core-c"] = {"kind": "core", "labels": {"zone": "c", "port_offset": "300"}}
        for dom in doc["domains"].values():
            for svc in dom["services"].values():
                svc["placement"]["standbys"] = [*svc["placement"].get("standbys", []), "core-c"]
    path = tmp_path / "blueprint.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _free_block() -> int:
    """A base port p such that p, p+100 and p+200 (the node offsets) are all free right now."""
    for _ in range(200):
        p = free_port()
        if p + 300 < 65535 and all(_is_free(p + off) for off in (100, 200, 300)):
            return p
    raise RuntimeError("no free port block")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def service_pid(state: Path, node: str, service: str) -> int | None:
    try:
        return int((state / "nodes" / node / service / "service.pid").read_text())
    except (OSError, ValueError):
        return None


def kill_services(state: Path) -> None:
    """Teardown: SIGKILL every sample service started under this test's state dir."""
    for pidfile in state.glob("nodes/*/*/service.pid"):
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def pulse_events(state: Path, kind_suffix: str | None = None) -> list[dict[str, Any]]:
    out = []
    path = state / "pulse_history.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if kind_suffix is None or ev["kind"].endswith(kind_suffix):
            out.append(ev)
    return out


class Fleet:
    """A running test fleet: real workers (with their node agents), beat sending sweeps, a fast blueprint."""

    def __init__(self, tmp_path: Path, state: Path, redis_url: str, spawn: Any, start_worker: Any,
                 services: tuple[str, ...] = ("ledger",), start_prefix: list[str] | None = None,
                 extra_env: dict[str, str] | None = None, third_node: bool = False, **policy: str) -> None:
        import redis as redis_lib

        from continuity.blueprint import load_blueprint
        from tests.helpers import project_env

        self.state = state
        self.bp_path = make_blueprint(tmp_path, services, start_prefix, third_node, **policy)
        self.bp = load_blueprint(self.bp_path)
        self.env = project_env(redis_url, state, CONTINUITY_BLUEPRINT=str(self.bp_path), **(extra_env or {}))
        self.spawn = spawn
        self._start_worker = start_worker
        self.workers: dict[str, Any] = {}
        self.beat: Any = None
        self.client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        self.redis_url = redis_url

    def start_worker(self, node: str) -> Any:
        self.workers[node] = self._start_worker(node, env=self.env)
        return self.workers[node]

    def start(self, nodes: tuple[str, ...] = ("core-a", "core-b"), primary: str = "core-a") -> dict[str, Any]:
        """Workers for ``nodes``, beat (the detector's sweeps), and the ledger bootstrapped on ``primary``."""
        for node in nodes:
            self.start_worker(node)
        self.start_beat()
        return self.wait_primary("ledger", primary, epoch=1)

    def start_beat(self) -> Any:
        from tests.helpers import continuity_cmd

        self.beat = self.spawn(continuity_cmd("beat"), self.env, "beat")
        return self.beat

    def port(self, service: str, node: str) -> int:
        from continuity.services.hooks import service_port

        port = service_port(self.bp, service, node)
        assert port is not None
        return port

    def health(self, service: str, node: str) -> dict[str, Any] | None:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port(service, node)}/health", timeout=1) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def post(self, service: str, node: str, seq: int) -> int:
        """HTTP status of a write sent straight to ``node`` (bypassing the route), 0 if unreachable."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port(service, node)}/records",
                                     data=json.dumps({"seq": seq}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def lease(self, service: str) -> Any:
        from continuity.state import leases

        return leases.read(self.client, service)

    def wait_primary(self, service: str, node: str, epoch: int | None = None, timeout: float = 60) -> dict:
        """Until ``node`` holds the lease and its instance answers healthy with that epoch."""
        from tests.helpers import wait_for

        def ready() -> dict | None:
            lease = self.lease(service)
            if lease is None or lease.node != node or (epoch is not None and lease.epoch != epoch):
                return None
            h = self.health(service, node)
            return h if h and h.get("epoch") == lease.epoch else None

        return wait_for(ready, timeout=timeout, what=f"{service} primary on {node} (epoch {epoch})")

    def records(self) -> list[dict[str, Any]]:
        from continuity.failover import records

        return records.history(self.client, limit=100)

    def wait_records(self, n: int, final: bool = True, timeout: float = 60) -> list[dict[str, Any]]:
        from continuity.failover.records import FINAL
        from tests.helpers import wait_for

        def done() -> list | None:
            recs = self.records()
            if len(recs) >= n and (not final or all(r["outcome"] in FINAL for r in recs)):
                return recs
            return None

        return wait_for(done, timeout=timeout, what=f"{n} final failover record(s)")

    def kill_service(self, service: str, node: str) -> None:
        pid = service_pid(self.state, node, service)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for node in list(self.workers):
            self.workers[node].stop()
        if self.beat is not None:
            self.beat.stop()
        kill_services(self.state)
        self.client.close()


@pytest.fixture(name="fleet")
def fleet_fixture(tmp_path: Path, state_dir: Path, redis_url: str, spawn: Any, start_worker: Any) -> Iterator[Fleet]:
    """A test fleet for one test (import this fixture into the test module); stopped and cleaned up after."""
    f = Fleet(tmp_path, state_dir, redis_url, spawn, start_worker)
    try:
        yield f
    finally:
        f.close()


START_KINDS = ("detect.role_bootstrapped", "failover.promoted", "failover.self_repromoted",
               "failover.service_restarted")
END_KINDS = ("failover.service_demoted", "failover.self_demoted", "failover.demoted")


def role_intervals(events: list[dict[str, Any]], service: str) -> list[tuple[str, int, float, float]]:
    """(node, epoch, from, until) for every time a node held ``service`` with a valid epoch, from the pulse history.

    Holding starts when a node is bootstrapped or promoted at an epoch and ends at
    the first of: that node demoting itself (agent or service), being demoted, or
    the epoch being fenced past it.
    """
    evs = sorted((e for e in events if e.get("service") == service), key=lambda e: (e["ts"], e["seq"]))
    out = []
    for i, ev in enumerate(evs):
        kind = ev["kind"].removeprefix("continuity_layer.")
        if kind not in START_KINDS:
            continue
        node, epoch = ev["node"], int(ev["epoch"])
        until = float("inf")
        for later in evs[i + 1:]:
            lk = later["kind"].removeprefix("continuity_layer.")
            ends_own = lk in END_KINDS and later["node"] == node and int(later["epoch"] or -1) == epoch
            fenced = lk == "failover.fenced" and int(later["epoch"]) > epoch
            if ends_own or fenced:
                until = later["ts"]
                break
        out.append((node, epoch, ev["ts"], until))
    return out


def overlaps(intervals: list[tuple[str, int, float, float]]) -> list[tuple[Any, Any]]:
    """Pairs of different nodes whose valid-epoch holding overlapped in time (must be empty: no split brain)."""
    bad = []
    for i, a in enumerate(intervals):
        for b in intervals[i + 1:]:
            if a[0] != b[0] and a[2] < b[3] and b[2] < a[3]:
                bad.append((a, b))
    return bad
