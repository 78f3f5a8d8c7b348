"""One detector sweep against Redis: read everything once, decide purely, write back what changed.

This is the imperative shell around :mod:`detector` and :mod:`mode`: the Celery
task ``continuity.control.sweep`` calls :func:`run_sweep` every second and
injects the failover planner and launcher, so nothing in here imports Celery
or :mod:`continuity.failover` (the layering test holds ``detect`` and
``failover`` apart; what both need lives in :mod:`continuity.state` and
:mod:`continuity.services`).

Shape of a sweep, chosen for 10,000 nodes in well under 50 ms:

1. a short lock (two control workers may both receive a sweep; only one acts);
2. one pipelined round trip: Redis ``TIME`` (the only clock used, the same one
   that stamped heartbeat arrivals), all heartbeats, their arrival stamps, the
   previous node states, the detector meta, the mode and every lease;
3. verify each changed heartbeat (HMAC, node, sequence, freshness); a beat that
   fails is reported once as ``detect.heartbeat_rejected`` and changes nothing;
4. :func:`detector.sweep` and :func:`mode.compute`;
5. one pipelined write of changed states, meta and mode; pulse events for every
   transition; the newly dead nodes go to the failover planner and launcher, and so does
   every service a live node gave up on (``keys.service_failed``, set by the agent's local
   recovery when restarting in place did not help).

Ingest is split from decide: verifying 10,000 MACs a second is per-arrival work, and doing it all
inside the sweep made the sweep (what a failover waits on) pay for it every second. :func:`run_ingest`
drains and verifies the pending hash in small slices between sweeps (the control worker runs it from a
background thread, every ~150 ms); the verified beats wait in the process's :class:`SweepCache` and the
sweep only drains what arrived since the last slice. Ingest is sticky: it drains only while the
generation in Redis is the one its cache holds (its process made the last sweep), so a process whose
memory is stale never swallows beats; a sweep landing in another process reads in full as before, and
beats an ingest slice drained there are still in the heartbeat hash, found by the full read or the recheck.
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
from itertools import compress, repeat
from typing import Any

from continuity.blueprint import Blueprint
from continuity.detect import detector
from continuity.detect import mode as modes
from continuity.events import (
    DETECT_FAILOVER_LAUNCH_FAILED,
    DETECT_FAILOVER_REQUESTED,
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
    EventKind,
    EventSink,
)
from continuity.state import controls as state_controls
from continuity.state import detection, heartbeats, incidents, leases, routes
from continuity.state import mode as state_mode
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
    _names: dict[bytes, str] = field(default_factory=dict)
    _keys: dict[str, bytes | None] = field(default_factory=dict)
    _bp: Any = None

    def prepare(self, bp: Blueprint) -> None:
        """Per-blueprint lookups (node name bytes -> name, name -> key), rebuilt when the blueprint changes."""
        if self._bp is bp:
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


def _take(mask: list[bool], slow: list[str], names: list[str], *cols: list[Any]) -> tuple[list[Any], ...]:
    """Keep the rows where ``mask`` holds; the names of the others go to the slow path."""
    if all(mask):
        return (names, *cols)
    slow.extend(n for n, m in zip(names, mask, strict=True) if not m)
    return tuple(list(compress(c, mask)) for c in (names, *cols))


def _verify_fast(entries: Mapping[str, tuple[bytes, bytes | None]], prev: Mapping[str, detector.NodeState],
                 cache: SweepCache, strict: bool, age: float, beats: dict[str, detector.Beat],
                 rejected: dict[str, heartbeats.Rejected], slow: list[str]) -> None:
    """The batch form of :func:`heartbeats.verify`, column by column, every step one C-level pass.

    Same checks in the same order (known node, wire form, MAC, signed node name, freshness, sequence);
    a row failing any of them leaves the batch for the slow path, which names the precise reason.
    """
    names = list(entries)
    raws, arrivals_b = (list(c) for c in zip(*entries.values(), strict=True))
    key_list = list(map(cache._keys.get, names))
    end = len(heartbeats.PREFIX) + heartbeats.TAG_LEN
    mask = [k is not None and r.startswith(heartbeats.PREFIX) and r[end:end + 1] == b"." and a is not None
            for k, r, a in zip(key_list, raws, arrivals_b, strict=True)]
    names, raws, arrivals_b, key_list = _take(mask, slow, names, raws, arrivals_b, key_list)
    bodies = [r[end + 1:] for r in raws]
    ok = heartbeats.check_macs(key_list, bodies, [r[len(heartbeats.PREFIX):end] for r in raws])
    names, raws, arrivals_b, bodies = _take(ok, slow, names, raws, arrivals_b, bodies)
    splits = list(map(bytes.split, bodies, repeat(b"|"), repeat(4)))
    mask = [len(sp) == 5 and sp[0] == n.encode() for sp, n in zip(splits, names, strict=True)]
    names, raws, arrivals_b, splits = _take(mask, slow, names, raws, arrivals_b, splits)
    if not names:
        return
    try:
        _n, seq_b, ts_b, _nonce, svc_raws = zip(*splits, strict=True)
        seqs, stamps, arrivals = list(map(int, seq_b)), list(map(float, ts_b)), list(map(float, arrivals_b))
    except ValueError:
        slow.extend(names)  # a signed beat with unreadable numbers, or a bad arrival: per row, slow path
        return
    mask = [-age <= a - t <= age for a, t in zip(arrivals, stamps, strict=True)]
    names, raws, seqs, arrivals, svc_raws = _take(mask, slow, names, raws, seqs, arrivals, svc_raws)
    lasts = [-1 if st is None or st.last_seq is None else st.last_seq for st in map(prev.get, names)]
    if cache.ingested:  # a beat verified by an ingest slice since the last sweep is the newest accepted
        for i, b in enumerate(map(cache.ingested.get, names)):
            if b is not None:
                lasts[i] = b.seq
    mask = [q > last for q, last in zip(seqs, lasts, strict=True)]
    if not all(mask):
        for n, q, last, raw, fresh in zip(names, seqs, lasts, raws, mask, strict=True):
            if fresh:
                continue
            if q < last or strict:
                rejected[n] = heartbeats.Rejected("replayed", f"seq {q} not after last accepted {last}")
            else:
                cache.accepted[n] = raw  # already counted (by another process's sweep)
        names, raws, seqs, arrivals, svc_raws = _take(mask, [], names, raws, seqs, arrivals, svc_raws)
    known_raw, known = cache.services_raw, cache.services
    services = list(map(known.get, names))
    same = list(map(bytes.__eq__, svc_raws, map(known_raw.get, names, repeat(b""))))
    if not all(same):
        for i, (n, svc_raw) in enumerate(zip(names, svc_raws, strict=True)):
            if same[i]:
                continue
            try:
                parsed = json.loads(svc_raw) if svc_raw != b"{}" else {}
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                same[i] = False
                services[i] = None
                continue
            known_raw[n], known[n], services[i] = svc_raw, parsed, parsed
        mask = [sv is not None for sv in services]
        names, raws, seqs, arrivals, services = _take(mask, slow, names, raws, seqs, arrivals, services)
    cache.accepted.update(zip(names, raws, strict=True))
    beats.update(zip(names, map(detector.Beat, seqs, arrivals, services), strict=True))


def verify_beats(bp: Blueprint, entries: Mapping[str, tuple[bytes, bytes | None]],
                 prev: Mapping[str, detector.NodeState], cache: SweepCache, *, strict: bool = True,
                 ) -> tuple[dict[str, detector.Beat], dict[str, heartbeats.Rejected]]:
    """New authentic beats per node, and the rejections (by hash field) of every other entry.

    ``entries`` maps a hash field to (raw beat, arrival stamp). ``strict`` (a delta read: every entry
    is a fresh write) refuses a beat whose sequence does not advance, even the very bytes accepted
    before — identical bytes written again are a replay, and trusting them would move the node's
    arrival forward. A full read (``strict`` False) sees beats another sweeper may already have
    counted, so an equal sequence is skipped silently there; an older one is still a replay.

    The MACs of all well-formed entries are checked in one batch (:func:`heartbeats.check_macs`);
    anything malformed or failing goes through :func:`heartbeats.verify` for its precise reason.
    """
    cache.prepare(bp)
    beats: dict[str, detector.Beat] = {}
    rejected: dict[str, heartbeats.Rejected] = {}
    age = max_beat_age(bp)
    slow: list[str] = []
    if entries:
        _verify_fast(entries, prev, cache, strict, age, beats, rejected, slow)
    prev_get, accepted, Beat = prev.get, cache.accepted, detector.Beat
    for node in slow:
        raw, arrival_b = entries[node]
        if node not in bp.nodes:
            rejected[node] = heartbeats.Rejected("unknown-node", f"{node!r} is not in the blueprint")
            continue
        state = prev_get(node)
        last = state.last_seq if state is not None else None
        if node in cache.ingested:
            last = cache.ingested[node].seq
        try:
            arrival = float(arrival_b) if arrival_b else None
        except ValueError:
            arrival = None
        try:
            hb = heartbeats.verify(raw.decode(errors="replace"), node, cache.keyring, last_seq=last if strict else None,
                                  arrival=arrival, max_age=age)
        except heartbeats.Rejected as exc:
            rejected[node] = exc
            continue
        # only reached when the fast path could not read the arrival stamp or a non-strict equal seq
        if last is not None and hb.seq <= last:
            if hb.seq < last:
                rejected[node] = heartbeats.Rejected("replayed", f"seq {hb.seq} not after last accepted {last}")
            else:
                accepted[node] = raw
            continue
        accepted[node] = raw
        beats[node] = Beat(hb.seq, arrival if arrival is not None else hb.ts, hb.services)
    return beats, rejected


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

    Every beat still passes the full check (MAC, signed node name, freshness against its Redis arrival,
    sequence after the newest accepted one, counting earlier slices); a rejected one is kept, with its
    bytes, for the sweep to report once like any other. Does nothing until this process has swept, and
    nothing while another process swept since (its memory would be stale; the sweep there reads in full).
    """
    with cache.lock:  # the time waited for a running sweep is not the slice's cost
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
                 interval: float) -> None:
        self.client, self.blueprint, self.cache, self.interval = client, blueprint, cache, interval
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

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
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


