"""Issue 11: a switchover needs an operator's mandate, checked by the worker that runs each step.

Failover steps accept any trusted role's envelope (chains move from node to node), so the envelope here is a
valid control-key one: what is refused is a switchover whose context carries no operator mandate, one signed
by a key no file trusts, one made for another record, or a context its record does not name. The record is
opened in Redis the way the launcher does; the demote message is pushed by hand onto core-a's queue and a
real worker (core-a) runs or refuses it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from continuity import pulse, task_auth
from continuity.blueprint import load_blueprint
from continuity.failover import records
from continuity.failover.mandate import grant
from continuity.signing import create_key, load_key
from tests.helpers import ROOT, operator_env
from tests.integration.test_task_auth import outcome, push

pytestmark = pytest.mark.slow
TASK = "continuity.failover.demote"


@pytest.fixture
def fleet(start_worker, worker_env, state_dir: Path, monkeypatch):
    start_worker("core-a")
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    return worker_env


def open_switchover(rds, mandate_for=None, candidate: str = "core-b") -> tuple[str, dict]:
    """A switchover record of ledger (core-a -> core-b) and its attempt-0 context, as the launcher writes them."""
    now = time.time()
    rid = records.new_record_id("ledger", now)
    plan = {"service": "ledger", "kind": "switchover", "candidate": "core-b", "old_primary": "core-a",
            "expected_epoch": 0, "action": "failover"}
    records.open_record(rds, plan, {"reason": "switchover"}, "test", now, record_id=rid)
    ctx = {"record_id": rid, "service": "ledger", "kind": "switchover", "candidate": candidate, "fallbacks": [],
           "old_primary": "core-a", "expected_epoch": 0, "epoch": 1, "attempt": 0, "not_before": None,
           "steps": ["demote", "fence", "prepare", "promote", "repoint", "verify", "record"]}
    records.set_attempt(rds, rid, 0, "core-b", 0, ctx)
    if mandate_for is not None:
        key, record = mandate_for
        ctx["mandate"] = grant(key, record or rid, "ledger", "switchover", "core-b", "core-a", now).to_dict()
    return rid, ctx


def send(rds, ctx: dict) -> dict:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    tid = str(uuid.uuid4())
    env = task_auth.seal(task_auth.role_key(task_auth.CONTROL), TASK, tid, [ctx], {}, time.time(), 60).to_dict()
    return outcome(rds, push(rds, TASK, [ctx], {}, env, tid, queue=bp.queue("core-a")))


def rejected(state: Path) -> list[str]:
    return [e["data"]["reason"] for e in pulse.read_events(state / "pulse_history.jsonl")
            if e["kind"].endswith("task.rejected") and e["data"]["task"] == TASK]


def test_forged_or_unsigned_switchover_is_refused(fleet, rds, state_dir: Path, tmp_path: Path) -> None:
    operator = load_key(Path(operator_env(state_dir)["CONTINUITY_OPERATOR_KEY"]), "operator")  # trusted
    stranger = create_key(tmp_path / "stranger.ed25519", "operator", "mallory")  # no file trusts it
    cases = [
        (open_switchover(rds)[1], "NoMandate", "needs an operator's mandate"),
        (open_switchover(rds, (stranger, None))[1], "NoMandate", "not a trusted operator key"),
        (open_switchover(rds, (operator, "ledger-0-someother"))[1], "NoMandate", "made for another failover"),
        (open_switchover(rds, (operator, None), candidate="sat-1")[1], "InvalidContext", "is not the one attempt 0"),
    ]
    for ctx, exc_type, why in cases:
        res = send(rds, ctx)
        assert res["status"] == "FAILURE" and res["result"]["exc_type"] == exc_type, res
        assert why in res["result"]["exc_message"][0], res
    assert len(rejected(state_dir)) == len(cases)
    # the same switchover with its operator's mandate gets past the checks (and is the old primary's to run)
    _rid, ctx = open_switchover(rds, (operator, None))
    res = send(rds, ctx)
    assert res["result"] is None or res["result"].get("exc_type") not in ("NoMandate", "InvalidContext"), res
    assert len(rejected(state_dir)) == len(cases)
