"""Detection with real processes: worker agents beat, the control workers' detector loop sweeps (one leads).

Failover itself is paused fleet-wide here (maintenance switch): these tests are
about what the detector sees and records; the failover chain has its own tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
from pathlib import Path

import pytest

from continuity.pulse import read_events
from continuity.state import heartbeats, keys
from tests.helpers import continuity_cmd, operator_pause, wait_for

pytestmark = pytest.mark.slow

MARK = ["{python}", "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"]


def _window(now: dt.datetime, start_h: float, end_h: float) -> str:
    a = (now + dt.timedelta(hours=start_h)).strftime("%H:%M")
    b = (now + dt.timedelta(hours=end_h)).strftime("%H:%M")
    return f'{{start: "{a}", end: "{b}"}}'


def write_fleet(tmp: Path, sat_in_contact: bool = True) -> Path:
    now = dt.datetime.now(dt.UTC)
    window = _window(now, -1, 1) if sat_in_contact else _window(now, 2, 3)
    marks = tmp / "marks"
    marks.mkdir(exist_ok=True)
    start = json.dumps(MARK + [f"{marks}/{{service}}.{{node}}", "started {epoch}"])
    stop = json.dumps(MARK + [f"{marks}/{{service}}.{{node}}", "stopped {epoch}"])
    text = f"""\
version: 1
fleet: agent-it
policy: {{heartbeat_interval: 1s, lease_ttl: 3s, lease_margin: 1s, suspect_after: 1.5s, dead_after: 2.5s,
          storm_fraction: 0.7, tilt_gap: 3s, tilt_grace: 5s}}
nodes:
  core-a: {{kind: core}}
  core-b: {{kind: core}}
  sat-1:
    kind: satellite
    contact: [{window}]
domains:
  d:
    rto: 10s
    rpo: 5s
    services:
      ledger:
        tier: 0
        placement: {{primary: core-a, standbys: [core-b]}}
        hooks: {{start: {start}, stop: {stop}}}
      telemetry: {{tier: 3, placement: {{primary: sat-1}}}}