def run_sweep(client: Any, bp: Blueprint, *, cache: SweepCache | None = None, pulse: EventSink | None = None,
              launch: Launcher | None = None, plan: Planner | None = None, controls: Controls | None = None,
              lock_ttl: float = 2.0) -> SweepResult:
    """Run one sweep; returns what it saw and did (the task's result, the bench's measurement).

    ``plan`` (the failover planner) and ``launch`` come from the shell; without ``plan`` dead nodes are
    classified and published but no failover is requested. ``controls`` defaults to the pauses and
    cool-downs in :mod:`continuity.state.controls`.
    """
    cache = cache or SweepCache()
    t0 = time.perf_counter()
    token = detection.lock(client, lock_ttl)
    if token is None:
        # the detector as a whole is still awake: record it, so a sweeper that stalled holding the
        # lock is not mistaken for the detector having been paused (TILT)
        detection.note_attempt(client)
        return SweepResult(now=time.time(), skipped="another sweep holds the lock")
    # The cyclic garbage collector, left on, runs dozens of times inside a 10,000-node sweep (each run
    # scanning every object the cache holds) and was most of its time. Nothing here makes cycles worth
    # waiting for: collect after the sweep, between sweeps, instead of inside it.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        with cache.lock:  # an ingest thread of this process waits while we sweep
            return _sweep_locked(client, bp, cache, pulse, launch, plan, controls, t0, token)
    finally:
        if gc_was_on:
            gc.enable()
        detection.unlock(client, token)


