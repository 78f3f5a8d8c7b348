"""A real `continuity failover pause` records the operator key id as `who`, in Redis and in the signed pulse."""

from __future__ import annotations

import json
from pathlib import Path

from tests.failover_support import make_blueprint, pulse_events
from tests.helpers import project_env, run_cli


def trust_operator(state: Path, pub: Path) -> None:
    trusted = state / "keys" / "trusted" / "operator"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / pub.name).write_text(pub.read_text(encoding="utf-8"), encoding="utf-8")


def test_pause_records_the_operator_key_not_logname(tmp_path: Path, redis_url: str, state_dir: Path) -> None:
    env = project_env(redis_url, state_dir, CONTINUITY_BLUEPRINT=str(make_blueprint(tmp_path, ("ledger",))),
                      CONTINUITY_OPERATOR_KEY=str(tmp_path / "op.ed25519"), LOGNAME="cfo", USER="cfo")
    key = json.loads(run_cli("operator", "keygen", "--name", "alice", "--json", env=env).stdout)
    trust_operator(state_dir, tmp_path / "op.ed25519.pub")
    assert run_cli("failover", "pause", "ledger", "--reason", "disk swap", env=env).returncode == 0
    status = json.loads(run_cli("failover", "status", "--json", env=env).stdout)
    who = f"alice [key {key['key_id']}]"
    assert status["pauses"]["ledger"]["who"] == who
    (event,) = pulse_events(state_dir, "failover.paused")
    assert event["data"]["who"] == who and "cfo" not in json.dumps(event)
    verified = run_cli("pulse", "verify", env=env)
    assert verified.returncode == 0 and "1 events, chain intact, every event signed by" in verified.stdout


def test_an_operator_key_the_fleet_does_not_trust_is_refused_up_front(tmp_path: Path, redis_url: str,
                                                                      state_dir: Path) -> None:
    """Issue 11: the CLI says so (one line, exit 2) instead of writing a note the detector would ignore."""
    env = project_env(redis_url, state_dir, CONTINUITY_BLUEPRINT=str(make_blueprint(tmp_path, ("ledger",))),
                      CONTINUITY_OPERATOR_KEY=str(tmp_path / "op.ed25519"))
    key = json.loads(run_cli("operator", "keygen", "--name", "alice", "--json", env=env).stdout)
    for args in (["failover", "pause", "ledger"], ["failover", "resume", "ledger"], ["drill", "halt"]):
        out = run_cli(*args, env=env)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        (line,) = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        assert f"key {key['key_id']}" in line and "trust" in line
    assert not pulse_events(state_dir, "failover.paused") and not pulse_events(state_dir, "failover.resumed")
    trust_operator(state_dir, tmp_path / "op.ed25519.pub")
    assert run_cli("failover", "pause", "ledger", env=env).returncode == 0
    assert run_cli("failover", "resume", "ledger", env=env).returncode == 0
    halt = run_cli("drill", "halt", env=env)  # trusted now: past the key check, to the next question
    assert halt.returncode == 2 and "no drill is running" in halt.stdout + halt.stderr
    (resumed,) = pulse_events(state_dir, "failover.resumed")
    assert resumed["data"]["signer"] == key["key_id"]
