"""One node's replicator: serve what this node is primary of, follow what it is a standby of, publish lag.

It runs as a process of its own (``python -m continuity.replication --node N``),
started and restarted by the node's worker (``workers/replication.py``), so:

- a replicator that crashes or is killed is back within a second, while the
  worker, its heartbeats and its leases carry on undisturbed (a replicator
  doing file and network I/O never takes the GIL from the node agent);
- it dies with its worker (parent-death signal), so a node's worker and its
  replicator come and go together, as the node does.

What it does, every ``tick``: read which roles it has from the lease watch
(:mod:`continuity.replication.authority`) and, for each replicated service
(declared data, standbys, mode not off) in whose placement the node is:

- holder: keep a :class:`~continuity.replication.streams.LedgerStream` per
  ledger source (so append times are noted from the moment the role is ours)
  and answer standbys on ``address:port`` (:mod:`continuity.replication.server`);
  stop following anything of that service;
- another node of the placement holds it: one :class:`~continuity.replication.follower.Follower`
  per source, aimed at the holder (re-aimed when the holder changes);
- nobody holds it (a proven reading): stop following; keep the data.

Every ``publish`` seconds it writes what it knows to Redis
(:mod:`continuity.state.replication`): per standby the lag it measured as
primary, per source the position it holds as standby, the sync mode; and pulse
events when a standby falls behind ``policy.replication.lag_alert`` or catches
up, and when a sync service degrades or is restored. A Redis that is away only
delays publishing: streams and followers go on (a follower waits for a lease
reading that confirms its primary; see authority.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from continuity.blueprint import Blueprint
from continuity.events import (
    REPLICATION_DEGRADED,
    REPLICATION_LAG_HIGH,
    REPLICATION_LAG_OK,
    REPLICATION_SYNC_RESTORED,
    EventSink,
)
from continuity.replication import directory, sqlite  # noqa: F401 - register their sources' sessions
from continuity.replication.authority import LeaseWatch
from continuity.replication.context import Context, replicated, source_name
from continuity.replication.follower import Follower
from continuity.replication.ledger import LedgerLog
from continuity.replication.local import LocalServer
from continuity.replication.server import Server
from continuity.replication.streams import LedgerStream
from continuity.services.layout import service_dir
from continuity.state import replication as state
from continuity.state.heartbeats import SecretRing as KeyRing

log = logging.getLogger("continuity.replication")


@dataclass
class Alert:
    since: float  # wall time the standby went over the threshold


class Replicator:
    def __init__(self, bp: Blueprint, node: str, client: Any, keyring: KeyRing | None = None, *,
                 pulse: EventSink | None = None, poll: float = 0.02, tick: float = 0.1, publish: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        if node not in bp.nodes:
            raise ValueError(f"{node!r} is not a node of {bp.source}")
        self.bp = bp
        self.node = node
        self.client = client
        self.services = [s for s in sorted(bp.services) if replicated(bp, s)
                         and node in (bp.services[s].primary, *bp.services[s].standbys)]
        ttl = bp.policy.lease_ttl
        watch = LeaseWatch(client, self.services, period=min(0.25, ttl / 8), margin=max(0.1, ttl / 10),
                           clock=clock)
        self.ctx = Context(bp, node, keyring or KeyRing(), watch, pulse, poll=poll, clock=clock, wall=wall)
        self.tick = tick
        self.publish_every = publish
        self.streams: dict[tuple[str, str], LedgerStream] = {}
        self.followers: dict[tuple[str, str], Follower] = {}
        self.alerts: dict[tuple[str, str, str], Alert] = {}
        self.degraded_since: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.server: Server | None = None
        self.local: LocalServer | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> Replicator:
        self.ctx.leases.start()
        self.server = Server(self.ctx, self.stream, self.ctx.endpoint(self.node))
        self.local = LocalServer(self.node, self.answer)
        for name, target in (("tcp", self.server.serve_forever), ("local", self.local.serve_forever),
                             ("manage", self._manage_loop)):
            t = threading.Thread(target=target, name=f"continuity-repl-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("replicator %s: serving on %s:%s, %d service(s)", self.node, *self.ctx.endpoint(self.node),
                 len(self.services))
        return self

    def stop(self) -> None:
        self.ctx.stopping.set()
        self.ctx.leases.stop()
        for f in list(self.followers.values()):
            f.stop()
        for srv in (self.server, self.local):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for f in list(self.followers.values()):
            f.join(2.0)

    def _manage_loop(self) -> None:
        last_publish = 0.0
        while not self.ctx.stopping.wait(self.tick):
            try:
                self.manage_once()
                if self.ctx.clock() - last_publish >= self.publish_every:
                    last_publish = self.ctx.clock()
                    self.publish_once()
            except Exception:  # noqa: BLE001 - the loop must go on
                log.exception("replicator %s: management step failed", self.node)

    # --- roles ----------------------------------------------------------------------------------------------------
    def manage_once(self) -> None:
        now = self.ctx.clock()
        for svc in self.services:
            view = self.ctx.leases.view(svc)
            if view is None or view.read_at < now - 10 * self.ctx.leases.period:
                continue  # no recent reading (Redis away): change nothing
            placement = self.ctx.placement(svc)
            for ds in self.bp.services[svc].spec.data:
                key = (svc, source_name(ds))
                if view.node == self.node and now < view.valid_until:
                    self._drop_follower(key)
                    if ds.kind == "ledger":
                        self.stream(*key)
                elif view.node is not None and view.node in placement and view.node != self.node:
                    with self._lock:
                        self.streams.pop(key, None)
                    f = self.followers.get(key)
                    if f is None or f.primary != view.node:
                        self._drop_follower(key)
                        self.followers[key] = Follower(self.ctx, svc, ds, view.node).start()
                elif view.node is None:
                    self._drop_follower(key)

    def _drop_follower(self, key: tuple[str, str]) -> None:
        f = self.followers.pop(key, None)
        if f is not None:
            f.stop()

    def stream(self, service: str, source: str) -> LedgerStream | None:
        """The stream of a ledger this node serves (opened on first use); None when the file does not exist yet
        or this node is not the service's primary."""
        key = (service, source)
        with self._lock:
            s = self.streams.get(key)
            if s is not None:
                return s
            ds = self.ctx.source(service, source)
            if ds is None or ds.kind != "ledger":
                return None
            path = service_dir(self.node, service) / source
            try:
                log_ = LedgerLog(path).open()
            except FileNotFoundError:
                return None
            s = LedgerStream(service, source, log_, clock=self.ctx.clock)
            self.streams[key] = s
            return s

    # --- the local call -------------------------------------------------------------------------------------------
    def answer(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "state":
            return {"ok": True, "node": self.node, "streams": self.describe()}
        if op != "wait":
            return {"ok": False, "mode": "unknown", "reason": f"unknown op {op!r}"}
        service, source = str(req["service"]), str(req["source"])
        sv = self.bp.services.get(service)
        if sv is None:
            return {"ok": False, "mode": "unknown", "reason": f"no service {service!r}"}
        spec = sv.replication
        if spec.mode != "sync":
            s = self.streams.get((service, source))
            if s is not None:
                s.refresh()  # ship it now rather than at the next poll
            return {"ok": True, "mode": spec.mode, "acked_by": [], "reason": ""}
        view = self.ctx.leases.view(service)
        if view is None or view.node != self.node or self.ctx.clock() >= view.valid_until:
            return {"ok": False, "mode": "sync", "reason": f"{self.node} is not confirmed as {service}'s primary"}
        stream = self.stream(service, source)
        if stream is None:
            return {"ok": False, "mode": "sync", "reason": f"{service} has no ledger {source!r} here"}
        timeout = float(req.get("timeout") or spec.timeout)
        res = stream.wait(int(req["offset"]), spec.need, min(timeout, spec.timeout), spec.policy)
        return {"ok": res.ok, "mode": res.mode, "acked_by": list(res.acked_by), "reason": res.reason}

    def describe(self) -> list[dict[str, Any]]:
        out = []
        with self._lock:
            streams = list(self.streams.values())
        for s in streams:
            peers = {}
            for node, p in list(s.peers.items()):
                lag = s.lag(node)
                peers[node] = {"connected": p.connected, "streaming": p.streaming, "sessions": p.sessions,
                               "acked": p.acked.as_list() if p.acked else None,
                               "lag": None if lag is None else [lag.seconds, lag.records, lag.bytes]}
            out.append({"service": s.service, "source": s.source, "role": "primary", "end": s.end.as_list(),
                        "degraded": s.degraded, "peers": peers})
        for (svc, src), f in list(self.followers.items()):
            a = f.progress.applied
            out.append({"service": svc, "source": src, "role": "standby", "primary": f.primary,
                        "connected": f.progress.connected, "sessions": f.progress.sessions,
                        "applied": None if a is None else [a.offset, a.count],
                        "head": f.progress.head.as_list() if f.progress.head else None,
                        "received": f.received(), "error": f.progress.last_error})
        return out

    # --- publishing -----------------------------------------------------------------------------------------------
    def publish_once(self) -> None:
        wall = self.ctx.wall()
        lags, applied, modes, committed = [], [], [], []
        with self._lock:
            streams = list(self.streams.values())
        for s in streams:
            view = self.ctx.leases.view(s.service)
            epoch = view.epoch if view is not None and view.node == self.node else 0
            spec = self.bp.services[s.service].replication
            mode = "degraded" if s.degraded else spec.mode
            self._sync_events(s, spec.need, epoch, wall)
            if spec.mode == "sync":
                modes.append(state.SyncMode(s.service, mode, self.node, epoch,
                                            self.degraded_since.get((s.service, s.source), wall),
                                            s.degraded or ""))
            if epoch:
                committed.append(self._committed(s, spec, epoch, wall))
            end = s.end
            for standby in self.ctx.placement(s.service):
                if standby == self.node:
                    continue
                p = s.peers.get(standby)
                lag = s.lag(standby)
                st = "disconnected" if p is None or not p.connected else "streaming" if p.streaming else "catchup"
                acked = p.acked if p is not None else None
                item = state.StandbyLag(
                    s.service, s.source, standby, self.node, epoch, st, mode,
                    acked.offset if acked else 0, acked.count if acked else None, end.offset, end.count,
                    round(lag.seconds, 4) if lag else 0.0, lag.records if lag else end.count,
                    lag.bytes if lag else end.offset, wall)
                lags.append(item)
                self._lag_events(item)
        for rs in list(self.ctx.rounds.values()):
            view = self.ctx.leases.view(rs.service)
            if view is None or view.node != self.node:
                continue
            spec = self.bp.services[rs.service].replication
            for standby in self.ctx.placement(rs.service):
                if standby == self.node:
                    continue
                p = rs.peers.get(standby)
                lag = rs.lag(standby)
                st = ("disconnected" if p is None or not p.connected
                      else "streaming" if p.acked == rs.digest else "catchup")
                item = state.StandbyLag(rs.service, rs.source, standby, self.node, view.epoch, st, spec.mode,
                                        p.acked_size if p else 0, None, rs.size, None,
                                        round(lag.seconds, 4) if lag else 0.0, None, lag.bytes if lag else rs.size,
                                        wall)
                lags.append(item)
                self._lag_events(item)
        for f in list(self.followers.values()):
            if f.progress.applied is not None:
                applied.append(f.progress.applied)
        try:
            state.publish_lags(self.client, lags)
            state.publish_applied(self.client, applied)
            for m in modes:
                state.write_mode(self.client, m)
            for c in committed:
                state.advance_committed(self.client, c)
        except Exception as exc:  # noqa: BLE001 - Redis away: publish next time
            log.debug("replicator %s: publish deferred: %s", self.node, exc)

    def _committed(self, s: LedgerStream, spec: Any, epoch: int, wall: float) -> state.Committed:
        """The role's committed position as this primary knows it (raised in Redis, never lowered there)."""
        pos, last_seq, seen = s.committed(spec.need if spec.mode == "sync" else 0)
        at = None if seen is None else round(wall - (self.ctx.clock() - seen), 4)
        return state.Committed(s.service, s.source, epoch, pos.count, pos.offset, last_seq, at, self.node, wall)

    def _lag_events(self, lag: state.StandbyLag) -> None:
        threshold = self.bp.policy.replication.lag_alert
        key = (lag.service, lag.source, lag.standby)
        over = lag.lag_seconds > threshold
        alert = self.alerts.get(key)
        if over and alert is None:
            self.alerts[key] = Alert(lag.updated)
            self.ctx.emit(REPLICATION_LAG_HIGH, lag.service, epoch=lag.epoch,
                          data={"source": lag.source, "standby": lag.standby, "primary": lag.primary,
                                "lag_seconds": lag.lag_seconds, "lag_records": lag.lag_records,
                                "threshold": threshold, "state": lag.state})
        elif not over and alert is not None and lag.state == "streaming":
            del self.alerts[key]
            self.ctx.emit(REPLICATION_LAG_OK, lag.service, epoch=lag.epoch,
                          data={"source": lag.source, "standby": lag.standby, "primary": lag.primary,
                                "lag_seconds": lag.lag_seconds, "lasted": round(lag.updated - alert.since, 3)})

    def _sync_events(self, s: LedgerStream, need: int, epoch: int, wall: float) -> None:
        key = (s.service, s.source)
        if s.degraded and key not in self.degraded_since:
            self.degraded_since[key] = wall
            self.ctx.emit(REPLICATION_DEGRADED, s.service, epoch=epoch,
                          data={"source": s.source, "primary": self.node, "reason": s.degraded, "need": need})
        elif not s.degraded and key in self.degraded_since:
            since = self.degraded_since.pop(key)
            acking = sorted(n for n, p in s.peers.items() if p.connected and p.streaming)
            self.ctx.emit(REPLICATION_SYNC_RESTORED, s.service, epoch=epoch,
                          data={"source": s.source, "primary": self.node, "standbys": acking,
                                "lasted": round(wall - since, 3)})