def _sweep_locked(client: Any, bp: Blueprint, cache: SweepCache, pulse: EventSink | None, launch: Launcher | None,
                  plan: Planner | None, controls: Controls | None, t0: float, token: str) -> SweepResult:
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
    attempt = snap.attempt
    meta_data = _loads(snap.meta)
    meta = detector.Meta.from_dict(meta_data) if isinstance(meta_data, dict) else detector.Meta()
    if attempt is not None and meta.last_sweep is not None and meta.last_sweep < attempt <= now:
        meta = replace(meta, last_sweep=attempt)
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

    outcome = detector.sweep(prev, beats, bp, now, meta)
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
    # write only while we still hold the lock: a sweeper that stalled past its lock (paused process)
    # must not overwrite newer states with old ones, nor launch failovers from stale evidence
    generation = detection.write(
        client, token, changed=changed, stale=stale, meta=out_meta.as_dict(),
        mode=mode_doc if not isinstance(prev_mode, dict) or _mode_key(prev_mode) != _mode_key(mode_doc) else None,
        open_incidents={_storm_id(outcome): _storm_incident(outcome, now)} if outcome.storm_started else {},
        close_incidents=storm_ids)
    if generation is None:
        log.warning("sweep: lost the lock before writing (stalled too long); results discarded")
        cache.generation = ""
        return SweepResult(now=now, skipped="lost the lock before writing")
    cache.states, cache.generation = outcome.states, generation
    t_write = time.perf_counter()

    result = SweepResult(now=now, outcome=outcome, mode=mode, accepted=len(beats),
                         rejected={n: e.reason for n, e in rejected.items()})
    _emit_events(pulse, outcome, new_rejections, prev_mode, mode, now)
    if outcome.eligible:
        # a role whose lease vanished is still its last holder's: if that node is the one now dead, it
        # fails over like any dead primary (its own agent takes back a vanished lease while it lives)
        planned = {s: lease if lease is not None else snap.records.get(s) for s, lease in lease_map.items()}
        result.launched = _fail_over(client, bp, outcome, planned, now, pulse, launch, plan, controls)
    if snap.failed and not outcome.tilt:
        # no storm check: the evidence is the node's own word that it stopped the service, not silence
        result.launched += _fail_failed_services(client, bp, outcome, snap, now, pulse, launch, plan, controls)
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
        _emit(pulse, DETECT_TILT, data={"gap": outcome.sweep_gap, "until": outcome.meta.tilt_until,
                                          "reason": "the detector itself was paused: no action until the grace ends"})
    if outcome.tilt_ended:
        _emit(pulse, DETECT_TILT_ENDED, data={"at": now})
    if outcome.storm_started:
        _emit(pulse, DETECT_STORM, data=_storm_incident(outcome, now))
    if outcome.storm_cleared:
        _emit(pulse, DETECT_STORM_CLEARED, data={"at": now, "dead": outcome.dead})
    old = prev_mode.get("mode") if isinstance(prev_mode, dict) else None
    if old != mode.mode:
        _emit(pulse, DETECT_MODE_CHANGED, data={"from": old, "to": mode.mode, "unhealthy": mode.unhealthy,
                                                  "shed_tiers": mode.shed_tiers})


