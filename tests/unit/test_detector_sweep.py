"""The sweep shell against a real redis-server: verification, rejections, states, mode, hand-over to failover."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect import detector
from continuity.detect.agent import Agent
from continuity.detect.sweep import LOST_LEASE, Leadership, SweepCache, run_ingest, run_sweep
from continuity.failover.planner import plan_failovers
from continuity.services.probes import ProbeResult
from continuity.state import detection, detector_leader, heartbeats, keys, leases
from continuity.state.detector_leader import Identity
from tests.helpers import wait_for

# fast timings so that real silences are short; Redis TIME is the clock
FLEET = """\
version: 1
fleet: sweep
policy: {heartbeat_interval: 100ms, lease_ttl: 600ms, lease_margin: 100ms, suspect_after: 300ms,
         dead_after: 500ms, tilt_gap: 5s, tilt_grace: 1s, storm_fraction: 0.5, recover_beats: 2}
nodes:
  core-a: {kind: core}
  core-b: {kind: core}
  core-c: {kind: core}
domains:
  d:
    rto: 10s
    rpo: 5s
    services:
      ledger: {tier: 0, placement: {primary: core-a, standbys: [core-b]}}
      reports: {tier: 2, placement: {primary: core-b, standbys: [core-a]}}
"""
KEYS = {n: f"key-{n}".encode() for n in ("core-a", "core-b", "core-c")}


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, **kw: Any) -> None:
        self.items.append((kind, kw))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [kw for k, kw in self.items if k == kind]


@pytest.fixture
def bp() -> Blueprint:
    return parse_blueprint(parse_text(FLEET, "sweep.yml"))


@pytest.fixture
def fleet(bp, rds):
    def noop(*a: Any, **k: Any) -> None:
        return None

    def healthy(*a: Any) -> ProbeResult:
        return ProbeResult(True, "ok")

    return {n: Agent(bp, n, rds, KEYS[n], run_hook=noop, prober=healthy) for n in KEYS}


@pytest.fixture
def cache() -> SweepCache:
    return SweepCache(keyring=heartbeats.KeyRing(dict(KEYS)))


def redis_now(rds) -> float:
    sec, usec = rds.time()
    return sec + usec / 1e6


def beat_all(fleet: dict[str, Agent], *only: str) -> None:
    for n, a in fleet.items():
        if not only or n in only:
            a.beat_once()
            a.probe_once()


ME = Identity("core-a@test:1:first", "core-a", "test", 1)
OTHER = Identity("core-b@test:2:second", "core-b", "test", 2)


def lead(rds, me: Identity = ME) -> Leadership:
    """Make ``me`` the detector leader (taking the lease from whoever holds it: these tests play every process)."""
    claim = detector_leader.claim(rds, me, 5.0)
    if not claim.leading:
        rds.delete(keys.detector_leader())
        claim = detector_leader.claim(rds, me, 5.0)
    assert claim.leading
    return Leadership(me.id, me.node, claim.term, 5.0)


def sweep(rds, bp, cache, events, launched=None, me: Identity = ME, **kw):
    def launch(plans, trigger):
        launched.append((plans, trigger))
        return [f"rec-{p.service}" for p in plans]

    return run_sweep(rds, bp, lead(rds, me), cache=cache, pulse=events,
                     launch=launch if launched is not None else None, plan=plan_failovers,
                     controls=lambda c, b: (set(), False, {}), **kw)


def states(rds) -> dict[str, str]:
    return {n: json.loads(v)["state"] for n, v in rds.hgetall(keys.node_state()).items()}


def test_alive_fleet_states_and_mode_are_published(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    beat_all(fleet)
    res = sweep(rds, bp, cache, events)
    assert res.accepted == 3 and not res.rejected
    assert states(rds) == {"core-a": "alive", "core-b": "alive", "core-c": "alive"}
    mode = json.loads(rds.get(keys.mode()))
    assert mode["mode"] == "normal" and mode["shed_tiers"] == []
    assert len(events.of("detect.node_alive")) == 3
    again = sweep(rds, bp, cache, events)
    assert again.accepted == 0 and not again.outcome.transitions, "the same beats are not counted twice"


def test_forged_heartbeat_is_rejected_once_and_changes_nothing(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    before = rds.hget(keys.node_state(), "core-c")
    # a fresh timestamp: the forgery must be refused for its MAC, not for its age
    forged = heartbeats.Heartbeat(node="core-c", seq=10**15, ts=redis_now(rds), services={"ledger": {"healthy": True}})
    rds.hset(keys.heartbeats(), "core-c", heartbeats.encode(forged, b"attacker-key"))
    res = sweep(rds, bp, cache, events)
    assert res.rejected == {"core-c": "bad-signature"}
    assert rds.hget(keys.node_state(), "core-c") == before
    assert [e["node"] for e in events.of("detect.heartbeat_rejected")] == ["core-c"]
    sweep(rds, bp, cache, events)
    assert len(events.of("detect.heartbeat_rejected")) == 1, "the same forged blob is reported once"
    rds.hset(keys.heartbeats(), "core-c", '{"node": "core-c", "seq": 1}')
    assert sweep(rds, bp, cache, events).rejected == {"core-c": "unsigned"}
    rds.hset(keys.heartbeats(), "intruder", "v2.00.{}")
    assert sweep(rds, bp, cache, events).rejected["intruder"] == "unknown-node"


def test_replayed_heartbeat_is_rejected(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    old = rds.hget(keys.heartbeats(), "core-b")
    sweep(rds, bp, cache, events)
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    rds.hset(keys.heartbeats(), "core-b", old)
    res = sweep(rds, bp, cache, events)
    assert res.rejected == {"core-b": "replayed"}
    # even a sweeper in another process (empty cache) refuses it
    res = sweep(rds, bp, SweepCache(keyring=heartbeats.KeyRing(dict(KEYS))), Events())
    assert res.rejected == {"core-b": "replayed"}


def test_silent_node_dies_and_its_services_are_handed_to_failover(bp, rds, fleet, cache) -> None:
    events, launched = Events(), []
    beat_all(fleet)
    sweep(rds, bp, cache, events, launched)

    def dead_yet() -> bool:
        beat_all(fleet, "core-b", "core-c")
        sweep(rds, bp, cache, events, launched)
        return states(rds)["core-a"] == "dead"

    wait_for(dead_yet, timeout=10, interval=0.05, what="core-a to be declared dead")
    assert events.of("detect.node_suspect") and events.of("detect.node_dead")
    assert len(launched) == 1
    plans, trigger = launched[0]
    assert [p.service for p in plans] == ["ledger"] and plans[0].candidate == "core-b"
    assert trigger["dead"] == ["core-a"] and trigger["last_seen"]["core-a"] < trigger["detected_at"]
    mode = json.loads(rds.get(keys.mode()))
    assert mode["mode"] == "critical" and "ledger" in mode["unhealthy"]
    for _ in range(3):
        beat_all(fleet, "core-b", "core-c")
        sweep(rds, bp, cache, events, launched)
    assert len(launched) == 1, "one hand-over per death"


def test_only_the_lease_holder_writes_and_its_sweep_renews_the_lease(bp, rds, fleet, cache) -> None:
    beat_all(fleet)
    lead(rds, OTHER)
    events = Events()
    res = run_sweep(rds, bp, Leadership(ME.id, ME.node, 1, 5.0), cache=cache, pulse=events)
    assert res.skipped == LOST_LEASE and res.outcome is None
    assert rds.hlen(keys.node_state()) == 0 and not rds.exists(keys.detector_meta()) and events.items == []
    assert detector_leader.read(rds).id == OTHER.id, "a sweep never takes the lease"
    rds.pexpire(keys.detector_leader(), 300)
    res = run_sweep(rds, bp, lead(rds, OTHER), cache=cache)
    assert res.skipped is None and rds.pttl(keys.detector_leader()) > 1000, "the sweep's write renewed the lease"


def test_each_sweep_is_journaled_with_its_gap(bp, rds, fleet, cache) -> None:
    beat_all(fleet)
    first = sweep(rds, bp, cache, Events())
    second = sweep(rds, bp, cache, Events())
    marks = detection.sweeps(rds)
    assert [m.at for m in marks] == [first.now, second.now]
    assert marks[0].gap is None and abs(marks[1].gap - (second.now - first.now)) < 1e-5
    assert {m.node for m in marks} == {"core-a"} and marks[0].term >= 1


def test_tilt_after_the_sweepers_own_pause(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    meta = json.loads(rds.get(keys.detector_meta()))
    meta["last_sweep"] -= 60
    rds.set(keys.detector_meta(), json.dumps(meta))
    res = sweep(rds, bp, cache, events, view=detector.View(own_gap=60.0))
    assert res.outcome.tilt and events.of("detect.tilt")[0]["data"]["own_gap"] == 60.0
    assert events.of("detect.grace_started")[0]["data"]["reason"] == "paused"
    assert res.outcome.meta.grace_until > res.now


def test_storm_raises_an_incident_and_launches_nothing(bp, rds, fleet, cache) -> None:
    events, launched = Events(), []
    beat_all(fleet)
    sweep(rds, bp, cache, events, launched)
    silent_since = redis_now(rds)  # core-a and core-b beat last before this (not in the same instant)

    # No sweep while one of them may be past its dead time and the other not: on a loaded machine the two
    # beats land far enough apart for a sweep in between to see one death, which is a real single failure.
    # The pause stays far below tilt_gap, so the detector does not take it for its own stall.
    def both_past_dead_time() -> bool:
        beat_all(fleet, "core-c")
        return redis_now(rds) > silent_since + 0.5 + 0.2  # dead_after + margin

    wait_for(both_past_dead_time, timeout=10, interval=0.05, what="core-a and core-b past their dead time")

    def storm() -> bool:
        beat_all(fleet, "core-c")
        sweep(rds, bp, cache, events, launched)
        return bool(events.of("detect.storm"))

    wait_for(storm, timeout=10, interval=0.05, what="the storm brake")
    assert launched == []
    incidents = rds.hgetall(keys.incidents())
    assert len(incidents) == 1 and json.loads(next(iter(incidents.values())))["kind"] == "failover-storm"

    def cleared() -> bool:
        beat_all(fleet)
        sweep(rds, bp, cache, events, launched)
        return bool(events.of("detect.storm_cleared"))

    wait_for(cleared, timeout=10, interval=0.05, what="the storm to clear")
    assert rds.hlen(keys.incidents()) == 0


def test_leases_decide_service_placement_in_mode(bp, rds, fleet, cache) -> None:
    beat_all(fleet)
    beat_all(fleet)
    leases.release(rds, "reports", "core-b", 1)
    fleet["core-b"].held.pop("reports", None)
    rds.delete(keys.lease("reports"))
    res = sweep(rds, bp, cache, Events())
    assert res.mode.mode == "degraded" and res.mode.unhealthy == ["reports"]
    assert res.mode.services["reports"].reason == "no primary holds the lease"


def test_a_leader_that_stalled_past_its_lease_writes_and_launches_nothing(bp, rds, fleet, cache,
                                                                          monkeypatch) -> None:
    from continuity.detect import sweep as sweep_mod

    beat_all(fleet)
    real = sweep_mod.detector.sweep

    def stalled(*a: Any, **k: Any):
        lead(rds, OTHER)  # our lease lapsed while we stood still, and a standby took it
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod.detector, "sweep", stalled)
    events = Events()
    res = sweep(rds, bp, cache, events, [])
    assert res.skipped == LOST_LEASE
    assert rds.hlen(keys.node_state()) == 0 and not rds.exists(keys.mode()) and not detection.sweeps(rds)
    assert events.items == []


def test_a_standby_taking_over_from_a_stalled_leader_is_neither_tilted_nor_in_grace(bp, rds, fleet, cache) -> None:
    """The old leader stood still holding the lease; the standby watched Redis answer all along: its evidence
    is as good as the old leader's, so no TILT (not its pause) and no grace (no gap in what Redis recorded)."""
    beat_all(fleet)
    sweep(rds, bp, cache, Events())
    meta = json.loads(rds.get(keys.detector_meta()))
    meta["last_sweep"] -= 5
    rds.set(keys.detector_meta(), json.dumps(meta))
    beat_all(fleet)
    res = sweep(rds, bp, SweepCache(keyring=heartbeats.KeyRing(dict(KEYS))), Events(), me=OTHER,
                view=detector.View(new_term=True, watched=600.0))
    assert not res.outcome.tilt and not res.outcome.grace


