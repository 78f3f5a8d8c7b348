"""Issue 11: a pause note nobody trusted signed does not switch automatic failover off (real redis-server).

The attack: ``SET continuity:failover:pause '{"who": "ops"}'`` and the detector stopped failing anything over.
Now the detector's sweep honours only notes signed by an operator key trusted from files; the sweep below is
the real one (real heartbeats, real planner) with only the launcher recorded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from continuity import pause_auth
from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect.agent import Agent
from continuity.detect.sweep import SweepCache, run_sweep
from continuity.failover.planner import plan_failovers
from continuity.services.probes import ProbeResult
from continuity.signing import create_key
from continuity.state import heartbeats, keys
from tests.helpers import operator_env, operator_pause, wait_for
from tests.unit.test_detector_sweep import FLEET, KEYS, Events, beat_all, lead, states


@pytest.fixture
def bp() -> Blueprint:
    return parse_blueprint(parse_text(FLEET, "sweep.yml"))


@pytest.fixture
def fleet(bp, rds):
    def noop(*a: Any, **k: Any) -> None:
        return None

    return {n: Agent(bp, n, rds, KEYS[n], run_hook=noop, prober=lambda *a: ProbeResult(True, "ok")) for n in KEYS}


@pytest.fixture
def state(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("CONTINUITY_ROOT", str(tmp_path))  # no ops/stewards.yml: trust is the state dir's alone
    operator_env(tmp_path / "state")
    return tmp_path / "state"


def kill_core_a(rds, bp, fleet, then=None) -> tuple[Events, list]:
    """core-a goes silent until the sweep declares it dead; what the sweep launched and said meanwhile
    (``then``: run after the first sweep, before core-a falls silent)."""
    events, launched = Events(), []
    cache = SweepCache(keyring=heartbeats.KeyRing(dict(KEYS)))

    def launch(plans, trigger):
        launched.append(plans)
        return [f"rec-{p.service}" for p in plans]

    def sweep() -> None:
        run_sweep(rds, bp, lead(rds), cache=cache, pulse=events, launch=launch, plan=plan_failovers)

    beat_all(fleet)
    sweep()
    if then is not None:
        then()

    def dead_yet() -> bool:
        beat_all(fleet, "core-b", "core-c")
        sweep()
        return states(rds)["core-a"] == "dead"

    wait_for(dead_yet, timeout=10, interval=0.05, what="core-a to be declared dead")
    return events, launched


def test_forged_pauses_are_ignored_and_reported(bp, rds, fleet, state: Path, tmp_path: Path) -> None:
    stranger = create_key(tmp_path / "stranger.ed25519", "operator", "mallory")
    body = {"service": None, "who": "ops", "at": time.time(), "reason": "x", "until": None}
    rds.set(keys.failover_pause(), json.dumps(body))  # unsigned
    rds.set(keys.failover_pause("ledger"), json.dumps(pause_auth.sign(stranger, {**body, "service": "ledger"})))
    events, launched = kill_core_a(rds, bp, fleet)
    assert [[p.service for p in plans] for plans in launched] == [["ledger"]]  # failed over all the same
    reasons = sorted((e["data"]["scope"], e["data"]["reason"]) for e in events.of("failover.pause_rejected"))
    assert reasons == [("all", "the pause note is not signed by an operator key"),
                       ("ledger", f"the pause note is signed by key {stranger.key_id}, which is not a trusted "
                                  "operator key")]


def test_an_operator_signed_pause_holds(bp, rds, fleet, state: Path) -> None:
    """The other half: a pause `continuity failover pause` wrote still stops failover."""
    rds.set(keys.failover_pause(), operator_pause(state))
    events, launched = kill_core_a(rds, bp, fleet)
    assert launched == [] and not events.of("failover.pause_rejected")


def test_a_signed_note_moved_to_another_scope_does_not_count(bp, rds, fleet, state: Path) -> None:
    rds.set(keys.failover_pause(), operator_pause(state, service="reports"))  # reports' pause, replayed fleet-wide
    events, launched = kill_core_a(rds, bp, fleet)
    assert [[p.service for p in plans] for plans in launched] == [["ledger"]]
    assert "not this scope" in events.of("failover.pause_rejected")[0]["data"]["reason"]


REMOVED = "the operator-signed pause note was removed without a signed resume"


def test_a_signed_pause_deleted_without_a_signed_resume_still_holds(bp, rds, fleet, state: Path) -> None:
    """A bare ``DEL`` of the note (anyone with Redis access) is not a resume: the detector saw the signed note."""
    rds.set(keys.failover_pause(), operator_pause(state))
    events, launched = kill_core_a(rds, bp, fleet, then=lambda: rds.delete(keys.failover_pause()))
    assert launched == []
    removed = events.of("failover.pause_rejected")
    assert len(removed) == 1 and removed[0]["data"]["scope"] == "all" and REMOVED in removed[0]["data"]["reason"]


def test_a_signed_resume_ends_the_pause(bp, rds, fleet, state: Path) -> None:
    """The other half: what `continuity failover resume` does (a signed statement, then the delete) resumes."""
    from continuity.failover import control
    from continuity.signing import load_key

    key = load_key(Path(operator_env(state)["CONTINUITY_OPERATOR_KEY"]), "operator")
    rds.set(keys.failover_pause(), operator_pause(state))
    events, launched = kill_core_a(rds, bp, fleet, then=lambda: control.resume(rds, None, "ops", operator=key))
    assert [[p.service for p in plans] for plans in launched] == [["ledger"]]
    assert not events.of("failover.pause_rejected")


def test_a_resume_of_another_note_or_by_a_stranger_ends_nothing(bp, rds, fleet, state: Path, tmp_path: Path) -> None:
    """An old resume statement replayed (it names an earlier note) or one signed by an untrusted key."""
    from continuity.signing import load_key

    key = load_key(Path(operator_env(state)["CONTINUITY_OPERATOR_KEY"]), "operator")
    stranger = create_key(tmp_path / "stranger.ed25519", "operator", "mallory")
    earlier = json.loads(operator_pause(state, reason="earlier"))
    rds.set(keys.failover_pause(), operator_pause(state))
    rds.set(keys.failover_pause("ledger"), operator_pause(state, service="ledger"))
    ledger_note = json.loads(rds.get(keys.failover_pause("ledger")))

    def remove() -> None:
        rds.set(keys.failover_resume(), json.dumps(pause_auth.sign_resume(key, None, earlier, "ops", time.time())))
        rds.set(keys.failover_resume("ledger"),
                json.dumps(pause_auth.sign_resume(stranger, "ledger", ledger_note, "ops", time.time())))
        rds.delete(keys.failover_pause(), keys.failover_pause("ledger"))

    events, launched = kill_core_a(rds, bp, fleet, then=remove)
    assert launched == []
    assert sorted(e["data"]["scope"] for e in events.of("failover.pause_rejected")) == ["all", "ledger"]
