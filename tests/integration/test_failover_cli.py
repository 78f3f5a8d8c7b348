"""`continuity failover` against a real redis-server: clear exit-2 errors, pause/resume, status and history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuity.state import keys
from tests.failover_support import make_blueprint, pulse_events
from tests.helpers import project_env, run_cli


@pytest.fixture
def env(tmp_path: Path, redis_url: str, state_dir: Path) -> dict[str, str]:
    return project_env(redis_url, state_dir, CONTINUITY_BLUEPRINT=str(make_blueprint(tmp_path, ("ledger",))))


@pytest.mark.parametrize("args, message", [
    (["switchover", "nope", "--to", "core-b"], "unknown service 'nope'"),
    (["switchover", "ledger", "--to", "core-z"], "unknown node 'core-z'"),
    (["switchover", "ledger", "--to", "sat-1"], "'sat-1' is not a placement node of 'ledger'"),
    (["switchover", "ledger", "--to", "core-a"], "already the primary"),
    (["failover", "ledger", "--to", "core-b"], "needs --force"),
    (["failover", "nope", "--to", "core-b", "--force"], "unknown service 'nope'"),
    (["pause", "nope"], "unknown service 'nope'"),
    (["pause", "ledger", "--for", "a while"], "--for: not a duration"),
    (["pause", "ledger", "--until", "2001-01-01T00:00"], "already past"),
    (["pause", "--for", "1h", "--until", "2099-01-01T00:00"], "not both"),
    (["history", "--service", "nope"], "unknown service 'nope'"),
])
def test_bad_requests_exit_2_with_one_clear_line(env: dict[str, str], args: list[str], message: str) -> None:
    r = run_cli("failover", *args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_switchover_without_an_operator_key_is_refused_before_anything(env: dict[str, str], rds,
                                                                     tmp_path: Path) -> None:
    r = run_cli("failover", "switchover", "ledger", "--to", "core-b",
                env={**env, "CONTINUITY_OPERATOR_KEY": str(tmp_path / "none.ed25519")})
    assert r.returncode == 2 and "needs an operator key" in r.stderr and "Traceback" not in r.stderr
    assert rds.keys("*failover*") == []


def test_switchover_to_a_node_that_is_not_alive_is_refused(env: dict[str, str], rds) -> None:
    rds.hset(keys.node_state(), mapping={"core-a": json.dumps({"state": "alive"}),
                                         "core-b": json.dumps({"state": "dead"})})
    r = run_cli("failover", "switchover", "ledger", "--to", "core-b", env=env)
    assert r.returncode == 2 and "target 'core-b' is dead" in r.stderr


def test_bad_blueprint_is_a_config_error(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("fleet: x\nnodes: {}\ndomains:\n  d: {rto: soon, rpo: 1s, services: {}}\n")
    r = run_cli("failover", "status", env={**env, "CONTINUITY_BLUEPRINT": str(bad)})
    assert r.returncode == 2 and f"{bad}:4" in r.stderr and "Traceback" not in r.stderr


def test_pause_resume_are_recorded_with_the_operator(env: dict[str, str], rds, state_dir: Path) -> None:
    assert run_cli("failover", "pause", "ledger", "--reason", "disk swap", env=env).returncode == 0
    assert run_cli("failover", "pause", env=env).returncode == 0
    status = json.loads(run_cli("failover", "status", "--json", env=env).stdout)
    assert status["global_pause"] is True
    assert status["pauses"]["ledger"]["reason"] == "disk swap"
    assert status["pauses"]["ledger"]["who"].startswith("test-operator [key ")  # the fleet's operator key
    (ledger,) = [s for s in status["services"] if s["service"] == "ledger"]
    assert ledger["paused"] is True
    assert run_cli("failover", "resume", env=env).returncode == 0
    assert run_cli("failover", "resume", "ledger", env=env).returncode == 0
    status = json.loads(run_cli("failover", "status", "--json", env=env).stdout)
    assert status["global_pause"] is False and status["pauses"] == {} and status["running"] == []
    events = pulse_events(state_dir, "failover.paused") + pulse_events(state_dir, "failover.resumed")
    assert len(events) == 4 and all(e["data"]["who"].startswith("test-operator [key ") for e in events)
    assert sorted(e["data"]["scope"] for e in events) == ["all", "all", "ledger", "ledger"]


def test_a_pause_with_an_end_is_shown_until_it_expires(env: dict[str, str], rds) -> None:
    paused = json.loads(run_cli("failover", "pause", "ledger", "--for", "30m", "--json", env=env).stdout)
    assert paused["until"] == pytest.approx(paused["at"] + 1800)
    status = json.loads(run_cli("failover", "status", "--json", env=env).stdout)
    assert status["pauses"]["ledger"]["expired"] is False
    (ledger,) = [s for s in status["services"] if s["service"] == "ledger"]
    assert ledger["paused"] is True
    assert "until" in run_cli("failover", "status", env=env).stdout
    # the window ran over: same note, now expired, and no longer pausing the service
    note = json.loads(rds.get(keys.failover_pause("ledger")))
    rds.set(keys.failover_pause("ledger"), json.dumps({**note, "until": note["at"] - 1}))
    status = json.loads(run_cli("failover", "status", "--json", env=env).stdout)
    assert status["pauses"]["ledger"]["expired"] is True
    (ledger,) = [s for s in status["services"] if s["service"] == "ledger"]
    assert ledger["paused"] is False
    for cmd in (("failover", "status"), ("status",)):
        out = run_cli(*cmd, env={**env, "COLUMNS": "300"}).stdout
        assert "EXPIRED" in out and "ledger" in out, out
    report = json.loads(run_cli("status", "--json", env=env).stdout)
    assert report["pauses"]["ledger"]["expired"] is True


def test_history_and_show_read_records(env: dict[str, str], rds, state_dir: Path, monkeypatch) -> None:
    from continuity.failover import records

    for k, v in env.items():
        if k.startswith("CONTINUITY_"):
            monkeypatch.setenv(k, v)
    rid = records.open_record(rds, {"service": "ledger", "old_primary": "core-a", "candidate": "core-b"},
                              {"detected_at": 12.0, "last_seen": {"core-a": 10.0}}, "detector", 12.0)
    records.step_started(rds, rid, 0, "fence", "core-a", 12.5, epoch=2)
    records.step_finished(rds, rid, 0, "fence", True, 12.75, service="ledger", epoch=2)
    records.step_started(rds, rid, 0, "prepare", "core-b", 12.8, epoch=2)
    records.step_finished(rds, rid, 0, "prepare", True, 12.9, {
        "source": "standby", "from": "core-c", "starts_from": {"records": 50, "last_seq": 50},
        "committed": {"epoch": 1, "records": 60, "last_seq": 60, "node": "core-a"},
        "loss_records": 10, "loss_seconds": 1.5}, service="ledger", epoch=2)
    records.finish(rds, rid, "succeeded", 13.0, service="ledger")
    hist = json.loads(run_cli("failover", "history", "--json", env=env).stdout)
    assert [h["id"] for h in hist] == [rid] and hist[0]["detection"] == pytest.approx(2.0)
    shown = json.loads(run_cli("failover", "show", rid, "--json", env=env).stdout)
    assert shown["steps"][0]["duration"] == pytest.approx(0.25)
    text = run_cli("failover", "history", env=env)
    assert text.returncode == 0 and "succeeded" in text.stdout
    text = run_cli("failover", "show", rid, env=env)  # what the new epoch started from, and what that lost
    assert ("data: standby core-c, starts at 50 records; committed 60 at epoch 1: lost 10 records (1.50s)"
            in text.stdout), text.stdout
    r = run_cli("failover", "show", "no-such-record", env=env)
    assert r.returncode == 2 and "no failover record" in r.stderr  # like every id that matches nothing


def test_unreachable_redis_is_one_clear_line(env: dict[str, str]) -> None:
    from continuity.redisd import free_port

    dead = {**env, "CONTINUITY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for args in (["status"], ["pause", "ledger"], ["history"]):
        r = run_cli("failover", *args, env=dead)
        assert r.returncode == 1 and "cannot talk to Redis" in r.stderr and "Traceback" not in r.stderr, args
