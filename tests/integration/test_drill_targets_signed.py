"""Issue 11: a drill kills only the pid a node vouched for, against a real redis-server and real processes.

The attack: ``HSET continuity:nodes core-a '{"pid": <any pid>}'`` and the next ``node-kill`` drill sent that
process SIGKILL. The victim here is a real process that even carries ``CONTINUITY_NODE=core-a`` in its
environment (so the environment check alone cannot save it): only the signature on the registration does.
The fault is prepared and injected through :func:`continuity.drills.faults.prepare`, as the runner does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity import registrations, task_auth
from continuity.blueprint import load_blueprint
from continuity.drills import faults, procs
from continuity.drills.probes import worker_pid
from continuity.drills.scenarios import Target
from continuity.drills.targets import resolve
from continuity.state import keys
from tests.helpers import ROOT

NODE = "core-a"


@pytest.fixture
def victim(state_dir: Path, monkeypatch) -> Iterator[subprocess.Popen]:
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    env = {**os.environ, "CONTINUITY_NODE": NODE}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], env=env)
    yield proc
    proc.kill()
    proc.wait()


def registration(pid: int) -> dict:
    return {"node": NODE, "hostname": "h", "pid": pid, "started": time.time(), "queue": f"node.{NODE}",
            "worker": None}


def node_kill(rds, state: Path) -> faults.Prepared:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    plan = resolve(Target.model_validate({"kind": "node", "nodes": [NODE]}), bp)
    return faults.prepare("node-kill", faults.FaultContext(rds, bp, state), plan, {})


def test_planted_pid_is_not_killed(rds, victim: subprocess.Popen, state_dir: Path) -> None:
    task_auth.role_key(task_auth.NODE, NODE)  # the node's key exists and is trusted: only its signature counts
    other = task_auth.role_key(task_auth.NODE, "core-b")
    planted = [registration(victim.pid),  # a plain HSET
               registrations.sign(other, registration(victim.pid))]  # signed, but by another node's key
    for info in planted:
        rds.hset(keys.nodes_registry(), NODE, json.dumps(info))
        assert worker_pid(rds, NODE) is None
        with pytest.raises(faults.FaultError, match="no live registered worker"):
            node_kill(rds, state_dir)
    assert victim.poll() is None and procs.alive(victim.pid)


def test_the_nodes_own_signed_registration_is_honoured(rds, victim: subprocess.Popen, state_dir: Path) -> None:
    """The other half: the check is a signature check, not a refusal of everything."""
    own = task_auth.role_key(task_auth.NODE, NODE)
    rds.hset(keys.nodes_registry(), NODE, json.dumps(registrations.sign(own, registration(victim.pid))))
    assert worker_pid(rds, NODE) == victim.pid
    moved = registrations.sign(own, registration(victim.pid))  # core-a's entry copied under core-b
    rds.hset(keys.nodes_registry(), "core-b", json.dumps(moved))
    assert worker_pid(rds, "core-b") is None


def test_signed_pid_of_a_process_that_is_not_the_node_is_not_killed(rds, state_dir: Path, monkeypatch) -> None:
    """A signed but stale registration whose pid now belongs to another program (no CONTINUITY_NODE=core-a)."""
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                             env={k: v for k, v in os.environ.items() if k != "CONTINUITY_NODE"})
    try:
        own = task_auth.role_key(task_auth.NODE, NODE)
        rds.hset(keys.nodes_registry(), NODE, json.dumps(registrations.sign(own, registration(other.pid))))
        assert worker_pid(rds, NODE) is None
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
