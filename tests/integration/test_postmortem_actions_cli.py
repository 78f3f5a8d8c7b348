"""Postmortem action items through the real command line and a real Redis: add, approve, close, list, report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from continuity import pulse
from continuity.events import POSTMORTEM_ACTION
from continuity.signing import create_key
from tests.helpers import project_env, run_cli
from tests.report_seed import seed


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    ks = {n: create_key(tmp_path / n / "operator.ed25519", "operator", n) for n in ("alice", "bob", "carol")}
    members = "\n".join(f'    - {{name: {n}, key: "{ks[n].public.line()}"}}' for n in ("alice", "bob"))
    stewards = tmp_path / "stewards.yml"
    stewards.write_text(f"stewardship:\n  group: circle\n  approvals_needed: 1\n  members:\n{members}\n")
    e = project_env(redis_url, tmp_path / "state", CONTINUITY_STEWARDS=str(stewards), COLUMNS="200")
    for name in ("CONTINUITY_STATE", "CONTINUITY_PULSE_FILE"):  # where seeded records put their pulse events
        monkeypatch.setenv(name, e[name])
    return {**e, **{f"KEY_{n}": str(k.path) for n, k in ks.items()}}


def as_(env: dict[str, str], who: str) -> dict[str, str]:
    return {**env, "CONTINUITY_OPERATOR_KEY": env[f"KEY_{who}"]}


@pytest.fixture
def seeded(rds, env: dict[str, str]) -> dict:
    return seed(rds, time.time())


def test_an_item_is_added_approved_closed_and_its_trail_is_in_the_pulse(env, seeded) -> None:
    r = run_cli("drill", "action", "add", seeded["drills"][0], "--title", "page on replication lag", "--owner", "carol",
                "--due", "14d", "--json", env=as_(env, "carol"))
    assert r.returncode == 0, r.stderr
    item = json.loads(r.stdout)
    assert item["owner"] == "carol" and item["status"] == "open" and not item["overdue"]
    r = run_cli("drill", "action", "close", item["id"], "--note", "done", env=as_(env, "carol"))
    assert r.returncode == 2 and "not a member of steward group 'circle'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("drill", "action", "approve", item["id"], "--note", "right fix", env=as_(env, "bob"))
    assert r.returncode == 0, r.stderr
    r = run_cli("drill", "action", "close", item["id"], "--note", "PR 42", "--json", env=as_(env, "alice"))
    assert r.returncode == 0, r.stderr
    closed = json.loads(r.stdout)
    assert closed["status"] == "closed" and closed["closed"]["name"] == "alice"
    assert [a["name"] for a in closed["approvals"]] == ["bob"]
    assert json.loads(run_cli("drill", "action", "list", "--json", env=env).stdout) == []
    listed = json.loads(run_cli("drill", "action", "list", "--all", "--json", env=env).stdout)
    assert [i["id"] for i in listed] == [item["id"]]
    trail = [(e["data"]["op"], e["data"]["key_id"]) for e in pulse.read_events(Path(env["CONTINUITY_PULSE_FILE"]))
             if e.get("kind") == POSTMORTEM_ACTION.wire]
    assert [op for op, _ in trail] == ["add", "approve", "close"]
    r = run_cli("drill", "action", "close", item["id"], "--note", "again", env=as_(env, "bob"))
    assert r.returncode == 2 and "already closed" in r.stderr


def test_overdue_items_show_in_the_report(env, rds, seeded) -> None:
    fo = seeded["failovers"][0]
    late = json.loads(run_cli("drill", "action", "add", fo, "--title", "fix fencing doc", "--owner", "dan",
                              "--due", "2020-01-31", "--json", env=as_(env, "carol")).stdout)
    run_cli("drill", "action", "add", fo, "--title", "later", "--owner", "eve", "--due", "30d",
            env=as_(env, "carol"))
    r = run_cli("report", "--json", env=env)
    assert r.returncode == 0, r.stderr
    section = json.loads(r.stdout)["postmortem_actions"]
    assert section["open"] == 2 and [i["id"] for i in section["overdue"]] == [late["id"]]
    table = run_cli("report", env=env)
    assert f"OVERDUE action {late['id']} ({fo}): fix fencing doc — owner dan, due 2020-01-31" in table.stdout
    # a due date pushed out straight in Redis does not verify: the item does not count at all (and says so)
    field = f"{late['id']}#0"
    raw = json.loads(rds.hget("continuity:postmortem-actions", field))
    raw["body"]["due"] = 4_000_000_000
    rds.hset("continuity:postmortem-actions", field, json.dumps(raw))
    section = json.loads(run_cli("report", "--json", env=env).stdout)["postmortem_actions"]
    assert section["open"] == 1 and section["overdue"] == []


def test_bad_input_is_one_line(env, seeded) -> None:
    r = run_cli("drill", "action", "add", seeded["drills"][0], "--title", "t", "--owner", "o", "--due", "someday",
                env=as_(env, "carol"))
    assert r.returncode == 2 and "--due 'someday'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("drill", "action", "add", "no-such-drill", "--title", "t", "--owner", "o", "--due", "1d",
                env=as_(env, "carol"))
    assert r.returncode == 2 and "no drill or failover record 'no-such-drill'" in r.stderr
    r = run_cli("drill", "action", "approve", "A-nope", env=as_(env, "bob"))
    assert r.returncode == 2 and "no action item 'A-nope'" in r.stderr