def _planning(client: Any, bp: Blueprint, controls: Controls | None,
              ) -> tuple[dict[str, Any], tuple[set[str], bool, dict[str, float]]]:
    """The planner's extra kwargs and the pause/cool-down state (read from :mod:`continuity.state.controls`
    unless a test injected ``controls``)."""
    # who is primary once the dead node's lease has already expired
    extra: dict[str, Any] = {"routes": routes.read_many(client, sorted(bp.services))}
    if controls is None:
        return extra, state_controls.read(client, bp.services).as_tuple()
    return extra, controls(client, bp)


def _fail_over(client: Any, bp: Blueprint, outcome: detector.Outcome, lease_map: Mapping[str, Any], now: float,
               pulse: EventSink | None, launch: Launcher | None, plan: Planner | None,
               controls: Controls | None) -> list[str]:
    """Hand the newly dead nodes to the planner and the launcher (failover's code, injected by the shell)."""
    if plan is None:
        return []
    extra, (paused, global_pause, cooldowns) = _planning(client, bp, controls)
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
                          controls: Controls | None) -> list[str]:
    """Fail over each service a live node gave up on, one launch (and one record) per service.

    Each gets its own trigger, so its record says ``service-failed`` with the node's reason, and its
    detection/recovery times count from the first failed probe (``since``), not from a heartbeat. The
    sweep sees the marker every second until the new primary is verified; the cool-down claimed at
    launch is what keeps that from launching twice.
    """
    failed: dict[str, dict[str, Any]] = {}
    for svc, marker in snap.failed.items():
        lease = snap.leases.get(svc)
        if lease is not None and lease.epoch > int(marker["epoch"]) and snap.epochs.get(svc, 0) == lease.epoch:
            # someone serves a newer epoch (its verify step would have cleared this; it crashed before)
            leases.clear_failed(client, svc, lease.epoch)
            continue
        failed[svc] = marker
    if not failed or plan is None:
        return []
    extra, (paused, global_pause, cooldowns) = _planning(client, bp, controls)
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
