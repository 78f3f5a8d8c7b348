"""The beat schedule is derived from ops/: per-node queues, expires everywhere, tiers shed when degraded."""

from __future__ import annotations

import beat_schedule
from continuity.beatplan import should_skip
from continuity.blueprint import load_blueprint
from tests.helpers import ROOT


def test_every_entry_has_queue_and_expires() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    schedule = beat_schedule.build_schedule(bp)
    assert schedule
    for name, entry in schedule.items():
        assert entry["options"]["queue"], name
        assert entry["options"]["expires"] > 0, name


def test_one_ping_per_node_on_its_own_queue() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    pings = beat_schedule.ping_entries(bp)
    assert {e["args"][0] for e in pings.values()} == set(bp.nodes)
    for entry in pings.values():
        assert entry["options"]["queue"] == f"node.{entry['args'][0]}"


def test_entry_without_expires_is_refused(monkeypatch) -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    monkeypatch.setattr(beat_schedule, "ping_entries",
                        lambda _bp: {"x": {"task": "t", "schedule": 1.0, "options": {"queue": "q"}}})
    monkeypatch.setattr(beat_schedule, "CONTRIBUTORS", ())
    try:
        beat_schedule.build_schedule(bp)
    except ValueError as exc:
        assert "expires" in str(exc)
    else:
        raise AssertionError("an entry without expires was accepted")


def test_shedding_follows_mode() -> None:
    assert not should_skip(3, {})
    assert not should_skip(3, {"mode": "normal", "shed_tiers": [3]})
    assert should_skip(3, {"mode": "degraded", "shed_tiers": [3]})
    assert not should_skip(0, {"mode": "degraded", "shed_tiers": [3]})
    assert should_skip(2, {"mode": "degraded"})
    assert should_skip(1, {"mode": "critical"})
    assert not should_skip(0, {"mode": "critical"})
    assert not should_skip(None, {"mode": "critical"})


def test_beat_refuses_a_broken_backup_config(tmp_path) -> None:
    from tests.helpers import run_cli

    bad = tmp_path / "backup.yml"
    bad.write_text("version: 1\nsets:\n  x:\n    node: core-z\n    sources: [{kind: directory, path: /tmp}]\n"
                   "    repository: /tmp/r\n    key: {password_env: X}\n")
    import os

    env = dict(os.environ, CONTINUITY_BACKUP_CONFIG=str(bad), CONTINUITY_REDIS_URL="redis://127.0.0.1:1/0")
    out = run_cli("beat", env=env, timeout=60)
    assert out.returncode == 2
    assert f"{bad}:4: sets.x.node: unknown node 'core-z'" in out.stderr
    assert "Traceback" not in out.stderr


def test_interval_entries_start_at_once_calendar_entries_wait() -> None:
    from datetime import timedelta

    from celery.schedules import crontab

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    schedule = beat_schedule.build_schedule(bp)
    for name, entry in schedule.items():
        if isinstance(entry["schedule"], timedelta):
            assert entry["last_run_at"] == beat_schedule.NEVER_RUN, name
        elif isinstance(entry["schedule"], crontab):
            assert "last_run_at" not in entry, name


def test_the_detector_is_not_a_beat_job_and_nothing_floods_the_task_list() -> None:
    """Detection is a loop in the control workers (it must not stop with beat); a task every second on the
    control queue used to fill Flower's task list with work nobody needs to see."""
    from datetime import timedelta

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    schedule = beat_schedule.build_schedule(bp)
    assert not [n for n, e in schedule.items() if "sweep" in n or "sweep" in e["task"]]
    assert "workers.control" not in beat_schedule.CONTRIBUTORS
    for name, entry in schedule.items():
        if isinstance(entry["schedule"], timedelta):
            assert entry["schedule"].total_seconds() >= 2 * bp.policy.heartbeat_interval, name
