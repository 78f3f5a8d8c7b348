"""Issue 11: nothing runs because Redis said so — planted drill rollbacks, against a real redis-server.

An attacker with write access to Redis used to plant ``drill:rollbacks:<id>`` with a ``restart-process`` whose
argv was any command, add the id to ``drill:pending``, and wait: the next drill start (or ``drill recover``)
ran it as the worker's user. The runner here is the real one, with the real executors; the planted command
would create a marker file, so "never executed" is checked on the disk, not on a return value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from continuity.blueprint import load_blueprint
from continuity.drills.runner import Runner
from continuity.drills.scenarios import load_scenarios
from continuity.state import keys
from tests.helpers import ROOT


@pytest.fixture
def runner(rds, state_dir: Path, monkeypatch) -> Runner:
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    monkeypatch.setenv("CONTINUITY_ENV", "test")  # the scenarios allow test: the incident is what refuses
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    scenarios = load_scenarios(ROOT / "ops" / "drills" / "continuity_scenarios.yaml", bp)
    return Runner(rds, bp, scenarios, state=state_dir / "drills", stewardship=None)


def plant(rds, drill_id: str, action: dict) -> None:
    entry = {"idx": 0, "action": action, "status": "pending", "registered": 0}
    rds.hset(keys.drill_rollbacks(drill_id), "0", json.dumps(entry))
    rds.sadd(keys.drill_pending_rollbacks(), drill_id)


def test_planted_rollback_argv_is_never_executed(runner: Runner, rds, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    plant(rds, "20260101T000000-planted-abcdef", {
        "kind": "restart-process", "node": "core-z", "name": "planted",
        "argv": [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"], "env": {}, "cwd": "/"})
    plant(rds, "20260101T000000-planted-bytes", {
        "kind": "restore-bytes", "path": str(tmp_path / "victim"), "offset": 0, "original_b64": "cHduZWQ=",
        "corrupt_b64": ""})
    recovered = runner.recover()
    assert not marker.exists(), "the planted argv ran"
    assert recovered == [] and not (tmp_path / "victim").exists()
    assert runner.registry.elsewhere() == ["20260101T000000-planted-abcdef", "20260101T000000-planted-bytes"]
    # nothing else on this host was made to run them either: no spawned-process ledger entry
    assert not (runner.state / "spawned.jsonl").exists()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, action: dict) -> None:
        self.calls.append(action["name"])


def test_a_refused_drill_touches_nothing_not_even_a_pending_rollback(runner: Runner, rds) -> None:
    """Guards run before recovery: a drill start that is refused (here: an incident is open) runs no rollback."""
    from continuity.drills.rollbacks import RollbackRegistry
    from continuity.drills.runner import DrillRefused
    from continuity.state import incidents

    rec = Recorder()
    runner.registry = RollbackRegistry(rds, runner.state / "rollbacks", {"x": rec})
    runner.registry.register("20260101T000000-earlier-abcdef", {"kind": "x", "name": "undo"})
    incidents.open_(rds, "ledger", {"service": "ledger", "reason": "test"})
    with pytest.raises(DrillRefused, match="incident.*1 rollback.*pending on this host"):
        runner.run("service-crash")
    assert rec.calls == [] and runner.registry.pending() == ["20260101T000000-earlier-abcdef"]
    assert [o["ok"] for o in runner.recover()] == [True] and rec.calls == ["undo"]  # `drill recover` runs it
