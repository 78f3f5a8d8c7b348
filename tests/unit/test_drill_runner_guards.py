"""Runner guards refuse before touching anything: environment, open incident, mode, satellite contact, lock."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import fakeredis
import pytest

from continuity.blueprint import load_blueprint
from continuity.drills.runner import DrillRefused, Runner
from continuity.drills.scenarios import load_scenarios
from continuity.pulse import Pulse
from continuity.state import keys
from tests.helpers import ROOT

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")
SC = load_scenarios(ROOT / "ops" / "drills" / "continuity_scenarios.yaml", BP)
NOON = dt.datetime(2024, 1, 2, 12, 0, tzinfo=dt.UTC).timestamp()
LATE = dt.datetime(2024, 1, 2, 23, 30, tzinfo=dt.UTC).timestamp()  # sat-1's planned blackout


@pytest.fixture
def runner(tmp_path: Path, monkeypatch) -> Runner:
    monkeypatch.setenv("CONTINUITY_ENV", "test")
    client = fakeredis.FakeRedis(decode_responses=True)
    return Runner(client, BP, SC, state=tmp_path, pulse=Pulse(None, tmp_path / "pulse.jsonl"), clock=lambda: NOON)


def test_environment_not_allowed(runner: Runner, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_ENV", "production")
    with pytest.raises(DrillRefused, match="not allowed in environment 'production'"):
        runner.run("service-crash")


def test_open_incident_refuses_and_records_nothing(runner: Runner) -> None:
    runner.client.hset(keys.incidents(), "failover-ledger", "{}")
    with pytest.raises(DrillRefused, match="incident"):
        runner.run("service-crash")
    assert runner.client.zcard(keys.drill_history()) == 0
    assert not runner.client.exists(keys.drill_active())  # the lock is released


def test_degraded_mode_refuses(runner: Runner) -> None:
    runner.client.set(keys.mode(), json.dumps({"mode": "degraded"}))
    with pytest.raises(DrillRefused, match="mode is 'degraded'"):
        runner.run("service-crash")


def test_satellite_outside_contact_refuses(runner: Runner) -> None:
    runner.clock = lambda: LATE
    with pytest.raises(DrillRefused, match="outside its contact window"):
        runner.run("satellite-blackout")


def test_another_drill_running_refuses(runner: Runner) -> None:
    runner.client.set(keys.drill_active(), "other-drill|elsewhere|1")
    with pytest.raises(DrillRefused, match="other-drill is running"):
        runner.run("service-crash")


def test_dry_run_reports_refusal_and_plan_without_touching(runner: Runner) -> None:
    runner.client.hset(keys.incidents(), "x", "{}")
    plan = runner.run("primary-node-outage", dry_run=True)
    assert plan["dry_run"] and "incident" in plan["refusal"]
    assert plan["target"]["nodes"] == ["core-a"]
    assert plan["expectations"]["rto"] == 10.0 and plan["expectations"]["rpo"] == 5.0
    assert "no live registered worker" in plan["fault"]["error"]  # nothing registered in this fake fleet
    assert not runner.client.exists(keys.drill_active()) and runner.client.zcard(keys.drill_history()) == 0


def test_lock_of_a_dead_runner_on_this_host_is_taken_over(runner: Runner) -> None:
    import socket
    import subprocess

    from continuity.drills.runner import acquire_lock

    dead = subprocess.Popen(["true"])
    dead.wait()
    runner.client.set(keys.drill_active(), f"old-drill|{socket.gethostname()}|{dead.pid}", px=30_000)
    assert acquire_lock(runner.client, "new-drill")
    assert runner.client.get(keys.drill_active()).startswith("new-drill|")
    runner.client.set(keys.drill_active(), f"live|{socket.gethostname()}|1", px=30_000)  # pid 1 is alive
    assert not acquire_lock(runner.client, "third")


def test_failover_cool_down_refuses_a_drill_that_needs_a_failover(runner: Runner) -> None:
    """Inside a cool-down no automatic failover happens: the drill would fail without saying why."""
    from continuity.state import controls

    controls.set_cooldown(runner.client, "ledger", NOON + 42, NOON)
    plan = runner.plan("primary-node-outage")  # the dry run says so, and until when
    assert plan["refusal"] and "ledger in failover cool-down until 12:00:42Z (42s)" in plan["refusal"]
    with pytest.raises(DrillRefused, match="cool-down until 12:00:42Z"):
        runner.run("primary-node-outage")
    assert runner.plan("service-crash")["refusal"] is None  # needs no failover: not held up
    runner.clock = lambda: NOON + 43
    assert runner.plan("primary-node-outage")["refusal"] is None


def test_failover_pause_stops_every_drill_from_starting(runner: Runner) -> None:
    """A maintenance pause means people are working on the fleet: no drill starts, failover or not (issue 11)."""
    from continuity.state import controls

    controls.set_pause(runner.client, None, {"who": "ops", "reason": "maintenance"})
    assert "failover is paused for the whole fleet" in runner.plan("primary-node-outage")["refusal"]
    with pytest.raises(DrillRefused, match="failover is paused for the whole fleet"):
        runner.run("service-crash")  # expects no failover at all, and is still held up
    assert runner.client.zcard(keys.drill_history()) == 0
    controls.clear_pause(runner.client, None)
    controls.set_pause(runner.client, "ledger", {"who": "ops", "reason": "disk swap"})
    assert "failover is paused for ledger" in runner.plan("service-crash")["refusal"]
    assert runner.plan("satellite-blackout")["refusal"] is None  # a pause of ledger does not hold up sat-1's drill
