"""A drill needing steward approval refuses without it, runs once k stewards approved (the approvals in the pulse
and the postmortem), ignores a forged approval written straight into Redis; `drill halt` stops a running drill
and its rollbacks run. Real redis-server, a real (harmless) fault: bytes of a file in a scratch backup repository."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis

from continuity import halt_auth
from continuity.blueprint import load_blueprint
from continuity.config import parse_text
from continuity.drills.runner import DrillRefused, Runner
from continuity.drills.scenarios import parse_scenarios
from continuity.events import short
from continuity.pulse import Pulse, read_events
from continuity.signing import create_key
from continuity.state import approvals, keys
from continuity.state import drills as drill_state
from continuity.stewardship import Approval, parse_stewardship, sign, subject
from tests.helpers import ROOT

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")
SCENARIOS = """
version: 1
defaults: {{environments: [test], probe_interval: 50ms, recovery_timeout: 5s}}
scenarios:
  scratch-rot:
    title: A scratch repository file gets flipped bytes
    target: {{kind: repository, repository: "{repo}", services: [ledger],
             blast_radius: {{max_nodes: 0, max_services: 1, max_tier0_services: 1}}}}
    fault: {{type: backup-corruption, params: {{file: data, length: 8, offset: 0}}}}
    steady_state:
      - {{name: always, probe: command, argv: ["true"], during: ignore}}
    duration: {duration}
    rollbacks: [fault]
    expectations: {{rto: 30s, rpo: null, data_lost: null, failovers: any}}
