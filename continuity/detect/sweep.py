"""One detector sweep against Redis: read everything once, decide purely, write back what changed.

This is the imperative shell around :mod:`detector` and :mod:`mode`: the Celery
task ``continuity.control.sweep`` calls :func:`run_sweep` every second and
injects the failover launcher, so nothing in here imports Celery.

Shape of a sweep, chosen for 10,000 nodes in well under 50 ms:

1. a short lock (two control workers may both receive a sweep; only one acts);
2. one pipelined round trip: Redis ``TIME`` (the only clock used, the same one
   that stamped heartbeat arrivals), all heartbeats, their arrival stamps, the
   previous node states, the detector meta, the mode and every lease;
3. verify each changed heartbeat (HMAC, node, sequence, freshness); a beat that
   fails is reported once as ``detect.heartbeat_rejected`` and changes nothing;
4. :func:`detector.sweep` and :func:`mode.compute`;
5. one pipelined write of changed states, meta and mode; pulse events for every
   transition; the newly dead nodes go to the failover planner and launcher.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from redis.exceptions import WatchError

from continuity import keys
from continuity.blueprint import Blueprint
from continuity.detect import detector, heartbeat, leases
from continuity.detect import mode as modes

log = logging.getLogger("continuity.sweep")

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One server-side call returns every hash the sweep needs as a few big strings: at 10,000 nodes,
# parsing 40,000 separate replies costs more than the whole sweep may take. A newline inside a value
# (only a forger would write one) is blanked so it cannot shift the pairs; that value then fails its MAC.
# The node states come back only when another process swept since our last sweep (generation changed).
# KEYS: hb arrivals states meta mode attempt generation ; ARGV[1]: generation we hold in memory
SNAPSHOT = """
local function flat(key)
  local a = redis.call('HGETALL', key)
  for i = 1, #a do
    if string.find(a[i], '\\n', 1, true) then a[i] = (string.gsub(a[i], '\\n', ' ')) end
  end
  return table.concat(a, '\\n')
end
local t = redis.call('TIME')
local gen = redis.call('GET', KEYS[7]) or '0'
local states, fresh = '', '0'
if ARGV[1] ~= gen then states, fresh = flat(KEYS[3]), '1' end
return {t[1], t[2], flat(KEYS[1]), flat(KEYS[2]), gen, fresh, states,
        redis.call('GET', KEYS[4]) or '', redis.call('GET', KEYS[5]) or '', redis.call('GET', KEYS[6]) or ''}
