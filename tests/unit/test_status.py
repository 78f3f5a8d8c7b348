"""`continuity status` folds one Redis read into a report; checked here without Redis."""

from __future__ import annotations

import json

from continuity.blueprint import load_blueprint
from continuity.status import RedisSnapshot, build_report
from tests.helpers import ROOT


def test_report_marks_seen_nodes_and_routes() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    snap = RedisSnapshot(
        registry={"core-a": "{}", "core-b": "{}"},
        seen={"core-a": str(now - 2), "core-b": str(now - 120)},
        detector={}, queue_depth={"core-a": 0, "core-b": 4, "sat-1": 7},
        mode=json.dumps({"mode": "degraded", "shed_tiers": [3]}),
        routes={"ledger": json.dumps({"node": "core-b", "epoch": 3})},
        epochs={"ledger": "3"}, leases={},
    )
    report = build_report(bp, snap, now=now)
    nodes = {n["id"]: n for n in report["nodes"]}
    assert nodes["core-a"]["seen"] and nodes["core-a"]["state"] == "seen"
    assert not nodes["core-b"]["seen"] and nodes["core-b"]["state"] == "stale"
    assert nodes["sat-1"]["state"] == "never-seen" and nodes["sat-1"]["queue_depth"] == 7
    services = {s["id"]: s for s in report["services"]}
    assert services["ledger"]["primary"] == "core-b" and services["ledger"]["epoch"] == 3
    assert services["keystore"]["primary"] == "core-b" and services["keystore"]["epoch"] == 0
    assert report["mode"]["mode"] == "degraded"
    assert [s["id"] for s in report["services"]].index("keystore") < [s["id"] for s in
                                                                       report["services"]].index("ledger")


def _snap_with_detector(now: float, last_sweep: float | None) -> RedisSnapshot:
    meta = None if last_sweep is None else json.dumps({"last_sweep": last_sweep})
    return RedisSnapshot(
        registry={}, seen={"core-a": str(now - 0.05)},
        detector={"core-a": json.dumps({"state": "alive"}), "core-b": json.dumps({"state": "dead"})},
        queue_depth={}, mode=json.dumps({"mode": "normal"}), routes={}, epochs={}, leases={},
        detector_meta=meta)


def test_states_from_a_detector_that_stopped_sweeping_are_not_shown_as_current() -> None:
    """A detector that stopped leaves its last classifications in Redis: "dead" beside "seen 50 ms ago" for as long
    as nobody sweeps. Past its freshness window status says the states are stale instead of reporting them."""
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    fresh = build_report(bp, _snap_with_detector(now, now - 1.0), now=now)
    assert {n["id"]: n["state"] for n in fresh["nodes"]}["core-b"] == "dead"
    assert fresh["detector"]["stale"] is False and "stale" not in fresh["mode"]
    old = build_report(bp, _snap_with_detector(now, now - 120.0), now=now)
    states = {n["id"]: n["state"] for n in old["nodes"]}
    assert states["core-a"].startswith("unknown") and states["core-b"].startswith("unknown")
    assert old["detector"] == {"last_sweep": now - 120.0, "age": 120.0, "stale_after": old["detector"]["stale_after"],
                               "stale": True, "leader": None, "grace": None, "tilt_until": None}
    assert old["mode"]["stale"] is True
    never = build_report(bp, _snap_with_detector(now, None), now=now)
    assert never["detector"]["stale"] is True


def _snap(now: float, **kw) -> RedisSnapshot:
    base = {"registry": {}, "seen": {}, "detector": {}, "queue_depth": {}, "mode": json.dumps({"mode": "normal"}),
            "routes": {}, "epochs": {}, "leases": {}, "detector_meta": json.dumps({"last_sweep": now - 0.5})}
    return RedisSnapshot(**{**base, **kw})


def test_dead_beside_a_fresh_heartbeat_says_why() -> None:
    """A node back from the dead beats again but stays dead until `recover_beats` good beats: "recovering"."""
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    det = {"core-a": json.dumps({"state": "dead", "since": now - 10, "last_arrival": now - 0.05, "good_beats": 2}),
           "core-b": json.dumps({"state": "dead", "since": now - 10, "last_arrival": now - 12}),
           "sat-1": json.dumps({"state": "dead", "since": now - 10, "last_arrival": now - 12})}
    seen = {"core-a": str(now - 0.05), "core-b": str(now - 0.05), "sat-1": str(now - 12)}
    states = {n["id"]: n["state"] for n in build_report(bp, _snap(now, detector=det, seen=seen), now=now)["nodes"]}
    assert states == {"core-a": f"dead, recovering (2/{bp.policy.recover_beats} beats)",
                      "core-b": "dead, beats not accepted",  # reaches Redis, rejected by the detector
                      "core-c": "never-seen",  # no heartbeat, no verdict: not yet part of the story
                      "sat-1": "dead"}  # silent: plain dead


