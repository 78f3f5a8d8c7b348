"""Hook rendering and running: placeholders, per-node ports, no shell, timeouts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from continuity.blueprint import load_blueprint
from continuity.services import hooks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bp():
    return load_blueprint(ROOT / "ops" / "blueprint.yml")


def test_port_follows_the_node_offset(bp) -> None:
    assert hooks.service_port(bp, "ledger", "core-a") == 27100
    assert hooks.service_port(bp, "ledger", "core-b") == 27200
    assert hooks.service_port(bp, "reports", "core-a") is None
    assert hooks.base_url(bp, "ledger", "core-b") == "http://127.0.0.1:27200"
    assert hooks.probe_url(bp, "ledger", "core-b") == "http://127.0.0.1:27200/health"


def test_render_fills_every_placeholder_and_refuses_unknown_ones(bp, tmp_path) -> None:
    values = hooks.placeholder_values(bp, "ledger", "core-b", 7)
    argv = hooks.render(["{python}", "{root}", "{node}", "{service}", "{port}", "{epoch}", "{address}"], values)
    assert argv == [sys.executable, str(hooks.paths.root()), "core-b", "ledger", "27200", "7", "127.0.0.1"]
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    doc["nodes"]["core-b"]["address"] = "10.0.0.7"  # a node that is a host of its own
    (tmp_path / "bp.yml").write_text(yaml.safe_dump(doc))
    moved = load_blueprint(tmp_path / "bp.yml")
    assert hooks.render(["{address}"], hooks.placeholder_values(moved, "ledger", "core-b", 7)) == ["10.0.0.7"]
    assert hooks.probe_url(moved, "ledger", "core-b") == "http://10.0.0.7:27200/health"
    with pytest.raises(hooks.HookError, match=r"unknown placeholder \{nope\}"):
        hooks.render(["{nope}"], values)


def test_arguments_are_never_shell_interpreted() -> None:
    res = hooks.run([sys.executable, "-c", "import sys; print(sys.argv[1])", "$(echo pwned); ls"], timeout=10)
    assert res.ok and res.output.strip() == "$(echo pwned); ls"


def test_a_hanging_hook_times_out_and_a_missing_program_fails_cleanly() -> None:
    res = hooks.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert res.returncode == 124 and not res.ok and "timed out" in res.output
    res = hooks.run(["/nonexistent/program"], timeout=5)
    assert res.returncode == 127 and "cannot run" in res.output


def test_demote_falls_back_to_stop_and_missing_hooks_are_none(bp) -> None:
    assert hooks.run_service_hook(bp, "reports", "core-b", "start", 2) is None
    assert bp.services["ledger"].spec.hooks.demote is None and bp.services["ledger"].spec.hooks.stop


LOCKED_FLEET = """\
version: 1
fleet: hook-lock
nodes:
  core-a: {kind: core}
domains:
  d:
    rto: 10s
    rpo: 5s
    services:
      ledger:
        tier: 3
        placement: {primary: core-a}
        hooks:
          start: ["{python}", "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).touch()", "MARKS/start"]
          stop: ["{python}", "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).touch()", "MARKS/stop"]
"""
HOLD_LOCK = """
from continuity.services.hooks import hook_lock
import sys
with hook_lock("ledger", "core-a", 10) as got:
    print("locked" if got else "busy", flush=True)
    sys.stdin.read()
"""


def test_hooks_of_one_service_on_one_node_never_overlap_across_processes(tmp_path, monkeypatch) -> None:
    """Another process (a worker's pool running a failover step) holds the hook lock: a start waits, then fails."""
    import subprocess

    from continuity.blueprint import parse_blueprint
    from continuity.config import parse_text

    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    marks = tmp_path / "marks"
    marks.mkdir()
    bp = parse_blueprint(parse_text(LOCKED_FLEET.replace("MARKS", str(marks)), "lock.yml"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = hooks.run_service_hook(bp, "ledger", "core-a", "start", 1, timeout=0.2)
        assert res.returncode == hooks.LOCK_BUSY and "still runs" in res.output
        assert not (marks / "start").exists(), "a start never runs beside another hook of the service"
        res = hooks.run_service_hook(bp, "ledger", "core-a", "demote", 1, timeout=0.2)
        assert res.ok and (marks / "stop").exists(), "a stop is not held back for good by a wedged hook"
    finally:
        holder.communicate("", timeout=10)  # the holder exits: the kernel drops its lock
    res = hooks.run_service_hook(bp, "ledger", "core-a", "start", 1, timeout=10)
    assert res.ok and (marks / "start").exists()
    with hooks.hook_lock("ledger", "core-a", 0) as got:
        assert got, "released after the run"