"""

Launcher = Callable[[list[Any], dict[str, Any]], list[str]]
Planner = Callable[..., list[Any]]
Controls = Callable[[Any, Blueprint], tuple[set[str], bool, dict[str, float]]]


@dataclass
class SweepCache:
    """What one process remembers between its sweeps, valid while no other process swept in between.

    ``accepted`` holds the raw beats already verified (not verified again), ``states`` the detector
    state as of ``generation`` (not re-read and re-parsed from Redis).
    """

    accepted: dict[str, str] = field(default_factory=dict)
    keyring: heartbeat.KeyRing = field(default_factory=heartbeat.KeyRing)
    states: dict[str, detector.NodeState] = field(default_factory=dict)
    generation: str = ""


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


def _pairs(flat: str) -> dict[str, str]:
    if not flat:
        return {}
    parts = flat.split("\n")
    return dict(zip(parts[0::2], parts[1::2], strict=False))


@dataclass
class Snapshot:
    now: float
    beats: dict[str, str]
    arrivals: dict[str, str]
    generation: str
    states: dict[str, str] | None  # None: unchanged since the generation we hold
    meta: str
    mode: str
    attempt: float | None
    leases: dict[str, leases.Lease | None]


def _read(client: Any, services: list[str], generation: str) -> Snapshot:
    read_lease = leases.script(client, "read", leases.READ)
    snap = leases.script(client, "snapshot", SNAPSHOT)
    pipe = client.pipeline(transaction=False)
    snap(keys=[keys.heartbeats(), keys.heartbeat_arrivals(), keys.node_state(), keys.detector_meta(), keys.mode(),
               keys.sweep_attempt(), keys.detector_generation()], args=[generation or "-"], client=pipe)
    for s in services:
        read_lease(keys=[keys.lease(s)], args=[], client=pipe)
    res = pipe.execute()
    secs, micros, beats, arrivals, gen, fresh, states, meta, mode, attempt = (_text(v) for v in res[0])
    try:
        attempt_at = float(attempt) if attempt else None
    except ValueError:
        attempt_at = None
    return Snapshot(now=int(secs) + int(micros) / 1e6, beats=_pairs(beats), arrivals=_pairs(arrivals),
                    generation=gen, states=_pairs(states) if fresh == "1" else None, meta=meta, mode=mode,
                    attempt=attempt_at,
                    leases={s: leases.parse(s, raw) for s, raw in zip(services, res[1:], strict=True)})


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def verify_beats(bp: Blueprint, raw_beats: Mapping[str, str], arrivals: Mapping[str, str],
                 prev: Mapping[str, detector.NodeState], cache: SweepCache,
                 ) -> tuple[dict[str, detector.Beat], dict[str, heartbeat.Rejected]]:
    """New authentic beats per node, and the rejections (by hash field) of everything else that changed."""
    beats: dict[str, detector.Beat] = {}
    rejected: dict[str, heartbeat.Rejected] = {}
    age = max_beat_age(bp)
    nodes = bp.nodes
    for node, raw in raw_beats.items():
        if cache.accepted.get(node) == raw:
            continue  # the same beat as last sweep: nothing new, already verified
        if node not in nodes:
            rejected[node] = heartbeat.Rejected("unknown-node", f"{node!r} is not in the blueprint")
            continue
        try:
            arrival = float(arrivals[node]) if node in arrivals else None
        except ValueError:
            arrival = None
        state = prev.get(node)
        last = state.last_seq if state is not None else None
        try:
            hb = heartbeat.verify(raw, node, cache.keyring, last_seq=None, arrival=arrival, max_age=age)
        except heartbeat.Rejected as exc:
            rejected[node] = exc
            continue
        if last is not None and hb.seq == last:
            cache.accepted[node] = raw  # already counted (by another process's sweep)
            continue
        if last is not None and hb.seq < last:
            rejected[node] = heartbeat.Rejected("replayed", f"seq {hb.seq} not after last accepted {last}")
            continue
        cache.accepted[node] = raw
        beats[node] = detector.Beat(seq=hb.seq, arrival=arrival if arrival is not None else hb.ts,
                                    services=hb.services)
    return beats, rejected


def _lock(client: Any, ttl: float) -> str | None:
    token = secrets.token_hex(8)
    return token if client.set(keys.sweep_lock(), token, nx=True, px=max(1, int(ttl * 1000))) else None


def _unlock(client: Any, token: str) -> None:
    try:
        leases.script(client, "unlock", _UNLOCK)(keys=[keys.sweep_lock()], args=[token])
    except Exception as exc:  # noqa: BLE001 - it expires on its own
        log.warning("sweep: could not release the lock: %s", exc)


def run_sweep(client: Any, bp: Blueprint, *, cache: SweepCache | None = None, pulse: Any = None,
              launch: Launcher | None = None, plan: Planner | None = None, controls: Controls | None = None,
              lock_ttl: float = 2.0) -> SweepResult:
    """Run one sweep; returns what it saw and did (the task's result, the bench's measurement)."""
    cache = cache or SweepCache()
    t0 = time.perf_counter()
    token = _lock(client, lock_ttl)
    if token is None:
        # the detector as a whole is still awake: record it, so a sweeper that stalled holding the
        # lock is not mistaken for the detector having been paused (TILT)
        secs, micros = client.time()
        client.set(keys.sweep_attempt(), f"{int(secs) + int(micros) / 1e6:.6f}")
        return SweepResult(now=time.time(), skipped="another sweep holds the lock")
    try:
        return _sweep_locked(client, bp, cache, pulse, launch, plan, controls, t0, token)
    finally:
        _unlock(client, token)


def _sweep_locked(client: Any, bp: Blueprint, cache: SweepCache, pulse: Any, launch: Launcher | None,
                  plan: Planner | None, controls: Controls | None, t0: float, token: str) -> SweepResult:
    services = sorted(bp.services)
    snap = _read(client, services, cache.generation)
    now, raw_beats, lease_map = snap.now, snap.beats, snap.leases
    t_read = time.perf_counter()

    if snap.states is None:
        prev = cache.states  # nobody else swept since our last sweep: our memory is the state
    else:
        prev = {}
        for node, raw in snap.states.items():
            data = _loads(raw)
            if isinstance(data, dict):
                prev[node] = detector.NodeState.from_dict(data)
        cache.accepted.clear()  # arrivals/sequences in Redis may lag: re-derive them from the beats
    attempt = snap.attempt
    meta_data = _loads(snap.meta)
    meta = detector.Meta.from_dict(meta_data) if isinstance(meta_data, dict) else detector.Meta()
    if attempt is not None and meta.last_sweep is not None and meta.last_sweep < attempt <= now:
        meta = replace(meta, last_sweep=attempt)
    beats, rejected = verify_beats(bp, raw_beats, snap.arrivals, prev, cache)
    t_verify = time.perf_counter()

    outcome = detector.sweep(prev, beats, bp, now, meta)
    holders = {s: (lease.node if lease is not None else None) for s, lease in lease_map.items()}
    prev_mode = _loads(snap.mode)
    mode = modes.compute(bp, holders, outcome.states, now, prev_mode if isinstance(prev_mode, dict) else None)
    t_decide = time.perf_counter()

    # report each distinct bad blob once (a forged beat left in Redis must not flood the history)
    seen_bad = dict(outcome.meta.rejected)
    new_rejections: dict[str, heartbeat.Rejected] = {}
    for node, exc in rejected.items():
        fp = heartbeat.digest(raw_beats.get(node, ""))
        if seen_bad.get(node) != fp:
            new_rejections[node] = exc
            seen_bad[node] = fp
    for node in list(seen_bad):
        if node not in rejected:
            del seen_bad[node]
    out_meta = replace(outcome.meta, rejected=seen_bad)

    changed = {n: json.dumps(st.as_dict(), separators=(",", ":")) for n, st in outcome.states.items()
               if n not in prev or not detector.same_persisted(prev[n], st)}
    stale = [n for n in prev if n not in outcome.states]
    mode_doc = mode.as_dict()
    storm_ids = [i for i in client.hkeys(keys.incidents()) if str(i).startswith("storm-")] \
        if outcome.storm_cleared else []
    # write only while we still hold the lock: a sweeper that stalled past its lock (paused process)
    # must not overwrite newer states with old ones, nor launch failovers from stale evidence
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.sweep_lock())
            if pipe.get(keys.sweep_lock()) != token:
                raise WatchError("lock lost")
            pipe.multi()
            if changed:
                pipe.hset(keys.node_state(), mapping=changed)
            if stale:
                pipe.hdel(keys.node_state(), *stale)
            pipe.set(keys.detector_meta(), json.dumps(out_meta.as_dict()))
            if not isinstance(prev_mode, dict) or _mode_key(prev_mode) != _mode_key(mode_doc):
                pipe.set(keys.mode(), json.dumps(mode_doc))
            if outcome.storm_started:
                pipe.hset(keys.incidents(), _storm_id(outcome), json.dumps(_storm_incident(outcome, now)))
            if outcome.storm_cleared:
                for iid in storm_ids:
                    pipe.hdel(keys.incidents(), iid)
            pipe.incr(keys.detector_generation())
            generation = str(pipe.execute()[-1])
        except WatchError:
            log.warning("sweep: lost the lock before writing (stalled too long); results discarded")
            cache.generation = ""
            return SweepResult(now=now, skipped="lost the lock before writing")
    cache.states, cache.generation = outcome.states, generation
    t_write = time.perf_counter()

    result = SweepResult(now=now, outcome=outcome, mode=mode, accepted=len(beats),
                         rejected={n: e.reason for n, e in rejected.items()})
    _emit_events(pulse, outcome, new_rejections, prev_mode, mode, now)
    if outcome.eligible:
        result.launched = _fail_over(client, bp, outcome, lease_map, now, pulse, launch, plan, controls)
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


def _emit(pulse: Any, kind: str, **kwargs: Any) -> None:
    if pulse is None:
        return
    try:
        pulse.emit(kind, **kwargs)
    except Exception as exc:  # noqa: BLE001 - losing an event must not stop detection
        log.warning("sweep: could not record %s: %s", kind, exc)


EVENT_FOR = {detector.SUSPECT: "detect.node_suspect", detector.DEAD: "detect.node_dead",
             detector.ALIVE: "detect.node_alive", detector.EXPECTED_OFFLINE: "detect.node_expected_offline"}


def _emit_events(pulse: Any, outcome: detector.Outcome, rejected: Mapping[str, heartbeat.Rejected],
                 prev_mode: Any, mode: modes.Mode, now: float) -> None:
    for node, exc in rejected.items():
        log.warning("sweep: rejected heartbeat stored as %r: %s", node, exc)
        _emit(pulse, "detect.heartbeat_rejected", node=node, data={"reason": exc.reason, "detail": exc.detail})
    for tr in outcome.transitions:
        kind = EVENT_FOR.get(tr.new)
        if kind:
            st = outcome.states[tr.node]
            _emit(pulse, kind, node=tr.node, data={**tr.as_dict(), "last_seen": st.last_arrival})
    if outcome.tilt_started:
        _emit(pulse, "detect.tilt", data={"gap": outcome.sweep_gap, "until": outcome.meta.tilt_until,
                                          "reason": "the detector itself was paused: no action until the grace ends"})
    if outcome.tilt_ended:
        _emit(pulse, "detect.tilt_ended", data={"at": now})
    if outcome.storm_started:
        _emit(pulse, "detect.storm", data=_storm_incident(outcome, now))
    if outcome.storm_cleared:
        _emit(pulse, "detect.storm_cleared", data={"at": now, "dead": outcome.dead})
    old = prev_mode.get("mode") if isinstance(prev_mode, dict) else None
    if old != mode.mode:
        _emit(pulse, "detect.mode_changed", data={"from": old, "to": mode.mode, "unhealthy": mode.unhealthy,
                                                  "shed_tiers": mode.shed_tiers})


def _fail_over(client: Any, bp: Blueprint, outcome: detector.Outcome, lease_map: Mapping[str, Any], now: float,
               pulse: Any, launch: Launcher | None, plan: Planner | None, controls: Controls | None) -> list[str]:
    """Hand the newly dead nodes to the planner and the launcher (failover's code, injected)."""
    extra: dict[str, Any] = {}
    if plan is None:
        from continuity.failover.control import read_routes
        from continuity.failover.planner import plan_failovers as plan

        # who is primary once the dead node's lease has already expired (failover engineer's addition)
        extra["routes"] = read_routes(client, bp)
    if controls is None:
        from continuity.failover.control import read_controls as controls
    paused, global_pause, cooldowns = controls(client, bp)
    states = {n: s.as_dict() for n, s in outcome.states.items()}
    plans = plan(bp, set(outcome.eligible), states, dict(lease_map), now, paused, global_pause, cooldowns, **extra)
    trigger = {"by": "detector", "reason": "node dead", "dead": outcome.eligible, "detected_at": now,
               "last_seen": {n: outcome.states[n].last_arrival for n in outcome.eligible}}
    _emit(pulse, "detect.failover_requested", data={**trigger, "plans": len(plans)})
    if not plans or launch is None:
        return []
    try:
        return list(launch(plans, trigger))
    except Exception as exc:  # noqa: BLE001 - recorded; the chain's own records say the rest
        log.exception("sweep: launching failovers failed")
        _emit(pulse, "detect.failover_launch_failed", data={"error": f"{type(exc).__name__}: {exc}",
                                                            "dead": outcome.eligible})
        return []
