"""One detector sweep against Redis: read everything once, decide purely, write back what changed.

This is the imperative shell around :mod:`detector` and :mod:`mode`: the detector loop
(:mod:`continuity.detect.loop`, a thread in every control worker) calls :func:`run_sweep` once per
heartbeat interval while it holds the leader lease, and the Celery shell injects the failover planner
and launcher, so nothing in here imports Celery or :mod:`continuity.failover` (the layering test holds
``detect`` and ``failover`` apart; what both need lives in :mod:`continuity.state` and
:mod:`continuity.services`).

Shape of a sweep, chosen for 10,000 nodes in well under 50 ms:

1. one pipelined round trip: Redis ``TIME`` (the only clock used, the same one
   that stamped heartbeat arrivals), all heartbeats, their arrival stamps, the
   previous node states, the detector meta, the mode and every lease;
2. verify each changed heartbeat (Ed25519 signature with the node's registered public key, node, sequence,
   freshness); a beat that
   fails is reported once as ``detect.heartbeat_rejected`` and changes nothing;
3. :func:`detector.sweep` (with the loop's :class:`~continuity.detect.detector.View` of its own watch: the
   grace after a gap, TILT after its own pause) and :func:`mode.compute`;
4. one transaction, guarded by the leader lease (and renewing it), writing changed states, meta, mode and a
   journal entry; pulse events for every transition; the newly dead nodes go to the failover planner and
   launcher, and so does every service a live node gave up on (``keys.service_failed``, set by the agent's
   local recovery when restarting in place did not help).

Ingest is split from decide: verifying 10,000 signatures a second is per-arrival work, and doing it all
inside the sweep made the sweep (what a failover waits on) pay for it every second. :func:`run_ingest`
drains and verifies the pending hash in small slices between sweeps (the control worker runs it from a
background thread, every ~150 ms); the verified beats wait in the process's :class:`SweepCache` and the
sweep only drains what arrived since the last slice. The leader runs the ingest; it drains only while the
generation in Redis is the one its cache holds (its process made the last sweep), so a process that lost the
lease never swallows beats meant for the new leader, whose first sweep reads in full (and finds the beats
an ingest slice drained, which stay in the heartbeat hash).
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from continuity import pause_auth
from continuity.blueprint import Blueprint
from continuity.detect import detector
from continuity.detect import mode as modes
from continuity.events import (
    DETECT_CLAIM_REJECTED,
    DETECT_FAILOVER_LAUNCH_FAILED,
    DETECT_FAILOVER_REQUESTED,
    DETECT_GRACE_ENDED,
    DETECT_GRACE_STARTED,
    DETECT_HEARTBEAT_REJECTED,
    DETECT_MODE_CHANGED,
    DETECT_NODE_ALIVE,
    DETECT_NODE_DEAD,
    DETECT_NODE_EXPECTED_OFFLINE,
    DETECT_NODE_SUSPECT,
    DETECT_STORM,
    DETECT_STORM_CLEARED,
    DETECT_TILT,
    DETECT_TILT_ENDED,
    FAILOVER_PAUSE_REJECTED,
    EventKind,
    EventSink,
)
from continuity.services import survivors
from continuity.state import controls as state_controls
from continuity.state import detection, heartbeats, incidents, leases, routes
from continuity.state import mode as state_mode
from continuity.state import replication as replication_state
from continuity.state.detection import Snapshot

log = logging.getLogger("continuity.sweep")

Launcher = Callable[[list[Any], dict[str, Any]], list[str]]
# ``continuity.failover.planner.plan_failovers``, injected by the Celery shell (workers/control.py): called as
# plan(bp, dead_nodes, node_states, leases, now, paused, global_pause, cooldowns, routes=..., [failed_services=...])
# and returns plans (objects with a ``service``) for the launcher. Without one the sweep classifies and publishes
# but requests no failover.
Planner = Callable[..., list[Any]]
Controls = Callable[[Any, Blueprint], tuple[set[str], bool, dict[str, float]]]


@dataclass
class SweepCache:
    """What one process remembers between its sweeps, valid while no other process swept in between.

    ``accepted`` holds each node's last accepted raw beat (a beat equal to it found by the audit is not
    verified again), ``states`` the detector state as of ``generation`` (not re-read and re-parsed from
    Redis), ``services_raw``/``services`` the last parsed services JSON per node (parsed again only when
    its bytes change), ``cursor`` where the audit of the heartbeat hash goes on.
    """

    accepted: dict[str, bytes] = field(default_factory=dict)
    keyring: heartbeats.KeyRing = field(default_factory=heartbeats.KeyRing)
    states: dict[str, detector.NodeState] = field(default_factory=dict)
    generation: str = ""
    services_raw: dict[str, bytes] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    cursor: str = "0"
    # verified by ingest slices since the last sweep, not yet decided on (node -> newest beat), the
    # ingest's rejections (node -> (reason, raw blob)) for the sweep to report once, and the lock that
    # keeps an ingest thread and the sweep from working on this memory at the same time
    ingested: dict[str, detector.Beat] = field(default_factory=dict)
    ingest_rejected: dict[str, tuple[heartbeats.Rejected, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bad_claims: dict[str, str] = field(default_factory=dict)  # service -> fingerprint of a refused marker, told once
    chains: dict[str, heartbeats.ChainState] = field(default_factory=dict)  # node -> its statement + newest token
    last_raw: dict[str, bytes] = field(default_factory=dict)  # node -> the beat that token came in
    pauses: pause_auth.Memory = field(default_factory=pause_auth.Memory)  # signed pauses seen (deletion != resume)
    statement_budget: int | None = 200  # statement signatures (Ed25519) verified per call; the rest wait
    _names: dict[bytes, str] = field(default_factory=dict)
    _keys: dict[str, heartbeats.Verifier | None] = field(default_factory=dict)
    _bp: Any = None

    def prepare(self, bp: Blueprint) -> None:
        """Per-blueprint lookups (node name bytes -> name, name -> key), rebuilt when the blueprint changes; keys
        still missing (a node whose worker has not created its key yet) are looked up again now and then."""
        if self._bp is bp and self.keyring.refresh():
            self._keys = {n: self.keyring.get(n) for n in bp.nodes}  # the operator re-registered a key
        if self._bp is bp:
            if self.keyring.missing():
                for n in [n for n, k in self._keys.items() if k is None]:
                    self._keys[n] = self.keyring.get(n)
            return
        self._names = {n.encode(): n for n in bp.nodes}
        self._keys = {n: self.keyring.get(n) for n in bp.nodes}
        self._bp = bp

    def names(self, fields: Iterable[bytes]) -> list[str]:
        """Hash fields as node names (one C-level pass; undecodable fields of strangers kept readable)."""
        out = list(map(self._names.get, fields))
        if None in out:
            out = [n if n is not None else f.decode(errors="replace") for n, f in zip(out, fields, strict=True)]
        return out


@dataclass(frozen=True)
class Leadership:
    """The leader lease a sweep runs under: ``holder`` (the lease's id) guards its write, which renews the lease
    for ``ttl`` seconds; ``node`` and ``term`` go into the sweep journal."""

    holder: str
    node: str = ""
    term: int = 0
    ttl: float = 1.5


@dataclass
class SweepResult:
    now: float
    skipped: str | None = None
    outcome: detector.Outcome | None = None
    mode: modes.Mode | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    launched: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"now": self.now, "skipped": self.skipped, "accepted": self.accepted,
                               "rejected": self.rejected, "launched": self.launched,
                               "timings": {k: round(v, 5) for k, v in self.timings.items()}}
        if self.outcome is not None:
            out.update(transitions=[t.as_dict() for t in self.outcome.transitions], eligible=self.outcome.eligible,
                       tilt=self.outcome.tilt, storm=self.outcome.meta.storm, held_back=self.outcome.held_back)
        if self.mode is not None:
            out["mode"] = self.mode.mode
        return out


def max_beat_age(bp: Blueprint) -> float:
    """How far a beat's own timestamp may stray from its Redis arrival stamp before it counts as a replay."""
    return max(10.0, 4 * bp.policy.dead_after)


def _loads(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _read(client: Any, bp: Blueprint, services: list[str], cache: SweepCache, force_full: bool = False) -> Snapshot:
    cache.prepare(bp)
    generation = "-" if force_full or not cache.generation else cache.generation
    snap = detection.read(client, services, generation, cache.cursor, max(256, len(bp.nodes) // 8), cache.names)
    if snap.cursor is not None:
        cache.cursor = snap.cursor
    return snap


def _batch(cache: SweepCache, blob: bytes, count: int) -> dict[str, tuple[bytes, bytes]] | None:
    """A drained pending batch as entries (node -> (beat, arrival)); None when it is misaligned."""
    split = heartbeats.split_pending(blob, count)
    if split is None:
        return None
    names, arrivals, raws = split
    return dict(zip(cache.names(names), zip(raws, arrivals, strict=True), strict=True))


def _recheck(client: Any, bp: Blueprint, snap: Snapshot, prev: Mapping[str, detector.NodeState],
             cache: SweepCache) -> None:
    """Delta read, second look: beats that reached the heartbeat hash without passing the pending hash.

    Two kinds, both rare, so this costs one small round trip or none: a node that sent nothing through
    the pending hash though its last beat is getting old (an agent of an older version, a lost pending
    entry: it must not be suspected for that), and an audited value that is not the beat we accepted (a
    write that bypassed the beat script: verified like any other, so a forgery is still reported).
    """
    entries, accepted = snap.entries, cache.accepted
    wanted: dict[str, bytes | None] = {}
    for node, raw in snap.audit.items():
        if node not in entries and raw != accepted.get(node):  # ingested beats are in ``accepted``
            wanted[node] = raw
    horizon = snap.now - min(bp.policy.heartbeat_interval, bp.policy.suspect_after / 2)
    for node in bp.nodes.keys() - entries.keys() - wanted.keys() - cache.ingested.keys():
        st = prev.get(node)
        if st is None or st.last_arrival is None or st.last_arrival < horizon:
            wanted[node] = None
    if not wanted:
        return
    names = list(wanted)
    raws, arrivals = detection.read_beats(client, names)
    for node, raw, arrival in zip(names, raws, arrivals, strict=True):
        if raw is None:
            continue
        try:
            if arrival is not None and float(arrival) >= snap.now:
                continue  # stored after our drain: it is in the pending hash, for the next sweep
        except ValueError:
            pass
        if wanted[node] is not None:
            raw = wanted[node]  # the audited value, newline-blanked as the audit saw it
        if raw != accepted.get(node):
            entries[node] = (raw, arrival)


def verify_beats(bp: Blueprint, entries: Mapping[str, tuple[bytes, bytes | None]],
                 prev: Mapping[str, detector.NodeState], cache: SweepCache, *, strict: bool = True,
                 budget: int | None = None,
                 ) -> tuple[dict[str, detector.Beat], dict[str, heartbeats.Rejected]]:
    """New authentic beats per node, and the rejections (by hash field) of every other entry.

    ``entries`` maps a hash field to (raw beat, arrival stamp). ``strict`` (a delta read: every entry
    is a fresh write) refuses a beat whose sequence does not advance, even the very bytes accepted
    before — identical bytes written again are a replay, and trusting them would move the node's
    arrival forward. A full read (``strict`` False) sees beats another sweeper may already have
    counted, so an equal sequence is skipped silently there; an older one is still a replay.

    Per beat the check is a few SHA-256 of its chain token against the token accepted before
    (:func:`heartbeats.check_beat`, state in ``cache.chains``); the Ed25519 signature of a node's statement is
    verified only when the statement's bytes change, at most ``cache.statement_budget`` times per call: a beat
    past the budget waits for a later call (a new leader's first reads verify every node's statement).
    """
    cache.prepare(bp)
    beats: dict[str, detector.Beat] = {}
    rejected: dict[str, heartbeats.Rejected] = {}
    age = max_beat_age(bp)
    left = heartbeats.Budget(cache.statement_budget if budget is None else budget)
    prev_get, accepted, chains, keys_, ingested = prev.get, cache.accepted, cache.chains, cache._keys, cache.ingested
    check, nodes, Beat = heartbeats.check_beat, bp.nodes, detector.Beat
    for node, (raw, arrival_b) in entries.items():
        if node not in nodes:
            rejected[node] = heartbeats.Rejected("unknown-node", f"{node!r} is not in the blueprint")
            continue
        try:
            arrival = float(arrival_b) if arrival_b else None
        except ValueError:
            arrival = None
        state = chains.get(node)
        try:
            new_state, hb = check(node, raw, arrival, keys_.get(node), state, age, left)
        except heartbeats.Deferred:
            continue
        except heartbeats.Rejected as exc:
            if not strict and exc.reason == "replayed" and state is not None and raw == state_raw(cache, node):
                accepted[node] = raw  # the very beat this process accepted: already counted
                continue
            rejected[node] = exc
            continue
        st = prev_get(node)
        last = st.last_seq if st is not None else None
        if node in ingested:
            last = ingested[node].seq
        chains[node] = new_state
        cache.last_raw[node] = raw
        if last is not None and hb.seq <= last:
            if hb.seq < last or strict:
                rejected[node] = heartbeats.Rejected("replayed", f"seq {hb.seq} not after last accepted {last}")
            else:
                accepted[node] = raw  # already counted (by another process's sweep)
            continue
        accepted[node] = raw
        beats[node] = Beat(hb.seq, arrival if arrival is not None else hb.ts, hb.services)
    return beats, rejected


def state_raw(cache: SweepCache, node: str) -> bytes | None:
    """The wire beat whose token is the newest this process accepted for ``node``."""
    return cache.last_raw.get(node)


@dataclass
class IngestResult:
    """One ingest slice: how many pending entries it drained, accepted and rejected, and what it cost."""

    drained: int = 0
    accepted: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0


def run_ingest(client: Any, bp: Blueprint, cache: SweepCache) -> IngestResult:
    """Drain and verify the pending heartbeats into ``cache`` (for the next sweep to decide on).

    Every beat still passes the full check (signature, signed node name, freshness against its Redis arrival,
    sequence after the newest accepted one, counting earlier slices); a rejected one is kept, with its
    bytes, for the sweep to report once like any other. Does nothing until this process has swept, and
    nothing while another process swept since (its memory would be stale; the sweep there reads in full).
    """
    gc_was_on = gc.isenabled()
    gc.disable()  # as in the sweep: a collection inside a slice holds the lock a sweep may be waiting on
    try:
        with cache.lock:  # the time waited for a running sweep is not the slice's cost
            return _ingest_locked(client, bp, cache)
    finally:
        if gc_was_on:
            gc.enable()


def _ingest_locked(client: Any, bp: Blueprint, cache: SweepCache) -> IngestResult:
    """:func:`run_ingest` under the cache lock, with the collector off."""
    t0 = time.perf_counter()
    if not cache.generation:
        return IngestResult(skipped="this process has not swept yet")
    cache.prepare(bp)
    drained = detection.drain(client, cache.generation)
    if drained is None:
        return IngestResult(skipped="another process swept since: its sweep reads in full",
                            seconds=time.perf_counter() - t0)
    entries = _batch(cache, *drained)
    if entries is None:
        # the batch is gone, but every beat in it is also in the heartbeat hash: make the next sweep
        # read that in full (and stop ingesting until it has)
        log.warning("ingest: pending heartbeats held a value with a newline (not written by the beat "
                    "script); the next sweep reads every heartbeat instead")
        cache.generation = ""
        cache.ingested.clear()
        cache.ingest_rejected.clear()
        return IngestResult(skipped="misaligned batch", seconds=time.perf_counter() - t0)
    # the same budget as a sweep: a slice holds the cache's lock, and a sweep waiting on it is a late sweep
    beats, rejected = verify_beats(bp, entries, cache.states, cache, strict=True)
    cache.ingested.update(beats)
    for node, exc in rejected.items():
        cache.ingest_rejected[node] = (exc, entries[node][0])
    return IngestResult(drained=len(entries), accepted=len(beats),
                        rejected={n: e.reason for n, e in rejected.items()}, seconds=time.perf_counter() - t0)


class IngestLoop:
    """Runs :func:`run_ingest` every ``interval`` seconds on a daemon thread, beside the sweeps of the same
    process (they share ``cache``), and keeps what it cost so a benchmark can show it.

    ``client`` should be its own connection (the sweep's is used from another thread); ``blueprint`` is
    called per slice, so an edited blueprint takes effect as it does for the sweep.
    """

    def __init__(self, client: Any, blueprint: Callable[[], Blueprint], cache: SweepCache,
                 interval: float, sweep_due_in: Callable[[], float] | None = None) -> None:
        self.client, self.blueprint, self.cache, self.interval = client, blueprint, cache, interval
        # seconds until the loop's next sweep: a slice that could still hold the cache lock when the sweep
        # starts is skipped (the sweep drains those beats itself), so a sweep never waits on a slice
        self.sweep_due_in = sweep_due_in
        self.slices: deque[float] = deque(maxlen=4096)  # wall seconds of recent slices that drained
        self.cpu = 0.0  # thread CPU seconds spent in slices
        self.drained = 0
        self.rejected = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def interval_for(bp: Blueprint) -> float:
        """A slice every eighth of a heartbeat interval (125 ms at 1 Hz): the sweep is left a small remainder."""
        return min(0.25, max(0.02, bp.policy.heartbeat_interval / 8))

    def start(self) -> IngestLoop:
        self._thread = threading.Thread(target=self._run, name="continuity-ingest", daemon=True)
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _guard(self) -> float:
        """How close to a sweep a slice may start: twice the longest of the recent slices (at least 20 ms)."""
        recent = list(self.slices)[-32:]
        return max(0.02, 2 * max(recent, default=0.0))

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            if self.sweep_due_in is not None and self.sweep_due_in() < self._guard():
                continue
            c0 = time.thread_time()
            try:
                res = run_ingest(self.client, self.blueprint(), self.cache)
            except Exception as exc:  # noqa: BLE001 - the sweep drains whatever we leave; keep trying
                if not failing:
                    log.warning("ingest: slice failed (the sweep drains instead): %s", exc)
                failing = True
                continue
            failing = False
            if res.skipped is None and res.drained:
                self.cpu += time.thread_time() - c0
                self.slices.append(res.seconds)
                self.drained += res.drained
                self.rejected += len(res.rejected)


def run_sweep(client: Any, bp: Blueprint, lead: Leadership, *, view: detector.View | None = None,
              cache: SweepCache | None = None, pulse: EventSink | None = None, launch: Launcher | None = None,
              plan: Planner | None = None, controls: Controls | None = None) -> SweepResult:
    """Run one sweep under the leader lease ``lead``; returns what it saw and did (the loop's and the
    bench's measurement). Nothing is written or launched unless ``lead.holder`` still holds the lease when
    the results are written.

    ``view`` is what the calling loop measured about its own watch (default: an unbroken one).
    ``plan`` (the failover planner) and ``launch`` come from the shell; without ``plan`` dead nodes are
    classified and published but no failover is requested. ``controls`` defaults to the pauses and
    cool-downs in :mod:`continuity.state.controls`.
    """
    cache = cache or SweepCache()
    t0 = time.perf_counter()
    # The cyclic garbage collector, left on, runs dozens of times inside a 10,000-node sweep (each run
    # scanning every object the cache holds) and was most of its time. Nothing here makes cycles worth
    # waiting for: collect after the sweep, between sweeps, instead of inside it.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        with cache.lock:  # an ingest thread of this process waits while we sweep
            return _sweep_locked(client, bp, lead, view, cache, pulse, launch, plan, controls, t0)
    finally:
        if gc_was_on:
            gc.enable()


def _sweep_locked(client: Any, bp: Blueprint, lead: Leadership, view: detector.View | None, cache: SweepCache,
                  pulse: EventSink | None, launch: Launcher | None, plan: Planner | None, controls: Controls | None,
                  t0: float) -> SweepResult:
    services = sorted(bp.services)
    snap = _read(client, bp, services, cache)
    if snap.misaligned:
        # a value in the drained batch held a newline: only a writer bypassing the beat script does that.
        # The batch is gone but every beat in it is also in the heartbeat hash: read that in full.
        log.warning("sweep: pending heartbeats held a value with a newline (not written by the beat script); "
                    "reading every heartbeat instead")
        snap = _read(client, bp, services, cache, force_full=True)
    now, lease_map = snap.now, snap.leases

    if snap.states is None:
        prev = cache.states  # nobody else swept since our last sweep: our memory is the state
        _recheck(client, bp, snap, prev, cache)
    else:
        cache.ingested.clear()  # the full read sees every beat a slice drained (the heartbeat hash keeps them)
        cache.ingest_rejected.clear()
        prev = {}
        for node, raw in snap.states.items():
            data = _loads(raw)
            if isinstance(data, dict):
                prev[node] = detector.NodeState.from_dict(data)
        cache.accepted.clear()  # arrivals/sequences in Redis may lag: re-derive them from the beats
    t_read = time.perf_counter()
    meta_data = _loads(snap.meta)
    meta = detector.Meta.from_dict(meta_data) if isinstance(meta_data, dict) else detector.Meta()
    beats, rejected = verify_beats(bp, snap.entries, prev, cache, strict=not snap.full)
    bad_raw = {n: e[0] for n, e in snap.entries.items() if n in rejected}
    if cache.ingested or cache.ingest_rejected:
        # what the ingest slices verified since the last sweep; our own drain is newer where both have a node
        beats = {**cache.ingested, **beats}
        for node, (exc, raw) in cache.ingest_rejected.items():
            if node not in rejected:
                rejected[node], bad_raw[node] = exc, raw
        cache.ingested, cache.ingest_rejected = {}, {}
    t_verify = time.perf_counter()

    outcome = detector.sweep(prev, beats, bp, now, meta, view)
    holders = {s: (lease.node if lease is not None else None) for s, lease in lease_map.items()}
    prev_mode = state_mode.parse(snap.mode)
    mode = modes.compute(bp, holders, outcome.states, now, prev_mode if isinstance(prev_mode, dict) else None)
    t_decide = time.perf_counter()

    # report each distinct bad blob once (a forged beat left in Redis must not flood the history)
    seen_bad = dict(outcome.meta.rejected)
    new_rejections: dict[str, heartbeats.Rejected] = {}
    for node, exc in rejected.items():
        fp = heartbeats.digest(bad_raw.get(node, b""))
        if seen_bad.get(node) != fp:
            new_rejections[node] = exc
            seen_bad[node] = fp
    for node in list(seen_bad):
        if node not in rejected:
            del seen_bad[node]
    out_meta = replace(outcome.meta, rejected=seen_bad)

    touched = outcome.states.keys() if outcome.touched is None else outcome.touched
    states_out = outcome.states
    changed = {n: json.dumps(states_out[n].as_dict(), separators=(",", ":")) for n in touched
               if n not in prev or not detector.same_persisted(prev[n], states_out[n])}
    stale = [n for n in prev if n not in outcome.states]
    mode_doc = mode.as_dict()
    storm_ids = [i for i in incidents.ids(client) if i.startswith("storm-")] if outcome.storm_cleared else []
    # write only while we still hold the lease: a leader that stalled past its lease (paused process)
    # must not overwrite newer states with old ones, nor launch failovers from stale evidence
    generation = detection.write(
        client, lead.holder, changed=changed, stale=stale, meta=out_meta.as_dict(),
        mode=mode_doc if not isinstance(prev_mode, dict) or _mode_key(prev_mode) != _mode_key(mode_doc) else None,
        open_incidents={_storm_id(outcome): _storm_incident(outcome, now)} if outcome.storm_started else {},
        close_incidents=storm_ids, mark=detection.SweepMark(now, outcome.sweep_gap, lead.node, lead.term),
        lease_ttl=lead.ttl)
    if generation is None:
        log.warning("sweep: lost the leader lease before writing (stalled too long); results discarded")
        cache.generation = ""
        return SweepResult(now=now, skipped=LOST_LEASE)
    cache.states, cache.generation = outcome.states, generation
    t_write = time.perf_counter()

    result = SweepResult(now=now, outcome=outcome, mode=mode, accepted=len(beats),
                         rejected={n: e.reason for n, e in rejected.items()})
    _emit_events(pulse, outcome, new_rejections, prev_mode, mode, now)
    for removed in cache.pauses.observe(snap.pauses, lambda scopes: state_controls.read_resumes(client, scopes), now):
        log.warning("sweep: pause of %s removed without a signed resume: still honoured", removed["scope"])
        _emit(pulse, FAILOVER_PAUSE_REJECTED, data={"scope": removed["scope"], "reason": removed["reason"],
                                                    "signer": removed["signer"]})
    if outcome.eligible:
        # a role whose lease vanished is still its last holder's: if that node is the one now dead, it
        # fails over like any dead primary (its own agent takes back a vanished lease while it lives)
        planned = {s: lease if lease is not None else snap.records.get(s) for s, lease in lease_map.items()}
        result.launched = _fail_over(client, bp, outcome, planned, now, pulse, launch, plan, controls, cache)
    if snap.failed and not outcome.tilt and not outcome.grace:
        # no storm check: the evidence is the node's own word that it stopped the service, not silence
        result.launched += _fail_failed_services(client, bp, outcome, snap, now, pulse, launch, plan, controls,
                                                 cache)
    t_end = time.perf_counter()
    result.timings = {"read": t_read - t0, "verify": t_verify - t_read, "decide": t_decide - t_verify,
                      "write": t_write - t_decide, "total": t_end - t0}
    return result


def _mode_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    return (doc.get("mode"), doc.get("unhealthy"), doc.get("dormant"), doc.get("shed_tiers"))


def _storm_id(outcome: detector.Outcome) -> str:
    return f"storm-{int(outcome.meta.storm_since or 0)}"


def _storm_incident(outcome: detector.Outcome, now: float) -> dict[str, Any]:
    return {"id": _storm_id(outcome), "kind": "failover-storm", "opened": now, "dead": outcome.dead,
            "fraction": round(outcome.dead_fraction, 3),
            "reason": "more nodes dead at once than the storm brake allows: automatic failover halted"}


def _emit(pulse: EventSink | None, kind: EventKind, **kwargs: Any) -> None:
    if pulse is None:
        return
    try:
        pulse.emit(kind, **kwargs)
    except Exception as exc:  # noqa: BLE001 - losing an event must not stop detection
        log.warning("sweep: could not record %s: %s", kind, exc)


LOST_LEASE = "lost the leader lease before writing"
TILT_WHY = {"paused": "the detector itself was paused: no action until the grace ends",
            "clock-jump": "Redis time moved unlike the detector's own clock: no action until the grace ends"}

EVENT_FOR = {detector.SUSPECT: DETECT_NODE_SUSPECT, detector.DEAD: DETECT_NODE_DEAD,
             detector.ALIVE: DETECT_NODE_ALIVE, detector.EXPECTED_OFFLINE: DETECT_NODE_EXPECTED_OFFLINE}


def _emit_events(pulse: EventSink | None, outcome: detector.Outcome, rejected: Mapping[str, heartbeats.Rejected],
                 prev_mode: Any, mode: modes.Mode, now: float) -> None:
    for node, exc in rejected.items():
        log.warning("sweep: rejected heartbeat stored as %r: %s", node, exc)
        _emit(pulse, DETECT_HEARTBEAT_REJECTED, node=node, data={"reason": exc.reason, "detail": exc.detail})
    for tr in outcome.transitions:
        kind = EVENT_FOR.get(tr.new)
        if kind:
            st = outcome.states[tr.node]
            _emit(pulse, kind, node=tr.node, data={**tr.as_dict(), "last_seen": st.last_arrival})
    if outcome.tilt_started:
        _emit(pulse, DETECT_TILT, data={"gap": outcome.sweep_gap, "own_gap": outcome.own_gap,
                                          "until": outcome.meta.tilt_until,
                                          "reason": TILT_WHY.get(outcome.tilt_reason or "", outcome.tilt_reason)})
    if outcome.tilt_ended:
        _emit(pulse, DETECT_TILT_ENDED, data={"at": now})
    if outcome.grace_started:
        _emit(pulse, DETECT_GRACE_STARTED, data={"reason": outcome.meta.grace_reason, "gap": outcome.sweep_gap,
                                                   "at": now, "until": outcome.meta.grace_until})
    if outcome.grace_ended:
        _emit(pulse, DETECT_GRACE_ENDED, data={"at": now})
    if outcome.storm_started:
        _emit(pulse, DETECT_STORM, data=_storm_incident(outcome, now))
    if outcome.storm_cleared:
        _emit(pulse, DETECT_STORM_CLEARED, data={"at": now, "dead": outcome.dead})
    old = prev_mode.get("mode") if isinstance(prev_mode, dict) else None
    if old != mode.mode:
        _emit(pulse, DETECT_MODE_CHANGED, data={"from": old, "to": mode.mode, "unhealthy": mode.unhealthy,
                                                  "shed_tiers": mode.shed_tiers})


_pause_rejections: dict[tuple[str, str], float] = {}  # (scope, reason) -> when last reported (monotonic)


def _planning(client: Any, bp: Blueprint, controls: Controls | None, pulse: EventSink | None = None,
              cache: SweepCache | None = None) -> tuple[dict[str, Any], tuple[set[str], bool, dict[str, float]]]:
    """The planner's extra kwargs and the pause/cool-down state (read from :mod:`continuity.state.controls`
    unless a test injected ``controls``). Only pauses an operator signed count (:mod:`continuity.pause_auth`);
    each ignored note is reported as ``failover.pause_rejected``, at most once a minute. A signed note this
    detector honoured and saw removed without a signed resume still pauses its scope (``cache.pauses``)."""
    # who is primary once the dead node's lease has already expired
    extra: dict[str, Any] = {"routes": routes.read_many(client, sorted(bp.services)),
                             "behind": _behind(client, bp)}
    if controls is not None:
        return extra, controls(client, bp)
    checker = pause_auth.Checker()
    state = state_controls.read(client, bp.services, honour=checker).as_tuple()
    at = time.monotonic()
    for rejected in checker.rejected:
        key = (rejected["scope"], rejected["reason"])
        if at - _pause_rejections.get(key, -1e9) >= 60.0:
            _pause_rejections[key] = at
            log.warning("sweep: pause of %s ignored: %s", rejected["scope"], rejected["reason"])
            _emit(pulse, FAILOVER_PAUSE_REJECTED, data={"scope": rejected["scope"], "reason": rejected["reason"],
                                                        "signer": rejected["signer"]})
    if cache is not None:
        held = cache.pauses.paused()
        paused, global_pause, cooldowns = state
        state = (paused | {s for s in held if s in bp.services}, global_pause or state_controls.GLOBAL in held,
                 cooldowns)
    return extra, state


def _behind(client: Any, bp: Blueprint) -> dict[str, dict[str, int]]:
    """Service -> placement node -> committed records it lacks, from the positions standbys published (the planner
    ranks nodes holding everything acknowledged first). Services with nothing committed are left out."""
    services = sorted(bp.services)
    committed = replication_state.read_committed(client, services)
    applied = replication_state.read_applied(client, committed)
    out = {}
    for svc, positions in committed.items():
        sv = bp.services[svc]
        out[svc] = survivors.shortfalls((sv.primary, *sv.standbys), applied.get(svc, ()), positions)
    return out


def _fail_over(client: Any, bp: Blueprint, outcome: detector.Outcome, lease_map: Mapping[str, Any], now: float,
               pulse: EventSink | None, launch: Launcher | None, plan: Planner | None,
               controls: Controls | None, cache: SweepCache | None = None) -> list[str]:
    """Hand the newly dead nodes to the planner and the launcher (failover's code, injected by the shell)."""
    if plan is None:
        return []
    extra, (paused, global_pause, cooldowns) = _planning(client, bp, controls, pulse, cache)
    states = {n: s.as_dict() for n, s in outcome.states.items()}
    plans = plan(bp, set(outcome.eligible), states, dict(lease_map), now, paused, global_pause, cooldowns, **extra)
    trigger = {"by": "detector", "reason": "node dead", "dead": outcome.eligible, "detected_at": now,
               "last_seen": {n: outcome.states[n].last_arrival for n in outcome.eligible}}
    _emit(pulse, DETECT_FAILOVER_REQUESTED, data={**trigger, "plans": len(plans)})
    if not plans or launch is None:
        return []
    try:
        return list(launch(plans, trigger))
    except Exception as exc:  # noqa: BLE001 - recorded; the chain's own records say the rest
        log.exception("sweep: launching failovers failed")
        _emit(pulse, DETECT_FAILOVER_LAUNCH_FAILED, data={"error": f"{type(exc).__name__}: {exc}",
                                                            "dead": outcome.eligible})
        return []


def _fail_failed_services(client: Any, bp: Blueprint, outcome: detector.Outcome, snap: Snapshot, now: float,
                          pulse: EventSink | None, launch: Launcher | None, plan: Planner | None,
                          controls: Controls | None, cache: SweepCache) -> list[str]:
    """Fail over each service a live node gave up on, one launch (and one record) per service.

    Each gets its own trigger, so its record says ``service-failed`` with the node's reason, and its
    detection/recovery times count from the first failed probe (``since``), not from a heartbeat. The
    sweep sees the marker every second until the new primary is verified; the cool-down claimed at
    launch is what keeps that from launching twice.
    """
    failed: dict[str, dict[str, Any]] = {}
    for svc, marker in snap.failed.items():
        # the node's own word, or nothing: a marker anyone with Redis access SET is not a reason to fail over
        why = heartbeats.verify_claim(marker, cache.keyring) if marker.get("service", svc) == svc else "other-service"
        if why is not None:
            fp = heartbeats.digest(json.dumps(marker, sort_keys=True))
            if cache.bad_claims.get(svc) != fp:
                cache.bad_claims[svc] = fp
                log.warning("sweep: service-failed marker of %s naming %r not believed: %s", svc, marker.get("node"),
                            why)
                _emit(pulse, DETECT_CLAIM_REJECTED, service=svc,
                      data={"reason": why, "claim": "service-failed", "claimed_node": str(marker.get("node"))})
            continue
        lease = snap.leases.get(svc)
        if lease is not None and lease.epoch > int(marker["epoch"]) and snap.epochs.get(svc, 0) == lease.epoch:
            # someone serves a newer epoch (its verify step would have cleared this; it crashed before)
            leases.clear_failed(client, svc, lease.epoch)
            continue
        failed[svc] = marker
    if not failed or plan is None:
        return []
    extra, (paused, global_pause, cooldowns) = _planning(client, bp, controls, pulse, cache)
    states = {n: s.as_dict() for n, s in outcome.states.items()}
    live = {s: lease for s, lease in snap.leases.items()}
    launched: list[str] = []
    for svc, marker in sorted(failed.items()):
        plans = [p for p in plan(bp, set(), states, live, now, paused, global_pause, cooldowns,
                                 failed_services={svc: str(marker.get("reason") or "service failed")}, **extra)
                 if getattr(p, "service", None) == svc]
        if not plans:
            continue
        node = str(marker["node"])
        since = marker.get("since") or marker.get("at") or now
        trigger = {"by": "detector", "reason": "service-failed", "service": svc, "failed_on": node,
                   "epoch": int(marker["epoch"]), "detail": marker.get("reason"), "restarts": marker.get("restarts"),
                   "given_up_at": marker.get("at"), "detected_at": now, "last_seen": {node: float(since)}}
        _emit(pulse, DETECT_FAILOVER_REQUESTED, service=svc, data={**trigger, "plans": len(plans)})
        if launch is None:
            continue
        try:
            launched += list(launch(plans, trigger))
        except Exception as exc:  # noqa: BLE001 - recorded; the next sweep tries again (the marker stays)
            log.exception("sweep: launching the failover of failed service %s failed", svc)
            _emit(pulse, DETECT_FAILOVER_LAUNCH_FAILED, service=svc,
                  data={"error": f"{type(exc).__name__}: {exc}", "service": svc})
    return launched