"""


@pytest.fixture
def fleet(tmp_path: Path, rds: redis.Redis, monkeypatch):
    monkeypatch.setenv("CONTINUITY_ENV", "test")
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "pack").write_bytes(bytes(range(64)))
    ks = {n: create_key(tmp_path / "k" / f"{n}.ed25519", "operator", n) for n in ("alice", "bob", "mallory")}
    members = "\n".join(f'    - {{name: {n}, key: "{ks[n].public.line()}"}}' for n in ("alice", "bob"))
    st = parse_stewardship(parse_text(f"stewardship:\n  group: circle\n  approvals_needed: 2\n  members:\n{members}\n",
                                      "stewards.yml"))

    def runner(duration: str = "300ms") -> Runner:
        sc = parse_scenarios(parse_text(SCENARIOS.format(repo=repo, duration=duration), "scenarios.yaml"), BP)
        return Runner(rds, BP, sc, state=tmp_path / "state" / "drills", stewardship=st,
                      pulse=Pulse(rds, tmp_path / "state" / "pulse.jsonl"))

    return runner, ks, repo, tmp_path / "state" / "pulse.jsonl"


def approve(rds: redis.Redis, key, subj: str = subject("drill", "scratch-rot")) -> Approval:
    a = sign(key, subj, time.time(), 600)
    approvals.put(rds, subj, a.approver, json.dumps(a.to_dict()), 600)
    return a


def test_refused_without_approvals_then_runs_once_two_stewards_approved(fleet, rds: redis.Redis) -> None:
    runner, ks, repo, pulse = fleet
    r = runner()
    with pytest.raises(DrillRefused, match=r"needs 2 approval\(s\) from stewards 'circle' .* has 0 .*missing 2: a "
                                           r"steward runs `continuity drill approve scratch-rot`"):
        r.run("scratch-rot")
    assert rds.zcard(keys.drill_history()) == 0  # refused before anything was recorded or touched
    approve(rds, ks["alice"])
    approve(rds, ks["alice"])  # the same steward twice still counts once
    assert "has 1 (approved by: alice); missing 1" in r.run("scratch-rot", dry_run=True)["refusal"]
    # someone with Redis access but no steward key writes "bob's" approval: signed by mallory under bob's id
    forged = sign(ks["mallory"], subject("drill", "scratch-rot"), time.time(), 600).to_dict()
    forged["approver"] = ks["bob"].key_id
    rds.hset(keys.approvals("drill:scratch-rot"), ks["bob"].key_id, json.dumps(forged))
    with pytest.raises(DrillRefused, match=r"missing 1.*bob\): signature does not match"):
        r.run("scratch-rot")
    # and mallory approving with her own key is no steward
    approve(rds, ks["mallory"])
    assert "is not a steward of circle" in r.run("scratch-rot", dry_run=True)["refusal"]
    approve(rds, ks["bob"])  # the real bob replaces the forged statement
    plan = r.run("scratch-rot", dry_run=True)
    assert plan["refusal"] is None and {a["name"] for a in plan["approvals"]} == {"alice", "bob"}
    before = (repo / "data" / "pack").read_bytes()
    rec = r.run("scratch-rot")
    assert rec["status"] == "passed", rec
    assert (repo / "data" / "pack").read_bytes() == before  # the fault was injected and rolled back
    assert {a["name"] for a in rec["approvals"]} == {"alice", "bob"}
    started = [e for e in read_events(pulse) if short(e["kind"]) == "drill.started"]
    assert [sorted(a["key_id"] for a in e["data"]["approvals"]) for e in started] == [
        sorted([ks["alice"].key_id, ks["bob"].key_id])]
    postmortem = Path(rec["postmortem"]).read_text(encoding="utf-8")
    section = postmortem.split("## Approvals")[1].split("##")[0]
    assert f"| alice | `{ks['alice'].key_id}` |" in section and f"| bob | `{ks['bob'].key_id}` |" in section


def halt_during_drill(fleet, rds: redis.Redis, request: dict) -> tuple[dict, str]:
    """Run the 120 s drill, send ``request`` (``drill`` filled in) once the fault is in; (record, drill id)."""
    runner, ks, repo, _pulse = fleet
    approve(rds, ks["alice"])
    approve(rds, ks["bob"])
    r = runner(duration="120s")
    before = (repo / "data" / "pack").read_bytes()
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.update(rec=r.run("scratch-rot")), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    drill_id = None
    while time.monotonic() < deadline:
        drill_id = drill_state.lock_holder(rds)
        if drill_id and (repo / "data" / "pack").read_bytes() != before:
            break
        time.sleep(0.02)
    assert drill_id
    key = request.pop("_key", None)
    body = {**request, "drill": drill_id}
    drill_state.request_halt(rds, halt_auth.sign(key, body) if key is not None else body)
    t.join(timeout=60)
    assert not t.is_alive()
    return out["rec"], drill_id


def halted_event(pulse: Path, drill_id: str) -> dict:
    (event,) = [e for e in read_events(pulse)
                if short(e["kind"]) == "drill.halted" and e["data"]["drill"] == drill_id]
    return event["data"]


def test_a_signed_halt_names_its_operator_key_and_a_forged_one_does_not(fleet, rds: redis.Redis) -> None:
    """Issue 11: who halted a drill is the trusted key that signed the request, not a name written in Redis."""
    _runner, ks, _repo, pulse = fleet
    rec, drill_id = halt_during_drill(fleet, rds, {"who": "alice", "reason": "demo", "at": 0, "_key": ks["alice"]})
    assert rec["status"] == "halted" and rec["aborted"] == "halted by alice: demo"
    assert halted_event(pulse, drill_id)["signer"] == ks["alice"].key_id
    # mallory signs a request and claims alice's key id: still halts (safe direction), but is not alice's
    forged = {**halt_auth.sign(ks["mallory"], {"who": "alice", "reason": "x", "at": 0}), "signer": ks["alice"].key_id}
    rec, drill_id = halt_during_drill(fleet, rds, forged)
    assert rec["status"] == "halted" and rec["aborted"] == "halted by alice (unverified): x"
    data = halted_event(pulse, drill_id)
    assert data["signer"] is None and "forged or altered" in data["unverified"]


def test_halt_stops_a_running_drill_and_runs_its_rollbacks(fleet, rds: redis.Redis) -> None:
    runner, ks, repo, pulse = fleet
    approve(rds, ks["alice"])
    approve(rds, ks["bob"])
    r = runner(duration="120s")
    before = (repo / "data" / "pack").read_bytes()
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.update(rec=r.run("scratch-rot")), daemon=True)
    started = time.monotonic()
    t.start()
    deadline = time.monotonic() + 30
    drill_id = None
    while time.monotonic() < deadline:  # wait for the fault to be in (the file changed)
        drill_id = drill_state.lock_holder(rds)
        if drill_id and (repo / "data" / "pack").read_bytes() != before:
            break
        time.sleep(0.02)
    assert drill_id and (repo / "data" / "pack").read_bytes() != before
    drill_state.request_halt(rds, {"drill": drill_id, "who": "carol [key x]", "reason": "customer demo", "at": 0})
    t.join(timeout=60)
    assert not t.is_alive()
    assert time.monotonic() - started < 100  # well before the 120 s fault window
    rec = out["rec"]
    # unsigned (written by hand): honoured all the same, recorded as unverified
    assert rec["status"] == "halted" and rec["aborted"] == "halted by carol [key x] (unverified): customer demo"
    assert rec["rollback_ok"] and (repo / "data" / "pack").read_bytes() == before
    kinds = [short(e["kind"]) for e in read_events(pulse) if e.get("data", {}).get("drill") == drill_id]
    assert kinds.index("drill.halted") < kinds.index("drill.rollback") < kinds.index("drill.finished")
    assert rds.get(keys.drill_halt()) is None  # the request is cleared with the drill


def test_a_halt_for_another_drill_does_not_stop_this_one(fleet, rds: redis.Redis) -> None:
    runner, ks, repo, _pulse = fleet
    approve(rds, ks["alice"])
    approve(rds, ks["bob"])
    drill_state.request_halt(rds, {"drill": "some-older-drill", "who": "x", "reason": "", "at": 0})
    assert runner().run("scratch-rot")["status"] == "passed"
