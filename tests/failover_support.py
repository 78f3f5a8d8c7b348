"""Helpers for the failover tests: a fast test fleet on free ports, service cleanup, pulse checks."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity.redisd import free_port
from tests.helpers import ROOT, Background

HOOK = ["{python}", "-m", "continuity.sample.ledger_service"]


def make_blueprint(tmp_path: Path, services: tuple[str, ...] = ("ledger",), start_prefix: list[str] | None = None,
                   third_node: bool = False, shipped: bool = False, **policy: str) -> Path:
    """The sample fleet cut down to ``services``, on free ports (tests never collide with a running demo).

    By default the two-core copy most failover tests are about: core-c (the ledger's second standby) is
    dropped, and with a single standby left a service in sync mode runs async instead (with one standby, a
    refuse-policy ledger refuses every write while that standby is down, which those tests do not study).
    ``third_node`` keeps core-c and makes it every service's last standby (still async: the tests written for
    it study async streams and failovers). ``shipped`` keeps the replication modes as ``ops/blueprint.yml``
    ships them (the ledger in sync mode), and, without ``third_node``, its nodes and placements too.
    ``start_prefix`` wraps every start hook (e.g. in :mod:`tests.failover_gatehook`).
    """
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    pol = {"heartbeat_interval": "0.5s", "lease_ttl": "2s", "lease_margin": "0.5s", "suspect_after": "1s",
           "dead_after": "1.5s", "failover_cooldown": "30s", "tilt_gap": "3s", "tilt_grace": "5s"}
    pol.update(policy)
    doc["policy"].update(pol)
    # each node's replicator listens on this port plus the node's offset: free ones, like the services'
    doc["policy"].setdefault("replication", {})["port"] = _free_block()
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
    for dom in doc["domains"].values():
        for svc in dom["services"].values():
            standbys = [s for s in svc["placement"].get("standbys", []) if s != "core-c"]
            if third_node:
                svc["placement"]["standbys"] = [*standbys, "core-c"]
            elif not shipped:
                svc["placement"]["standbys"] = standbys
            if not shipped and svc.get("replication", {}).get("mode") == "sync":
                svc["replication"] = {"mode": "async"}
    if not (third_node or shipped):
        doc["nodes"].pop("core-c", None)
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


def get_health(base: str) -> dict[str, Any] | None:
    """The ``/health`` document of the sample service at ``base`` (scheme://host:port), None if unreachable."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as r:
            return json.loads(r.read())
    except OSError:
        return None


def post_seq(base: str, seq: int, timeout: float = 2.0) -> int:
    """HTTP status of writing record ``seq`` to the sample service at ``base``, 0 if unreachable."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{base}/records", data=json.dumps({"seq": seq}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Fleet:
    """A running test fleet: real workers (node agents; core nodes also run the detector loop), beat, a fast
    blueprint."""

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
        """Workers for ``nodes`` (their detector loops sweep), beat, and the ledger bootstrapped on ``primary``."""
        for node in nodes:
            self.start_worker(node)
        self.start_beat()
        route = self.wait_primary("ledger", primary, epoch=1)
        self.wait_alive(nodes)
        return route

    def wait_alive(self, nodes: tuple[str, ...], timeout: float = 60) -> None:
        """Until the detector has classified every node alive: a switchover onto a node it has not seen yet is
        rightly refused ("promote only onto a live node"), and on a loaded machine the first sweeps can lag."""
        import json

        from continuity.state import keys
        from tests.helpers import wait_for

        def alive() -> bool:
            raw = self.client.hgetall(keys.node_state())
            return all(json.loads(raw.get(n) or "{}").get("state") == "alive" for n in nodes)

        wait_for(alive, timeout=timeout, what=f"the detector to see {', '.join(nodes)} alive")

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
        return get_health(f"http://127.0.0.1:{self.port(service, node)}")

    def post(self, service: str, node: str, seq: int, timeout: float = 2.0) -> int:
        """HTTP status of a write sent straight to ``node`` (bypassing the route), 0 if unreachable."""
        return post_seq(f"http://127.0.0.1:{self.port(service, node)}", seq, timeout)

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

    def wait_replicated(self, count: int, node: str = "core-b", service: str = "ledger",
                        timeout: float = 30) -> None:
        """Until ``node``'s replica of ``service``'s ledger holds ``count`` records (its published applied position).

        Nodes own their disks: a failover starts from what the standbys hold, never from the dead primary's
        files. A test about something else than async replication's last milliseconds (exactly-once effects,
        fencing) waits for this before it kills the primary, so that what it counts is not replication lag.
        """
        from continuity.state import replication as replication_state
        from tests.helpers import wait_for

        def held() -> bool:
            applied = replication_state.read_applied(self.client, [service]).get(service, [])
            return any(a.node == node and a.source == "ledger.jsonl" and (a.count or 0) >= count for a in applied)

        wait_for(held, timeout=timeout, what=f"{count} records of {service} replicated to {node}")

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

    This is the code's own account of who held the role (its fence event ends the old holder's
    term). :func:`accepted_windows` is the service's: what each instance actually accepted.

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


@dataclass(frozen=True)
class Accepted:
    """One service instance's writes: who it was, and the first and last time it accepted one."""

    node: str
    epoch: int
    instance: str
    first: float
    last: float
    writes: int


def accepted_windows(state: Path, service: str) -> list[Accepted]:
    """Per instance of ``service``, the span over which it accepted writes, read from every node's ledger.

    Each sample ledger record carries the node, epoch and instance that accepted it and the time it
    did. Records copied to another node by a failover keep their origin, so reading every node's
    file and counting each (instance, seq) once gives every instance's whole history, including writes
    an old primary took after its data was copied away (which no other check would see).
    """
    seen: dict[tuple[str, int, str], dict[int, float]] = {}
    for path in sorted(state.glob(f"nodes/*/{service}/ledger.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                key = (str(rec["node"]), int(rec["epoch"]), str(rec.get("instance") or f"{rec['node']}@{rec['epoch']}"))
                seen.setdefault(key, {})[int(rec["seq"])] = float(rec["ts"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line: never acknowledged
    return sorted((Accepted(n, e, i, min(ts.values()), max(ts.values()), len(ts)) for (n, e, i), ts in seen.items()),
                  key=lambda a: (a.first, a.node))


def accept_overlaps(windows: list[Accepted]) -> list[tuple[Accepted, Accepted]]:
    """Pairs of distinct instances that accepted writes in overlapping windows (must be empty: no split brain).

    Different epochs overlapping is the split brain fencing exists to prevent; two instances of one
    epoch overlapping (two processes on one node) is the same harm, so it counts too.
    """
    bad = []
    for i, a in enumerate(windows):
        for b in windows[i + 1:]:
            if a.first <= b.last and b.first <= a.last:
                bad.append((a, b))
    return bad


class AcceptProbe(Background):
    """Writes to every node's instance of a service directly (not through the route), round robin.

    A route-following client only ever asks the current primary; this one also asks every
    instance that should refuse, so a fenced instance that still accepts leaves a record behind.
    """

    def __init__(self, fleet: Fleet, service: str = "ledger", nodes: tuple[str, ...] = ("core-a", "core-b")) -> None:
        super().__init__()
        self.fleet, self.service, self.nodes = fleet, service, nodes
        self.acked: dict[str, int] = {n: 0 for n in nodes}

    def loop(self, stop: Any) -> None:
        seq = 0
        while not stop.is_set():
            for node in self.nodes:
                seq += 1
                if self.fleet.post(self.service, node, seq, timeout=0.5) == 200:
                    self.acked[node] += 1
            stop.wait(0.02)
