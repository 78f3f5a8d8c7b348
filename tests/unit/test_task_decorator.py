"""One decorator for every task: consistent delivery options, injection, and unexpected failures in pulse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuity.errors import ContinuityError
from tests.helpers import ROOT

TASK_MODULES = ("workers.node", "workers.backup", "workers.control", "workers.drills", "workers.failover")
# name -> (wire arguments, acks_late, time limit, soft time limit): what beat, the CLI and other tasks rely on
EXPECTED = {
    "continuity.backup.copy": (["set_name", "pass_start", "pass_end"], True, 3600, 3500),
    "continuity.backup.forget": (["set_name", "prune"], True, 3600, 3500),
    "continuity.backup.snapshot": (["set_name", "hops"], True, 3600, 3500),
    "continuity.backup.verify": (["set_name", "snapshot"], True, 3600, 3500),
    "continuity.drills.run": (["name", "dry_run", "game_day"], False, 900, 840),
    "continuity.failover.demote": (["ctx"], True, 60, 55),
    "continuity.failover.fence": (["ctx"], True, 30, 25),
    "continuity.failover.prepare": (["ctx"], True, 300, 295),
    "continuity.failover.promote": (["ctx"], True, 60, 55),
    "continuity.failover.record": (["ctx"], True, 30, 25),
    "continuity.failover.repoint": (["ctx"], True, 30, 25),
    "continuity.failover.verify": (["ctx"], True, 30, 25),
    "continuity.failover.watchdog": ([], False, 20, 15),
    "continuity.node.ping": (["target", "due"], True, 30, 25),
}


@pytest.fixture(scope="module")
def app():
    import importlib

    from workers.app import app

    for mod in TASK_MODULES:
        importlib.import_module(mod)
    app.finalize()
    return app


def test_every_task_keeps_its_name_arguments_and_limits(app) -> None:
    import inspect

    ours = {n: t for n, t in app.tasks.items() if n.startswith("continuity.")}
    assert sorted(ours) == sorted(EXPECTED)
    for name, (args, acks_late, hard, soft) in EXPECTED.items():
        task = ours[name]
        assert list(inspect.signature(task.run).parameters) == args, name
        assert (task.acks_late, task.time_limit, task.soft_time_limit) == (acks_late, hard, soft), name
        assert task.reject_on_worker_lost is acks_late, name


def test_every_task_is_declared_through_the_decorator() -> None:
    for path in sorted((ROOT / "workers").glob("*.py")):
        assert "@app.task" not in path.read_text(), f"{path.name}: declare tasks with @continuity_task"


def test_injected_parameters_are_not_wire_arguments(app) -> None:
    header = app.tasks["continuity.backup.snapshot"].__header__
    header("ledger", hops=1)
    with pytest.raises(TypeError):
        header("ledger", client=object())


@pytest.fixture
def pulse_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from continuity import pulse

    monkeypatch.delenv("CONTINUITY_REDIS_URL", raising=False)
    monkeypatch.setenv("CONTINUITY_PULSE_FILE", str(tmp_path / "pulse.jsonl"))
    monkeypatch.setattr(pulse, "_default", None)
    yield tmp_path / "pulse.jsonl"
    pulse._default = None


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_unexpected_failure_is_a_pulse_event_and_is_reraised(pulse_file: Path, monkeypatch) -> None:
    from workers import task as task_module

    monkeypatch.setattr(task_module, "_reported", {})
    clients: list[object] = []
    monkeypatch.setattr(task_module, "redis_client", lambda **opts: clients.append(opts) or "CLIENT")

    @task_module.continuity_task("tests.decorator.boom", time_limit=10, redis={"socket_timeout": 1})
    def boom(n: int, *, client: object) -> None:
        assert client == "CLIENT"
        raise KeyError(n)

    @task_module.continuity_task("tests.decorator.refused", time_limit=10)
    def refused() -> None:
        raise ContinuityError("a clear, expected refusal")

    for _ in range(2):
        with pytest.raises(KeyError):
            boom.apply(args=[7], throw=True)
    with pytest.raises(ContinuityError):
        refused.apply(throw=True)
    assert clients == [{"socket_timeout": 1}] * 2
    (event,) = _events(pulse_file)  # the second crash of the same kind within a minute is not written again
    assert event["kind"] == "continuity_layer.task.crashed"
    assert event["data"]["task"] == "tests.decorator.boom" and event["data"]["type"] == "KeyError"
    assert event["data"]["error"] == "7" and event["data"]["task_id"]


def test_a_failing_pulse_never_replaces_the_tasks_exception(monkeypatch) -> None:
    from continuity import pulse
    from workers import task as task_module

    monkeypatch.setattr(task_module, "_reported", {})

    def broken(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pulse, "emit", broken)
    assert task_module.report_crash("continuity.x", None, ValueError("v")) is False


def test_a_result_that_says_failed_makes_the_task_fail(app) -> None:
    """Flower shows what Celery stores: a task whose result says it failed must end in FAILURE, not SUCCESS."""
    from workers.task import TaskFailed

    copy = app.tasks["continuity.backup.copy"]
    drill = app.tasks["continuity.drills.run"]
    verify = app.tasks["continuity.backup.verify"]
    from workers import backup, drills

    ok_copy = {"set": "s", "ok": True, "targets": [{"repository": "r"}]}
    bad_copy = {"set": "s", "ok": False, "targets": [{"repository": "r", "error": "repository is locked"}]}
    assert backup.copy_failure(ok_copy) is None
    assert backup.copy_failure(bad_copy) == "copy of set s failed for 1 target(s): r: repository is locked"
    bad_verify = {"set": "s", "snapshot": "abcdef1234", "ok": False, "damaged": [{"path": "x"}],
                  "hash_mismatches": [], "sqlite": [{"ok": True}], "ledgers": [{"ok": False}]}
    assert backup.verify_failure(bad_verify) == ("restore drill of set s snapshot abcdef12 failed: 1 damaged file(s), "
                                                 "0 hash mismatch(es), 1 database/ledger check(s) failed")
    failed = {"id": "d1", "scenario": "sc", "status": "failed",
              "expectations": [{"name": "MTTR within RTO", "expected": 10.0, "measured": 14.25, "ok": False},
                               {"name": "detected in time", "expected": 6.0, "measured": 2.0, "ok": True}]}
    assert drills.drill_failure(failed) == ("drill sc failed: MTTR within RTO (expected ≤ 10.0s, measured 14.2s) "
                                            "(record d1)")
    assert drills.drill_failure({"status": "refused"}) is None and drills.drill_failure({"status": "passed"}) is None
    assert issubclass(TaskFailed, ContinuityError)  # the task reported it: no task.crashed event on top
    from workers.task import continuity_task

    @continuity_task("tests.says_failed", time_limit=10, failed_when=lambda r: r.get("why"))
    def says(why: str | None) -> dict:
        return {"why": why}

    assert says.run(None) == {"why": None}
    with pytest.raises(TaskFailed, match="it broke"):
        says.run("it broke")
    for task, verdict in ((copy, backup.copy_failure), (drill, drills.drill_failure), (verify, backup.verify_failure)):
        assert task.run.__closure__ and verdict in [c.cell_contents for c in task.run.__closure__], task.name
