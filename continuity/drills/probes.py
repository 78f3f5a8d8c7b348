"""Steady-state probes: the yes/no questions a drill asks before, during and after its fault.

Each probe answers from the outside, the way a client would (HTTP health of
whatever node the route names now, the route itself, the continuity mode, the
records the ledger returns), because "rollback succeeded" while the service
stayed down is the failure chaostoolkit-lib#94 describes: only an outside
check after the rollback proves the system is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity import paths, registrations, settings
from continuity.blueprint import Blueprint
from continuity.drills import procs
from continuity.drills.scenarios import ProbeSpec
from continuity.state import incidents, routes
from continuity.state import mode as modes
from continuity.state import replication as replication_state
from continuity.state.nodes import classifications, read_registry
from continuity.state.routes import Route


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    detail: str = ""
    value: Any = None


def service_port(bp: Blueprint, service: str, node: str) -> int | None:
    base = bp.services[service].spec.port
    if base is None:
        return None
    try:
        return base + int(bp.nodes[node].labels.get("port_offset", "0"))
    except ValueError:
        return None


def route_of(client: Any, service: str) -> Route | None:
    """The route clients follow now; None when failover never published one."""
    return routes.read(client, service)


def current_primary(client: Any, bp: Blueprint, service: str) -> str:
    """The fleet's one answer (:func:`continuity.state.routes.primary_of`): drills aim where failover would."""
    return routes.read_primary(client, bp, service).node


def base_url(client: Any, bp: Blueprint, service: str) -> str | None:
    """The primary's URL: the route's when the route names the primary, else built from the blueprint."""
    primary = routes.read_primary(client, bp, service)
    route = route_of(client, service)
    if route is not None and route.url and route.node == primary.node:
        return route.url.rstrip("/")
    port = service_port(bp, service, primary.node)
    return f"http://{bp.nodes[primary.node].address}:{port}" if port else None


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local fleet URLs only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp else b""


def fetch_records(url: str, after: int = 0, timeout: float = 2.0) -> list[dict[str, Any]]:
    """All records with seq > after from the ledger service at ``url`` (follows paging if any)."""
    out: list[dict[str, Any]] = []
    cursor = after
    for _ in range(1000):
        status, body = http_get(f"{url}/records?after={cursor}", timeout)
        if status != 200:
            raise OSError(f"GET /records answered {status}")
        data = json.loads(body or b"[]")
        batch = data.get("records", []) if isinstance(data, dict) else data
        if not batch:
            break
        out.extend(batch)
        newest = max(int(r.get("seq", 0)) for r in batch)
        if newest <= cursor or (isinstance(data, dict) and not data.get("more", False)):
            break
        cursor = newest
    return out


def ledger_integrity(path: Path) -> tuple[bool, str, int]:
    """Every line parses as a JSON object and sequence numbers only grow: (ok, detail, records)."""
    count = 0
    last = None
    try:
        fh = open(path, "rb")
    except OSError as exc:
        return False, f"cannot read {path}: {exc.strerror}", 0
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                return False, f"{path}:{lineno}: not valid JSON", count
            if not isinstance(rec, dict):
                return False, f"{path}:{lineno}: not a JSON object", count
            seq = rec.get("seq")
            if isinstance(seq, int):
                if last is not None and seq <= last:
                    return False, f"{path}:{lineno}: seq {seq} after {last}", count
                last = seq
            count += 1
    return True, f"{count} records", count


@dataclass
class ProbeContext:
    client: Any
    bp: Blueprint
    placeholders: dict[str, str] = field(default_factory=dict)
    target_nodes: tuple[str, ...] = ()
    ledger_path: Callable[[str, str], Path] | None = None

    def fill(self, text: str, **extra: str) -> str:
        values = {"python": sys.executable, "root": str(paths.root()), "state": str(paths.state_dir()),
                  **self.placeholders, **extra}
        try:
            return text.format_map(values)
        except (KeyError, ValueError, IndexError):
            return text


def _tolerance_list(tol: Any, default: list[Any]) -> list[Any]:
    if tol is None:
        return default
    return tol if isinstance(tol, list) else [tol]