def test_standbys_are_where_the_service_does_not_run_now() -> None:
    """After a failover the declared standby is the primary: it is not listed as a standby; the old primary is."""
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    moved = _snap(now, routes={"ledger": json.dumps({"node": "core-b", "epoch": 2})}, epochs={"ledger": "2"})
    report = build_report(bp, moved, now=now)
    ledger = next(s for s in report["services"] if s["id"] == "ledger")
    assert ledger["primary"] == "core-b" and ledger["standbys"] == ["core-a", "core-c"]
    assert ledger["declared_standbys"] == ["core-b", "core-c"]
    nodes = {n["id"]: n for n in report["nodes"]}
    assert "ledger" in nodes["core-b"]["primary_for"] and "ledger" not in nodes["core-a"]["primary_for"]


def test_running_failovers_and_drill() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    meta = json.dumps({"service": "ledger", "kind": "failover", "old_primary": "core-a", "candidate": "core-b",
                       "started": now - 4.5})
    snap = _snap(now, running_failovers={"r1": meta}, drill_active="d1|host|123",
                 incidents={"failover-ledger": "{}"})
    assert build_report(bp, snap, now=now)["running"] == {
        "failovers": [{"id": "r1", "service": "ledger", "kind": "failover", "from": "core-a", "to": "core-b",
                       "age": 4.5}], "drill": "d1", "incidents": ["failover-ledger"]}


def test_status_names_the_detector_leader_and_a_running_grace() -> None:
    from dataclasses import replace

    from continuity.cli.status import detector_line

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    snap = replace(_snap_with_detector(now, now - 0.4),
                   detector_meta=json.dumps({"last_sweep": now - 0.4, "grace_until": now + 3,
                                             "grace_reason": "redis-unreachable"}),
                   detector_leader={"id": "core-b@h:42:ab", "node": "core-b", "host": "h", "pid": "42",
                                    "since": str(now - 60), "term": "7"}, detector_leader_pttl=1200)
    det = build_report(bp, snap, now=now)["detector"]
    assert det["leader"] == {"id": "core-b@h:42:ab", "node": "core-b", "host": "h", "pid": 42, "since": now - 60,
                             "term": 7, "ttl": 1.2}
    assert det["grace"] == {"until": now + 3, "reason": "redis-unreachable"} and det["tilt_until"] is None
    line = detector_line(det)
    assert line.startswith("detector: led by core-b (pid 42 on h) since ") and "term 7" in line
    assert "grace after redis-unreachable" in line
    nobody = build_report(bp, replace(snap, detector_leader={}, detector_leader_pttl=-2), now=now)["detector"]
    assert nobody["leader"] is None and "no leader" in detector_line(nobody)


def test_a_redis_refusing_writes_is_reported_not_hidden_behind_normal() -> None:
    """At maxmemory (noeviction) every write fails — beat dies, heartbeats stop — while the keys still read
    "normal": the server's own INFO is what says so."""
    from continuity.status import redis_view

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    now = 1_800_000_000.0
    full = {"used_memory": 1_100_000, "maxmemory": 1_048_576, "maxmemory_policy": "noeviction", "role": "master",
            "errorstat_OOM": {"count": 42}, "aof_last_write_status": "ok", "rdb_last_bgsave_status": "ok"}
    snap = _snap_with_detector(now, now - 1.0)
    report = build_report(bp, RedisSnapshot(**{**snap.__dict__, "server": full}), now=now)
    assert report["mode"]["mode"] == "normal"
    (warning,) = report["redis"]["warnings"]
    assert "maxmemory" in warning and "refused" in warning and "42" in warning
    assert report["redis"]["oom_refused"] == 42
    assert redis_view({**full, "used_memory": 1_000_000})["warnings"][0].startswith("Redis memory at 95%")
    healthy = {"used_memory": 1000, "maxmemory": 0, "role": "master", "aof_last_write_status": "ok"}
    assert redis_view(healthy)["warnings"] == []
    broken = redis_view({**healthy, "aof_last_write_status": "err", "rdb_last_bgsave_status": "err", "loading": 1,
                         "role": "slave"})["warnings"]
    assert len(broken) == 4
