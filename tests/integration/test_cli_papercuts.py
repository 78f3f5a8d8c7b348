"""What a new user tripped on, each checked through the real command line at 80 columns against a real Redis."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from continuity.state import controls
from tests.helpers import ROOT, project_env, run_cli
from tests.report_seed import seed

REPR = re.compile(r"\[\(|\['|\{'|': |\d+\.\d{5,}")  # [(200, 200)], ['core-a'], {'rto': ...}, 26.070788145065308


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    e = project_env(redis_url, tmp_path / "state", COLUMNS="80", CONTINUITY_ENV="test")
    for name in ("CONTINUITY_STATE", "CONTINUITY_PULSE_FILE"):  # where seeded records put their pulse events
        monkeypatch.setenv(name, e[name])
    return e


@pytest.fixture
def seeded(rds, env: dict[str, str]) -> dict:
    return seed(rds, time.time())


def test_not_found_is_the_same_usage_error_everywhere(seeded, env: dict[str, str]) -> None:
    for args in (["failover", "show", "nope"], ["drill", "postmortem", "nope"], ["drill", "report", "nope"],
                 ["drill", "run", "nope", "--dry-run"]):
        r = run_cli(*args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert "nope" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_failover_show_says_why_it_escalated(seeded, env: dict[str, str]) -> None:
    r = run_cli("failover", "show", seeded["failovers"][1], env=env)
    assert r.returncode == 0, r.stderr
    assert "escalated: every candidate failed: promote hook exited 1" in r.stdout


def test_drill_output_has_no_python_reprs_or_long_floats(seeded, env: dict[str, str], rds) -> None:
    r = run_cli("drill", "report", seeded["drills"][0], env=env)  # MTTR 6.123456 as measured
    assert r.returncode == 0, r.stderr
    assert "measured 6.1s" in r.stdout and "expected ≤ 10.0s" in r.stdout
    assert not REPR.search(r.stdout), r.stdout
    r = run_cli("drill", "run", "primary-node-outage", "--dry-run", env=env)
    assert not REPR.search(r.stdout), r.stdout
    assert "nodes core-a; services ledger, reports" in r.stdout


def test_dry_run_inside_a_cool_down_says_until_when(rds, env: dict[str, str]) -> None:
    now = time.time()
    controls.set_cooldown(rds, "ledger", now + 120, now)
    r = run_cli("drill", "run", "primary-node-outage", "--dry-run", env=env)
    assert r.returncode == 2
    until = time.strftime("%H:%M", time.gmtime(now + 120))
    assert re.search(rf"ledger in failover cool-down until {until}:\d\dZ", r.stdout + r.stderr), r.stdout + r.stderr


def test_names_people_type_are_not_cut_at_80_columns(seeded, env: dict[str, str], tmp_path: Path) -> None:
    r = run_cli("drill", "list", env=env)
    assert r.returncode == 0
    names = json.loads(run_cli("drill", "list", "--json", env=env).stdout)
    for sc in names:
        assert re.search(rf"^{re.escape(sc['name'])}\s", r.stdout, re.M), sc["name"]
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stderr
    for name in ("core-a", "core-b", "sat-1", "keystore", "ledger", "notifier", "reports", "telemetry"):
        assert re.search(rf"\b{name}\b", status.stdout), name
    r = run_cli("drill", "report", env=env)
    for did in seeded["drills"]:
        assert did in r.stdout, did
    repo = tmp_path / "repo"
    benv = {**env, "CONTINUITY_PASSWORD": "pw", "CONTINUITY_REPOSITORY": str(repo)}
    assert run_cli("backup", "init", env=benv).returncode == 0
    data = ROOT / "examples" / "data"
    for name in ("sat-1-telemetry-archive", "core-a-ledger-nightly"):
        assert run_cli("backup", "snapshot", str(data / "files"), "--set", name, env=benv).returncode == 0
    listing = run_cli("backup", "list", env=benv)
    ids = [s["short_id"] for s in json.loads(run_cli("backup", "list", "--json", env=benv).stdout)]
    for text in ("sat-1-telemetry-archive", "core-a-ledger-nightly", *ids):
        assert text in listing.stdout, text


def test_restore_takes_a_set_in_a_shared_repository(env: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    benv = {**env, "CONTINUITY_PASSWORD": "pw", "CONTINUITY_REPOSITORY": str(repo)}
    assert run_cli("backup", "init", env=benv).returncode == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "a.txt").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "b.txt").write_text("b")
    assert run_cli("backup", "snapshot", str(tmp_path / "a"), "--set", "set-a", env=benv).returncode == 0
    assert run_cli("backup", "snapshot", str(tmp_path / "b"), "--set", "set-b", env=benv).returncode == 0
    r = run_cli("backup", "restore", "latest", "--set", "set-a", "--target", str(tmp_path / "out"), env=benv)
    assert r.returncode == 0, r.stderr
    restored = {p.name for p in (tmp_path / "out").rglob("*.txt")}
    assert restored == {"a.txt"}  # not set-b's, although it is the repository's newest
    r = run_cli("backup", "restore", "latest", "--set", "nope", "--target", str(tmp_path / "o2"), env=benv)
    assert r.returncode == 2 and "no snapshot of set 'nope'" in r.stderr


def test_backup_verify_drill_reads_as_text(env: dict[str, str], tmp_path: Path) -> None:
    benv = {**env, "CONTINUITY_PASSWORD": "pw", "CONTINUITY_REPOSITORY": str(tmp_path / "repo")}
    assert run_cli("backup", "init", env=benv).returncode == 0
    ledger = ROOT / "examples" / "data" / "ledger.jsonl"
    assert run_cli("backup", "snapshot", "--ledger", str(ledger), env=benv).returncode == 0
    r = run_cli("backup", "verify", "--drill", "latest", env=benv)
    assert r.returncode == 0, r.stderr
    records = sum(1 for line in ledger.read_text().splitlines() if line.strip())
    assert f"ledgers: {records}/{records} records" in r.stdout and not REPR.search(r.stdout), r.stdout


def test_report_default_is_a_table_and_markdown_is_markdown(seeded, env: dict[str, str]) -> None:
    table = run_cli("report", env=env)
    md = run_cli("report", "--markdown", env=env)
    assert table.returncode == md.returncode == 0
    assert md.stdout.startswith("# Continuity scorecard") and "|---|" in md.stdout
    assert "# Continuity scorecard" not in table.stdout and "scorecard — overall" in table.stdout
    assert run_cli("report", "--json", "--markdown", env=env).returncode == 2


def test_failover_postmortem_names_the_fleets_environment(seeded, env: dict[str, str]) -> None:
    r = run_cli("drill", "postmortem", seeded["failovers"][0], env={**env, "CONTINUITY_ENV": "staging"})
    assert r.returncode == 0, r.stderr
    text = Path(r.stdout.strip()).read_text()
    assert "| Environment | staging |" in text and "production" not in text
