"""End to end: a candidate that cannot start the service — the next candidate takes over, or a human is called."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.state import keys
from tests.failover_support import Fleet, pulse_events
from tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.slow


def _gated(tmp_path: Path, state_dir: Path, redis_url: str, spawn, start_worker, third: bool,
           **policy: str) -> Fleet:
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "fail-core-b").touch()  # core-b's start hook will fail
    prefix = ["{python}", "-m", "tests.failover_gatehook", str(gate), "{node}", "{epoch}", "--"]
    f = Fleet(tmp_path, state_dir, redis_url, spawn, start_worker, start_prefix=prefix, third_node=third,
              **policy)
    f.gate = gate  # type: ignore[attr-defined]
    return f


@pytest.fixture
def make_gated(tmp_path: Path, state_dir: Path, redis_url: str, spawn, start_worker) -> Iterator:
    made: list[Fleet] = []

    def make(third: bool, **policy: str) -> Fleet:
        made.append(_gated(tmp_path, state_dir, redis_url, spawn, start_worker, third, **policy))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_failed_promote_moves_on_to_the_next_candidate(make_gated) -> None:
    fleet = make_gated(third=True)
    fleet.start(nodes=("core-a", "core-b", "core-c"))
    fleet.workers["core-a"].kill9()
    fleet.kill_service("ledger", "core-a")
    (rec,) = fleet.wait_records(1)
    assert rec["outcome"] == "succeeded", json.dumps(rec, indent=1)
    assert [a["candidate"] for a in rec["attempts"]] == ["core-b", "core-c"]
    (bad,) = [s for s in rec["steps"] if s["attempt"] == 0 and s["step"] == "promote"]
    assert bad["ok"] is False and bad["node"] == "core-b" and "exited 3" in bad["error"]
    assert rec["new_primary"] == "core-c"
    # each attempt fenced its own epoch: the failed candidate's epoch 2 is dead, core-c serves epoch 3
    health = fleet.wait_primary("ledger", "core-c", epoch=3)
    assert health["epoch"] == 3
    assert [e["data"]["next"] for e in pulse_events(fleet.state, "failover.retry")] == ["core-c"]
    assert not fleet.client.hgetall(keys.incidents())


def test_no_candidate_left_escalates_then_the_operator_forces_it(make_gated) -> None:
    # the detector retries on its own once the cool-down is over; on a loaded machine that can come before
    # the operator's command below, so the cool-down here outlasts the test: the rung under test is the human
    fleet = make_gated(third=False, failover_cooldown="600s")
    fleet.start()
    fleet.workers["core-a"].kill9()
    fleet.kill_service("ledger", "core-a")
    (rec,) = fleet.wait_records(1)
    assert rec["outcome"] == "escalated", json.dumps(rec, indent=1)
    assert "no other candidate is alive" in rec["finish_detail"]["reason"]
    status = json.loads(run_cli("failover", "status", "--json", env=fleet.env).stdout)
    assert "failover-ledger" in status["incidents"]
    assert [e["service"] for e in pulse_events(fleet.state, "failover.escalated")] == ["ledger"]

    # rung 3 of the ladder: the operator fixes core-b and forces the failover; the incident closes
    (fleet.gate / "fail-core-b").unlink()  # type: ignore[attr-defined]
    r = run_cli("failover", "failover", "ledger", "--to", "core-b", "--force", env=fleet.env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    fleet.wait_primary("ledger", "core-b")
    wait_for(lambda: not fleet.client.hexists(keys.incidents(), "failover-ledger"), timeout=10,
             what="the incident to close")
    hist = json.loads(run_cli("failover", "history", "--json", env=fleet.env).stdout)
    assert [h["outcome"] for h in hist] == ["succeeded", "escalated"] and hist[0]["kind"] == "forced"