def test_a_value_with_newlines_cannot_shift_the_snapshot(bp, rds, fleet, cache) -> None:
    beat_all(fleet)
    rds.hset(keys.heartbeats(), "core-c", "v3.1.00.ff.core-c|1|0|x|{}\ncore-a\nv3.ff.forged")
    rds.hset(keys.heartbeats(), "odd\nname", "whatever")
    res = sweep(rds, bp, cache, Events())
    assert res.rejected["core-c"] == "bad-signature"
    assert "core-a" not in res.rejected and res.outcome.states["core-a"].state == "alive"
    assert res.rejected.get("odd name") == "unknown-node"


def test_a_second_process_picks_up_where_the_first_left(bp, rds, fleet, cache) -> None:
    beat_all(fleet)
    sweep(rds, bp, cache, Events())
    other = SweepCache(keyring=heartbeats.KeyRing(dict(KEYS)))
    res = sweep(rds, bp, other, Events(), me=OTHER)
    assert not res.outcome.transitions and set(other.states) == {"core-a", "core-b", "core-c"}
    beat_all(fleet)
    res = sweep(rds, bp, cache, Events())  # the first process's memory is stale now: it re-reads
    assert res.accepted == 3 and not res.outcome.transitions


def _submit(rds, node: str, raw: str) -> None:
    """Write a beat the way an agent does (the beat script: hash, arrival stamp, pending entry)."""
    from continuity.state.heartbeats import BEAT, beat_keys

    BEAT.load(rds)(keys=beat_keys(), args=[node, raw, 1000])


