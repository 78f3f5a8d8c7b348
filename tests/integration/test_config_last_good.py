"""A blueprint broken by an edit under a running fleet: the shell keeps the last good one, tells once, and
`continuity status` shows the error; fixing the file clears it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from continuity.state import config_errors
from tests.helpers import ROOT, project_env, run_cli

pytestmark = pytest.mark.slow


def _edit(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, (1_000_000 + tick, 1_000_000 + tick))


def test_broken_blueprint_keeps_the_fleet_on_the_last_good_one(rds, redis_url: str, state_dir: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    bp_file = tmp_path / "blueprint.yml"
    good = (ROOT / "ops" / "blueprint.yml").read_text()
    _edit(bp_file, good, 1)
    env = project_env(redis_url, state_dir, CONTINUITY_BLUEPRINT=str(bp_file), CONTINUITY_NODE="core-a")
    for name, value in env.items():
        if name.startswith("CONTINUITY_"):
            monkeypatch.setenv(name, value)
    from workers import task  # the Celery shell, with this test's Redis and state in the environment

    task._blueprints.clear()
    first = task.blueprint()
    assert "core-a" in first.nodes

    _edit(bp_file, good.replace("nodes:", "nodez:", 1), 2)  # a typo saved while the fleet runs
    assert task.blueprint() is first  # detection and failover go on with the last good blueprint
    assert task.blueprint() is first
    errors = config_errors.read_all(rds)
    assert [e["file"] for e in errors] == [str(bp_file)] and "nodes" in errors[0]["error"]
    events = [json.loads(line) for line in (state_dir / "pulse_history.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("continuity_layer.config.invalid") == 1  # told once, not per task

    # an operator's `continuity status` shows the fleet (from the last good copy) and the error, exit 0
    proc = run_cli("status", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {e["node"] for e in report["config_errors"]} == {"this command", "core-a"}
    assert {n["id"] for n in report["nodes"]} == set(first.nodes)

    _edit(bp_file, good, 3)
    assert task.blueprint() is not first and config_errors.read_all(rds) == []
    events = [json.loads(line) for line in (state_dir / "pulse_history.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events][-1] == "continuity_layer.config.recovered"
    assert json.loads(run_cli("status", "--json", env=env).stdout)["config_errors"] == []