"""
    path = tmp / "blueprint.yml"
    path.write_text(text)
    return path


@pytest.fixture
def fleet_env(tmp_path, worker_env, rds, state_dir):
    env = dict(worker_env, CONTINUITY_BLUEPRINT=str(write_fleet(tmp_path)), CONTINUITY_BEAT_MAX_LOOP="1",
               CONTINUITY_BEAT_LOCK_TIMEOUT="5")
    rds.set(keys.failover_pause(), operator_pause(state_dir, reason="detector-only test"))
    return env


def states(rds) -> dict[str, str]:
    return {n: json.loads(v)["state"] for n, v in rds.hgetall(keys.node_state()).items()}


def kinds(env: dict[str, str], kind: str) -> list[dict]:
    return [e for e in read_events(Path(env["CONTINUITY_PULSE_FILE"])) if e["kind"] == "continuity_layer." + kind]


def test_worker_agent_writes_signed_heartbeats_and_bootstraps_its_roles(start_worker, fleet_env, rds, tmp_path,
                                                                         monkeypatch) -> None:
    start_worker("core-a", env=fleet_env)
    wait_for(lambda: rds.hexists(keys.heartbeats(), "core-a"), timeout=20, what="a heartbeat from core-a")
    monkeypatch.setenv("CONTINUITY_STATE", fleet_env["CONTINUITY_STATE"])
    key_path = heartbeats.heartbeat_key_file("core-a")
    assert key_path.stat().st_mode & 0o077 == 0, "the key file is private to the node"
    raw = rds.hget(keys.heartbeats(), "core-a")
    secret = heartbeats.ensure_heartbeat_key("core-a").private.private_bytes_raw()
    stored = json.dumps(rds.hgetall(keys.heartbeats()))
    assert secret.hex() not in stored and base64.b64encode(secret).decode() not in stored, \
        "the key never reaches Redis"
    hb = heartbeats.verify(raw, "core-a", heartbeats.KeyRing(), last_seq=None,
                          arrival=float(rds.hget(keys.heartbeat_arrivals(), "core-a")), max_age=30)
    assert hb.node == "core-a"
    # the declared primary took epoch 1 and ran its start hook; the lease keeps being renewed
    wait_for(lambda: (tmp_path / "marks" / "ledger.core-a").exists(), timeout=10, what="ledger start hook")
    assert (tmp_path / "marks" / "ledger.core-a").read_text() == "started 1"
    lease = json.loads(rds.get(keys.lease("ledger")))
    assert lease["node"] == "core-a" and lease["epoch"] == 1
    seq = hb.seq
    wait_for(lambda: heartbeats.verify(rds.hget(keys.heartbeats(), "core-a"), "core-a", heartbeats.KeyRing(),
                                      last_seq=seq, arrival=None, max_age=30), timeout=10, what="a newer beat")
    wait_for(lambda: rds.pttl(keys.lease("ledger")) > 2000, timeout=10, what="lease renewal")
    assert kinds(fleet_env, "detect.role_bootstrapped")


def test_stopped_worker_goes_suspect_then_dead_and_self_demotes_when_it_wakes(spawn, start_worker, fleet_env, rds,
                                                                              tmp_path) -> None:
    core_a = start_worker("core-a", env=fleet_env)
    start_worker("core-b", env=fleet_env)
    spawn(continuity_cmd("beat"), fleet_env, "beat")
    wait_for(lambda: states(rds).get("core-a") == "alive" and states(rds).get("core-b") == "alive", timeout=40,
             what="both cores alive in the detector")
    wait_for(lambda: (tmp_path / "marks" / "ledger.core-a").exists(), timeout=10, what="ledger started")
    core_a.signal(signal.SIGSTOP)
    try:
        seen: set[str] = set()

        def dead() -> bool:
            seen.add(states(rds).get("core-a", "?"))
            return "dead" in seen

        wait_for(dead, timeout=30, interval=0.1, what="core-a declared dead")
        # (whether a once-a-second sweep lands inside the 1 s suspect band, between suspect_after and
        # dead_after, is sampling; the alive -> suspect -> dead ladder is checked with a fake clock in
        # tests/unit/test_detector.py)
    finally:
        core_a.signal(signal.SIGCONT)
    dead_events = wait_for(lambda: [e for e in kinds(fleet_env, "detect.node_dead") if e["node"] == "core-a"],
                           timeout=10, what="the node_dead event")
    assert len(dead_events) == 1 and dead_events[0]["data"]["silence"] > 2.5
    # woken up: it must first stop acting as primary (its lease ran out while it slept) ...
    wait_for(lambda: kinds(fleet_env, "failover.self_demoted"), timeout=20, what="core-a self-demoting")
    demoted = kinds(fleet_env, "failover.self_demoted")[0]
    assert demoted["service"] == "ledger" and demoted["node"] == "core-a"
    # ... then come back as alive only after several good beats; nobody else took the role (failover
    # paused), so it reclaims it with the same epoch
    wait_for(lambda: states(rds).get("core-a") == "alive", timeout=30, what="core-a alive again")
    wait_for(lambda: kinds(fleet_env, "failover.self_repromoted"), timeout=20, what="core-a reclaiming ledger")
    assert (tmp_path / "marks" / "ledger.core-a").read_text() == "started 1"
    requested = kinds(fleet_env, "detect.failover_requested")
    assert requested and requested[0]["data"]["dead"] == ["core-a"] and requested[0]["data"]["plans"] == 0


def test_forged_heartbeat_is_rejected_logged_and_changes_nothing(spawn, start_worker, fleet_env, rds) -> None:
    start_worker("core-a", env=fleet_env)
    spawn(continuity_cmd("beat"), fleet_env, "beat")
    wait_for(lambda: states(rds).get("core-a") == "alive", timeout=40, what="core-a alive")
    # core-b never started: a forged beat claiming it is alive (and holding ledger) must not count
    forged = heartbeats.Heartbeat(node="core-b", seq=2**53, ts=float(rds.time()[0]),
                                 services={"ledger": {"role": "primary", "healthy": True, "epoch": 99}})
    rds.hset(keys.heartbeats(), "core-b", heartbeats.encode(forged, b"not-core-b's-key"))
    wait_for(lambda: kinds(fleet_env, "detect.heartbeat_rejected"), timeout=20, what="the rejection event")
    ev = kinds(fleet_env, "detect.heartbeat_rejected")[0]
    assert ev["node"] == "core-b" and ev["data"]["reason"] in ("bad-signature", "unknown-node")
    assert states(rds).get("core-b") in (None, "unknown")
    # the mode names the ledger's holder once a sweep has taken core-a's beat (not at once on a loaded machine)
    wait_for(lambda: json.loads(rds.get(keys.mode()))["services"]["ledger"]["node"] == "core-a", timeout=20,
             what="the mode to name core-a as the ledger's holder")
    # a few sweeps later: still one event for the one forged blob, and nothing changed
    before = len(kinds(fleet_env, "detect.node_alive"))
    meta = lambda: json.loads(rds.get(keys.detector_meta()))["last_sweep"]  # noqa: E731
    first = meta()
    wait_for(lambda: meta() > first + 2, timeout=20, what="more sweeps")
    assert len(kinds(fleet_env, "detect.heartbeat_rejected")) == 1
    assert len(kinds(fleet_env, "detect.node_alive")) == before
    assert states(rds).get("core-b") in (None, "unknown")


@pytest.mark.parametrize("in_contact, expected", [(False, "expected-offline"), (True, "dead")])
def test_silent_satellite_is_expected_offline_in_blackout_and_dead_outside(
        spawn, start_worker, worker_env, rds, tmp_path, state_dir, in_contact: bool, expected: str) -> None:
    env = dict(worker_env, CONTINUITY_BLUEPRINT=str(write_fleet(tmp_path, sat_in_contact=in_contact)),
               CONTINUITY_BEAT_MAX_LOOP="1")
    rds.set(keys.failover_pause(), operator_pause(state_dir))
    sat = start_worker("sat-1", env=env)
    start_worker("core-a", env=env)
    spawn(continuity_cmd("beat"), env, "beat")
    wait_for(lambda: states(rds).get("sat-1") == "alive", timeout=40, what="sat-1 seen alive")
    sat.kill9()
    wait_for(lambda: states(rds).get("sat-1") == expected, timeout=30, what=f"sat-1 {expected}")
    if not in_contact:
        # and it stays that way: never suspect, never dead, nothing requested from failover
        meta = lambda: json.loads(rds.get(keys.detector_meta()))["last_sweep"]  # noqa: E731
        first = meta()
        wait_for(lambda: meta() > first + 3, timeout=20, what="more sweeps")
        assert states(rds)["sat-1"] == "expected-offline"
        assert not [e for e in kinds(env, "detect.node_dead") if e["node"] == "sat-1"]
        assert not [e for e in kinds(env, "detect.node_suspect") if e["node"] == "sat-1"]
        assert not kinds(env, "detect.failover_requested")
    else:  # the events follow the state write: wait for them rather than race them
        wait_for(lambda: [e for e in kinds(env, "detect.failover_requested") if e["data"]["dead"] == ["sat-1"]],
                 timeout=10, what="the hand-over to failover")