def test_forged_beat_through_the_beat_script_is_rejected_and_logged(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    before = rds.hget(keys.node_state(), "core-c")
    forged = heartbeats.Heartbeat(node="core-c", seq=10**15, ts=float(rds.time()[0]), services={})
    _submit(rds, "core-c", heartbeats.encode(forged, b"attacker-key"))
    res = sweep(rds, bp, cache, events)
    assert res.rejected == {"core-c": "bad-signature"} and res.accepted == 0
    assert rds.hget(keys.node_state(), "core-c") == before
    assert [e["node"] for e in events.of("detect.heartbeat_rejected")] == ["core-c"]


def _hour_old_beat(rds, node: str) -> str:
    """A beat signed with the node's real key and a new sequence, but stamped an hour before it is written."""
    old = heartbeats.Heartbeat(node=node, seq=10**15, ts=redis_now(rds) - 3600, services={})
    return heartbeats.encode(old, KEYS[node])


def test_a_validly_signed_beat_an_hour_old_is_refused_by_the_sweep(bp, rds, fleet, cache) -> None:
    """The batch path's freshness window: a captured-and-held (or clock-skewed) beat must not revive a node.

    core-c has not beaten yet, so nothing but the window stands between its hour-old beat (a chain and a
    statement of its own, validly signed) and the detector: no newer statement or slot to call it a replay by.
    """
    events = Events()
    beat_all(fleet, "core-a", "core-b")
    sweep(rds, bp, cache, events)
    _submit(rds, "core-c", _hour_old_beat(rds, "core-c"))
    res = sweep(rds, bp, cache, events)
    assert res.rejected == {"core-c": "stale"} and res.accepted == 0
    assert "core-c" not in cache.states or cache.states["core-c"].last_seq is None, "a stale beat sets nothing"
    assert events.of("detect.heartbeat_rejected")[-1]["data"]["reason"] == "stale"


def test_a_validly_signed_beat_an_hour_old_is_refused_by_an_ingest_slice(bp, rds, fleet, cache) -> None:
    beat_all(fleet, "core-a", "core-b")
    sweep(rds, bp, cache, Events())
    _submit(rds, "core-c", _hour_old_beat(rds, "core-c"))
    res = run_ingest(rds, bp, cache)
    assert res.rejected == {"core-c": "stale"} and res.accepted == 0
    assert "core-c" not in cache.ingested
    assert sweep(rds, bp, cache, Events()).rejected["core-c"] == "stale"


def test_identical_bytes_submitted_again_are_a_replay(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    raw = rds.hget(keys.heartbeats(), "core-b")
    last = cache.states["core-b"].last_arrival
    _submit(rds, "core-b", raw)  # a captured beat re-sent: it would move core-b's arrival forward if trusted
    res = sweep(rds, bp, cache, events)
    assert res.rejected == {"core-b": "replayed"}
    assert cache.states["core-b"].last_arrival == last, "a replay does not refresh the node"
    assert events.of("detect.heartbeat_rejected")[-1]["data"]["reason"] == "replayed"


def test_beats_that_missed_the_pending_hash_still_count(bp, rds, fleet, cache) -> None:
    """An agent of an older version (or a lost pending entry) writes only the heartbeat hash: no false suspicion."""
    beat_all(fleet)
    sweep(rds, bp, cache, Events())
    beat_all(fleet)
    rds.delete(keys.heartbeats_pending())
    seq_before = cache.states["core-a"].last_seq

    def fresh() -> bool:
        sweep(rds, bp, cache, Events())
        return cache.states["core-a"].last_seq != seq_before

    wait_for(fresh, timeout=5, interval=0.05, what="the beat to be read from the heartbeat hash")
    assert all(st.state == "alive" for st in cache.states.values())


def test_a_newline_in_the_pending_batch_falls_back_to_a_full_read(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    beat_all(fleet)
    rds.hset(keys.heartbeats_pending(), "core-c", "1.0 v2.00.x\ncore-a\n1.0 v2.ff.forged")
    res = sweep(rds, bp, cache, events)
    assert res.accepted == 3 and set(res.rejected) <= {"core-c"}
    assert all(st.state == "alive" for st in res.outcome.states.values())


# --- a live node gave its service up (local recovery exhausted): one failover of that service ---------
def _unhealthy(*a: Any) -> ProbeResult:
    return ProbeResult(False, "connection refused")


def _fail_ledger(bp, rds, fleet) -> Agent:
    """core-a's agent with a probe that always fails: the ledger has no start hook, so it is given up."""
    sick = Agent(bp, "core-a", rds, KEYS["core-a"], run_hook=lambda *a, **k: None, prober=_unhealthy)
    fleet["core-a"] = sick
    beat_all(fleet)
    for _ in range(bp.policy.restart_after_failures):
        sick.beat_once()
        sick.tend()
        sick.wait_idle()  # the give-up (stop hook, lease release) runs on the agent's hook lane
    return sick


def test_a_given_up_service_fails_over_alone_and_mode_shows_the_gap(bp, rds, fleet, cache) -> None:
    events, launched = Events(), []
    beat_all(fleet)
    beat_all(fleet)
    sweep(rds, bp, cache, events, launched)
    assert launched == []
    sick = _fail_ledger(bp, rds, fleet)
    assert leases.read(rds, "ledger") is None and rds.get(keys.service_failed("ledger"))
    beat_all(fleet)
    res = sweep(rds, bp, cache, events, launched)
    ((plans, trigger),) = launched
    (plan,) = plans
    assert plan.service == "ledger" and plan.old_primary == "core-a" and plan.candidate == "core-b"
    assert trigger["reason"] == "service-failed" and trigger["failed_on"] == "core-a"
    assert "no start hook" in trigger["detail"] and trigger["last_seen"]["core-a"] <= trigger["detected_at"]
    assert res.launched == ["rec-ledger"]
    # every node is alive: this is not a node failover, and the mode says the ledger has no primary
    assert json.loads(rds.hget(keys.node_state(), "core-a"))["state"] == "alive"
    mode = json.loads(rds.get(keys.mode()))
    assert mode["mode"] == "critical" and mode["unhealthy"] == ["ledger"]
    assert sick.held == {}, "core-a does not take it back"


@pytest.mark.parametrize("forge", ["unsigned", "signed-by-another-node", "edited", "copied-to-another-service"])
def test_a_forged_service_failed_marker_launches_no_failover(bp, rds, fleet, cache, forge) -> None:
    """Issue 11: `SET continuity:service-failed:<svc>` by anyone with Redis access used to force a failover.
    Only a marker signed by the node it names counts; any other is reported once and changes nothing."""
    events, launched = Events(), []
    beat_all(fleet)
    sweep(rds, bp, cache, events, launched)
    lease = leases.read(rds, "ledger")
    claim = {"node": lease.node, "epoch": lease.epoch, "service": "ledger", "at": 1.0, "since": 1.0,
             "reason": "forged", "restarts": 0}
    marker = {
        "unsigned": claim,
        "signed-by-another-node": heartbeats.sign_claim(KEYS["core-b"], claim),
        "edited": {**heartbeats.sign_claim(KEYS[lease.node], claim), "reason": "edited after signing"},
        "copied-to-another-service": heartbeats.sign_claim(KEYS[lease.node], {**claim, "service": "other"}),
    }[forge]
    rds.set(keys.service_failed("ledger"), json.dumps(marker))
    for _ in range(3):
        beat_all(fleet)
        sweep(rds, bp, cache, events, launched)
    assert launched == [], "no failover on a marker the node did not sign"
    (ev,) = events.of("detect.claim_rejected")
    assert ev["service"] == "ledger" and ev["data"]["claimed_node"] == lease.node
    assert ev["data"]["reason"] == {"unsigned": "unsigned", "copied-to-another-service": "other-service"}.get(
        forge, "bad-signature")
    assert leases.read(rds, "ledger").node == lease.node, "the primary keeps its role"


def test_the_marker_is_ignored_once_a_newer_epoch_serves_and_is_cleared(bp, rds, fleet, cache) -> None:
    events, launched = Events(), []
    beat_all(fleet)
    _fail_ledger(bp, rds, fleet)
    rds.set(keys.epoch("ledger"), 2)
    assert leases.acquire(rds, "ledger", "core-b", 2, 5.0)
    beat_all(fleet)
    sweep(rds, bp, cache, events, launched)
    assert launched == [] and rds.get(keys.service_failed("ledger")) is None


def test_clear_failed_never_drops_a_marker_of_the_same_or_a_newer_epoch(rds) -> None:
    assert leases.give_up(rds, "ledger", "core-a", 1, {"reason": "x"}) is False, "not held: no marker"
    assert leases.acquire(rds, "ledger", "core-a", 3, 5.0)
    assert leases.give_up(rds, "ledger", "core-a", 3, {"reason": "x"})
    assert not leases.clear_failed(rds, "ledger", 3)
    assert leases.clear_failed(rds, "ledger", 4)
    assert rds.get(keys.service_failed("ledger")) is None


# --- ingest slices: verified between sweeps, decided on by the next sweep ---------------------------
def test_ingest_slices_verify_beats_and_the_sweep_decides_on_them(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    assert run_ingest(rds, bp, cache).skipped, "no ingest before this process has swept"
    sweep(rds, bp, cache, events)
    seq_before = cache.states["core-a"].last_seq
    beat_all(fleet)
    res = run_ingest(rds, bp, cache)
    assert res.skipped is None and res.accepted == 3 and not res.rejected
    assert rds.hlen(keys.heartbeats_pending()) == 0, "the slice drained the pending hash"
    out = sweep(rds, bp, cache, events)
    assert out.accepted == 3 and not out.rejected
    assert cache.states["core-a"].last_seq > seq_before and not cache.ingested


def test_a_forged_beat_in_an_ingest_slice_is_rejected_and_logged(bp, rds, fleet, cache, caplog) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    before = rds.hget(keys.node_state(), "core-c")
    forged = heartbeats.Heartbeat(node="core-c", seq=10**15, ts=float(rds.time()[0]), services={})
    _submit(rds, "core-c", heartbeats.encode(forged, b"attacker-key"))
    res = run_ingest(rds, bp, cache)
    assert res.rejected == {"core-c": "bad-signature"} and res.accepted == 0
    with caplog.at_level("WARNING", logger="continuity.sweep"):
        out = sweep(rds, bp, cache, events)
    assert out.rejected["core-c"] == "bad-signature"
    assert rds.hget(keys.node_state(), "core-c") == before
    assert [e["node"] for e in events.of("detect.heartbeat_rejected")] == ["core-c"]
    assert "rejected heartbeat stored as 'core-c'" in caplog.text


def test_a_replay_in_an_ingest_slice_is_rejected(bp, rds, fleet, cache) -> None:
    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    beat_all(fleet, "core-b")
    raw = rds.hget(keys.heartbeats(), "core-b")
    assert run_ingest(rds, bp, cache).accepted == 1
    _submit(rds, "core-b", raw)  # the beat just ingested, captured and re-sent before the sweep
    assert run_ingest(rds, bp, cache).rejected == {"core-b": "replayed"}
    out = sweep(rds, bp, cache, events)
    assert out.rejected == {"core-b": "replayed"}
    assert events.of("detect.heartbeat_rejected")[-1]["data"]["reason"] == "replayed"


def test_ingest_leaves_the_pending_hash_alone_when_another_process_swept(bp, rds, fleet, cache) -> None:
    beat_all(fleet)
    sweep(rds, bp, cache, Events())
    other = SweepCache(keyring=heartbeats.KeyRing(dict(KEYS)))
    sweep(rds, bp, other, Events(), me=OTHER)
    beat_all(fleet)
    assert run_ingest(rds, bp, cache).skipped, "stale memory must not swallow beats"
    assert rds.hlen(keys.heartbeats_pending()) == 3
    assert sweep(rds, bp, other, Events(), me=OTHER).accepted == 3


def test_a_silent_node_is_suspected_and_dies_with_ingest_running(bp, rds, fleet, cache) -> None:
    """Beats verified by slices keep the others alive; the node whose beats stop goes the usual way."""
    events, launched = Events(), []
    beat_all(fleet)
    sweep(rds, bp, cache, events, launched)

    def core_a_dead() -> bool:
        beat_all(fleet, "core-b", "core-c")
        run_ingest(rds, bp, cache)
        sweep(rds, bp, cache, events, launched)
        return states(rds)["core-a"] == "dead"

    wait_for(core_a_dead, timeout=10, interval=0.05, what="core-a to be declared dead")
    assert [e["node"] for e in events.of("detect.node_suspect")] == ["core-a"]
    assert states(rds)["core-b"] == states(rds)["core-c"] == "alive"
    assert launched and launched[0][1]["dead"] == ["core-a"]
    # the same rule as without ingest: suspect past suspect_after of silence, dead past dead_after (the event
    # reports the silence rounded to the millisecond, so 0.3004 s past a 0.3 s limit reads 0.3)
    assert events.of("detect.node_suspect")[0]["data"]["silence"] >= bp.policy.suspect_after
    assert events.of("detect.node_dead")[0]["data"]["silence"] >= bp.policy.dead_after


def test_the_planner_is_told_who_lacks_committed_records(rds, cache) -> None:
    """The sweep reads the role's committed position and the standbys' published positions, so a standby that
    lacks acknowledged records (core-b, first by placement) is not chosen while core-c holds them all."""
    from continuity.state import replication as replication_state

    bp3 = parse_blueprint(parse_text(FLEET.replace("standbys: [core-b]}}\n      reports",
                                                   "standbys: [core-b, core-c]}}\n      reports"), "sweep.yml"))

    def noop(*a: Any, **k: Any) -> None:
        return None

    fleet3 = {n: Agent(bp3, n, rds, KEYS[n], run_hook=noop, prober=lambda *a: ProbeResult(True, "ok"))
              for n in KEYS}
    replication_state.advance_committed(rds, replication_state.Committed(
        "ledger", "ledger.jsonl", 1, 40, 400, 40, None, "core-a", 1.0))
    replication_state.publish_applied(rds, [
        replication_state.Applied("ledger", "ledger.jsonl", "core-b", 300, 30, 30, None, 1, "core-a", 1.0),
        replication_state.Applied("ledger", "ledger.jsonl", "core-c", 400, 40, 40, None, 1, "core-a", 1.0)])
    events, launched = Events(), []
    beat_all(fleet3)
    sweep(rds, bp3, cache, events, launched)

    def dead_yet() -> bool:
        beat_all(fleet3, "core-b", "core-c")
        sweep(rds, bp3, cache, events, launched)
        return states(rds)["core-a"] == "dead"

    wait_for(dead_yet, timeout=10, interval=0.05, what="core-a to be declared dead")
    (plans, _), = launched
    (ledger,) = [p for p in plans if p.service == "ledger"]
    assert (ledger.candidate, ledger.fallbacks) == ("core-c", ("core-b",))


def test_no_ingest_slice_starts_just_before_a_sweep(bp, rds, fleet, cache) -> None:
    """A slice holds the cache lock: one started just before the sweep is due makes the sweep wait for it (the
    sweep's p99 at 10,000 nodes). With the sweep due any moment the loop leaves the pending beats to the sweep;
    with the sweep far off it drains them."""
    from continuity.detect.sweep import IngestLoop

    events = Events()
    beat_all(fleet)
    sweep(rds, bp, cache, events)
    beat_all(fleet)
    due = [0.001]
    loop = IngestLoop(rds, lambda: bp, cache, interval=0.01, sweep_due_in=lambda: due[0]).start()
    try:
        deadline = time.monotonic() + 0.5  # 50 slice ticks: none may drain
        while time.monotonic() < deadline:
            assert rds.hlen(keys.heartbeats_pending()) == 3 and loop.drained == 0
        due[0] = 10.0
        wait_for(lambda: loop.drained == 3, timeout=10, what="a slice once the sweep is far off")
    finally:
        loop.stop()