def run_probe(spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Evaluate one probe; any exception is a failed probe with the reason, never a crashed drill."""
    try:
        ok, detail, value = _PROBES[spec.probe](spec, ctx)
    except Exception as exc:  # noqa: BLE001 - the fault may break the very thing the probe reads
        return ProbeResult(spec.name, False, f"{type(exc).__name__}: {exc}"[:300])
    return ProbeResult(spec.name, ok, detail, value)


def _http_health(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    assert spec.service
    node = current_primary(ctx.client, ctx.bp, spec.service)
    if spec.url:
        port = service_port(ctx.bp, spec.service, node)
        url = ctx.fill(spec.url, node=node, service=spec.service, port=str(port or ""))
    else:
        base = base_url(ctx.client, ctx.bp, spec.service)
        url = f"{base}/health"
    status, _ = http_get(url, spec.timeout)
    return status == 200, f"{url} -> {status}", node


def _route(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    assert spec.service
    route = route_of(ctx.client, spec.service)
    if route is None:
        return True, "no route published (blueprint primary)", ctx.bp.services[spec.service].primary
    node = route.node
    if node not in ctx.bp.nodes:
        return False, f"route names unknown node {node!r}", node
    return True, f"-> {node} (epoch {route.epoch})", node


def _mode(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    mode = modes.name(modes.read(ctx.client), missing="normal")  # no sweep ran yet: nothing is degraded
    allowed = _tolerance_list(spec.tolerance, ["normal"])
    return mode in allowed, f"mode {mode}", mode


def _ledger_count(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    assert spec.service
    base = base_url(ctx.client, ctx.bp, spec.service)
    records = fetch_records(str(base), 0, spec.timeout)
    minimum = int(spec.tolerance or 0)
    return len(records) >= minimum, f"{len(records)} records", len(records)


def _ledger_integrity(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    assert spec.service
    node = spec.node or current_primary(ctx.client, ctx.bp, spec.service)
    if spec.path:
        path = paths.resolve(ctx.fill(spec.path, node=node, service=spec.service, node_dir=str(paths.node_dir(node))))
    elif ctx.ledger_path is not None:
        path = ctx.ledger_path(spec.service, node)
    else:
        raise ValueError("no ledger path known for this service")
    ok, detail, count = ledger_integrity(path)
    return ok, detail, count


def _command(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    assert spec.argv
    argv = [ctx.fill(a) for a in spec.argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=max(spec.timeout, 1.0),
                          cwd=str(paths.root()), stdin=subprocess.DEVNULL)
    allowed = [int(x) for x in _tolerance_list(spec.tolerance, [0])]
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return proc.returncode in allowed, f"exit {proc.returncode}: {tail[0][:200]}", proc.returncode


def _node_alive(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    """The node's worker runs (not stopped) and the detector sees it alive; no node = the drill's targets."""
    nodes = [spec.node] if spec.node else list(ctx.target_nodes)
    states = classifications(ctx.client)
    for node in nodes:
        pid = worker_pid(ctx.client, node)
        if pid is None:
            return False, f"{node}: no live worker registered", None
        if procs.stopped(pid):
            return False, f"{node}: worker {pid} is stopped (SIGSTOP)", pid
        state = (states.get(node) or {}).get("state")
        if state is not None and state != "alive":
            return False, f"{node}: detector says {state}", pid
    return True, f"{', '.join(nodes) or 'no node'} running and alive", None


def _no_incident(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    open_ = incidents.ids(ctx.client)
    return not open_, ", ".join(open_) or "none open", len(open_)


def _redis(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    return bool(ctx.client.ping()), "PONG", None


LAG_FRESH = 10.0  # seconds: a lag reading older than this says nothing about now (its replicator is gone)


def _replication_lag(spec: ProbeSpec, ctx: ProbeContext) -> tuple[bool, str, Any]:
    """Every declared standby of the service's current primary follows it, no further behind than ``tolerance``
    seconds (default: the policy's ``lag_alert``), as its primary published within the last ``LAG_FRESH`` s.

    The steady state a data-loss drill needs before it strikes: with a standby already behind, the loss it
    measures is the earlier stall's, not the fault's (and the drill says so before injecting anything)."""
    assert spec.service
    svc = ctx.bp.services[spec.service]
    limit = float(spec.tolerance) if spec.tolerance is not None else ctx.bp.policy.replication.lag_alert
    primary = current_primary(ctx.client, ctx.bp, spec.service)
    standbys = [n for n in (svc.primary, *svc.standbys) if n != primary]
    if not svc.spec.data or not standbys or svc.replication.mode == "off":
        return True, "nothing replicated", None
    now = time.time()
    lags = [g for g in replication_state.read_lags(ctx.client, [spec.service]).get(spec.service, [])
            if g.primary == primary and now - g.updated <= LAG_FRESH]
    worst = 0.0
    for node in standbys:
        mine = [g for g in lags if g.standby == node]
        if not mine:
            return False, f"{node}: no lag published by {primary} lately", None
        for g in mine:
            if g.state == "disconnected" or g.lag_seconds > limit:
                return False, f"{node} {g.source}: {g.state}, {g.lag_seconds:.2f}s behind (limit {limit:g}s)", \
                    g.lag_seconds
            worst = max(worst, g.lag_seconds)
    return True, f"{', '.join(standbys)} within {limit:g}s of {primary} (worst {worst:.2f}s)", worst


def worker_pid(client: Any, node: str) -> int | None:
    """The registered worker pid of ``node`` if that process is alive and really is that node's worker.

    Drills signal this pid, so neither half is taken on Redis's word: the registration must be signed by
    the node's own key (:mod:`continuity.registrations`; a plain ``HSET`` of another pid is ignored), and the
    process must say it is that node (its environment names it: a pid reused since, or one whose environment
    this user cannot read, is not a worker of ours)."""
    info = registrations.verified(read_registry(client, node), node)
    try:
        pid = int(info["pid"]) if info else None
    except (ValueError, KeyError, TypeError):
        return None
    if pid is None or pid <= 1:
        return None
    if not procs.alive(pid):
        return None
    if procs.environ(pid).get(settings.NODE.name) != node:
        return None
    return pid


_PROBES: dict[str, Callable[[ProbeSpec, ProbeContext], tuple[bool, str, Any]]] = {
    "http-health": _http_health, "route": _route, "mode": _mode, "ledger-count": _ledger_count,
    "ledger-integrity": _ledger_integrity, "command": _command, "node-alive": _node_alive,
    "no-incident": _no_incident, "redis": _redis, "replication-lag": _replication_lag,
}


def wait_steady(specs: list[ProbeSpec], ctx: ProbeContext, timeout: float, interval: float,
                on_round: Callable[[list[ProbeResult]], None] | None = None,
                clock: Callable[[], float] = time.monotonic) -> list[ProbeResult]:
    """Poll until every probe passes or the deadline; returns the last round's results."""
    deadline = clock() + timeout
    while True:
        results = [run_probe(s, ctx) for s in specs]
        if on_round:
            on_round(results)
        if all(r.ok for r in results) or clock() >= deadline:
            return results
        time.sleep(interval)
