"""Signed control-plane messages, against a real redis-server and a real worker.

The attack of issue 11: a raw Celery JSON message pushed onto ``continuity.control`` made a worker run
``continuity.drills.run``. Each message here is pushed onto the queue by hand (LPUSH of the kombu envelope),
as an attacker with Redis access would; the drill is a dry run, so a message that gets through returns a plan
(SUCCESS) and one that is refused fails with the reason, a ``task.rejected`` pulse event naming it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from continuity import pulse, task_auth
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.slow
TASK = "continuity.drills.run"
QUEUE = "continuity.control"
SCENARIO = "service-crash"


def push(rds: Any, task: str, args: list, kwargs: dict, envelope: dict | None = None,
         task_id: str | None = None, queue: str = QUEUE) -> str:
    """LPUSH one Celery protocol-2 message onto ``queue``, the way kombu's Redis transport stores it."""
    tid = task_id or str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": tid, "root_id": tid, "parent_id": None, "group": None,
               "retries": 0, "eta": None, "expires": None, "origin": "attacker", "argsrepr": repr(args),
               "kwargsrepr": repr(kwargs), "ignore_result": False}
    if envelope is not None:
        headers[task_auth.HEADER] = envelope
    body = json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    message = {"body": base64.b64encode(body.encode()).decode(), "content-encoding": "utf-8",
               "content-type": "application/json", "headers": headers,
               "properties": {"correlation_id": tid, "reply_to": "", "delivery_mode": 2, "priority": 0,
                              "delivery_info": {"exchange": queue, "routing_key": queue},
                              "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}}
    rds.lpush(queue, json.dumps(message))
    return tid


def outcome(rds: Any, tid: str) -> dict:
    def final() -> dict | None:
        raw = rds.get(f"celery-task-meta-{tid}")
        res = json.loads(raw) if raw else None
        return res if res and res["status"] in ("SUCCESS", "FAILURE") else None

    return wait_for(final, timeout=90, what=f"the result of {tid}")


def rejections(state: Path, tid: str) -> list[dict]:
    return [e for e in pulse.read_events(state / "pulse_history.jsonl")
            if e["kind"].endswith("task.rejected") and e["data"].get("task_id") == tid]


@pytest.fixture
def fleet(start_worker, worker_env, state_dir, monkeypatch):
    start_worker("core-a")
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))  # role keys below are made in the fleet's state dir
    return worker_env


def test_unsigned_and_wrong_role_rejected_signed_runs(fleet, rds, state_dir: Path) -> None:
    kwargs = {"dry_run": True}
    unsigned = push(rds, TASK, [SCENARIO], kwargs)
    res = outcome(rds, unsigned)
    assert res["status"] == "FAILURE", res
    assert res["result"]["exc_type"] == "Unauthenticated" and "no signature envelope" in res["result"]["exc_message"][0]
    assert wait_for(lambda: rejections(state_dir, unsigned), what="the task.rejected event")

    node_key = task_auth.role_key(task_auth.NODE, "core-b")  # a node's key, trusted as a node's
    tid = str(uuid.uuid4())
    env = task_auth.seal(node_key, TASK, tid, [SCENARIO], kwargs, time.time(), 60).to_dict()
    res = outcome(rds, push(rds, TASK, [SCENARIO], kwargs, env, tid))
    assert res["status"] == "FAILURE" and "a node key" in res["result"]["exc_message"][0], res
    assert rejections(state_dir, tid)[0]["data"]["signer"] == node_key.key_id

    control = task_auth.role_key(task_auth.CONTROL)
    tid = str(uuid.uuid4())
    env = task_auth.seal(control, TASK, tid, [SCENARIO], kwargs, time.time(), 60).to_dict()
    forged = push(rds, TASK, [SCENARIO], {"dry_run": False}, env, tid)  # the signature covers kwargs
    res = outcome(rds, forged)
    assert res["status"] == "FAILURE" and "does not match" in res["result"]["exc_message"][0], res

    tid = str(uuid.uuid4())
    env = task_auth.seal(control, TASK, tid, [SCENARIO], kwargs, time.time(), 60).to_dict()
    res = outcome(rds, push(rds, TASK, [SCENARIO], kwargs, env, tid))
    assert res["status"] == "SUCCESS", res
    assert res["result"]["scenario"] == SCENARIO and not rejections(state_dir, tid)


def test_messages_sent_through_the_app_are_signed(fleet, rds) -> None:
    """The publish hook signs what a fleet process sends (beat, the CLI): no hand-made envelope needed."""
    code = (f"from workers.app import app; r = app.send_task({TASK!r}, args=[{SCENARIO!r}], "
            f"kwargs={{'dry_run': True}}, queue={QUEUE!r}); print(r.get(timeout=90)['scenario'])")
    out = subprocess.run([sys.executable, "-c", code], env=fleet, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == SCENARIO, out.stderr[-2000:]


def test_a_replayed_signed_message_is_refused(fleet, rds, state_dir: Path) -> None:
    """A captured signed message pushed again (same envelope, same id) after it ran: refused as a replay."""
    kwargs = {"dry_run": True}
    control = task_auth.role_key(task_auth.CONTROL)
    tid = str(uuid.uuid4())
    env = task_auth.seal(control, TASK, tid, [SCENARIO], kwargs, time.time(), 60).to_dict()
    res = outcome(rds, push(rds, TASK, [SCENARIO], kwargs, env, tid))
    assert res["status"] == "SUCCESS", res
    rds.delete(f"celery-task-meta-{tid}")  # so the outcome read next is the replay's
    push(rds, TASK, [SCENARIO], kwargs, env, tid)
    res = outcome(rds, tid)
    assert res["status"] == "FAILURE" and "replayed" in res["result"]["exc_message"][0], res
    assert "replayed" in rejections(state_dir, tid)[0]["data"]["reason"]
