"""One restarter per node: `continuity up`'s supervisor leaves a node a drill holds down, and restarts it after.

Real child processes (``sleep``) stand in for workers: what is tested is the supervisor's decision
and the hold's lifetime (its drill process alive, its deadline ahead), not Celery.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity import supervision
from continuity.blueprint import load_blueprint
from continuity.drills import procs
from continuity.runtime import Child, Runtime
from tests.helpers import ROOT, wait_for


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def runtime(tmp_path: Path, state: Path) -> Iterator[Runtime]:
    rt = Runtime(load_blueprint(ROOT / "ops" / "blueprint.yml"))
    rt.env = dict(os.environ)
    for node in ("core-a", "core-b"):
        child = Child(f"worker:{node}", ["sleep", "600"], tmp_path / f"{node}.log", node=node)
        child.start(rt.env)
        rt.children.append(child)
    supervision.claim()
    yield rt
    for child in rt.children:
        child.signal_group(9)
        if child.popen is not None:
            child.popen.wait(10)
    supervision.release()


def kill(child: Child) -> int:
    assert child.popen is not None
    pid = child.popen.pid
    child.signal_group(9)
    wait_for(lambda: child.popen.poll() is not None, timeout=10, what="the child to die")  # type: ignore[union-attr]
    return pid


def test_a_held_node_is_left_down_until_the_drill_lifts_the_hold(runtime: Runtime) -> None:
    a, b = runtime.children
    supervision.hold("core-a", 120, "node-kill drill")
    old_a, old_b = kill(a), kill(b)
    assert runtime.supervise_once() == ["worker:core-b"], "only the node no drill holds is restarted"
    assert not a.alive() and b.alive() and b.popen.pid != old_b  # type: ignore[union-attr]
    assert runtime.supervise_once() == []
    assert supervision.unhold("core-a")
    assert runtime.supervise_once() == ["worker:core-a"]
    assert a.alive() and a.popen.pid != old_a and a.restarts == 1  # type: ignore[union-attr]


def test_a_hold_of_a_dead_drill_or_past_its_deadline_is_void(runtime: Runtime) -> None:
    a, _ = runtime.children
    drill = subprocess.Popen([sys.executable, "-c", "pass"])
    drill.wait()
    supervision.hold("core-a", 120, "a drill that crashed", pid=drill.pid)
    assert supervision.held("core-a") is None
    kill(a)
    assert runtime.supervise_once() == ["worker:core-a"], "a crashed drill must not leave the node down"
    supervision.hold("core-a", 0.5, "expired")
    hold = supervision.held("core-a", now=0.0)
    assert hold is not None and hold.pid == os.getpid()
    assert supervision.held("core-a", now=hold.until) is None


def test_the_supervisor_is_known_only_while_it_runs(state: Path) -> None:
    assert supervision.supervisor() is None
    supervision.claim()
    assert supervision.supervisor() == os.getpid()
    supervision.release(pid=os.getpid() + 1)  # not ours to withdraw
    assert supervision.supervisor() == os.getpid()
    supervision.release()
    assert supervision.supervisor() is None
    with pytest.raises(ValueError):
        supervision.hold("../etc", 1, "not a node id")


def test_stopping_the_fleet_also_stops_what_it_did_not_start_itself(state: Path, tmp_path: Path) -> None:
    """A sample instance forked by a hook whose pid file is gone is still found (by its state dir) and stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env.update({"CONTINUITY_STATE": str(state), "CONTINUITY_ROOT": str(ROOT)})
    from continuity.redisd import free_port

    r = subprocess.run([sys.executable, "-m", "continuity.sample.ledger_service", "start", "--service", "ledger",
                        "--node", "core-a", "--port", str(free_port()), "--epoch", "1"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pidfile = state / "nodes" / "core-a" / "ledger" / "service.pid"
    pid = int(pidfile.read_text())
    pidfile.unlink()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # continuity.sample.ledger_service"],
                             env={**env, "CONTINUITY_STATE": str(tmp_path / "another-fleet")})
    try:
        assert procs.fleet_processes(state) == [pid]
        rt = Runtime(load_blueprint(ROOT / "ops" / "blueprint.yml"))
        rt.env = env
        rt.stop(timeout=1)
        assert not procs.alive(pid)
        assert other.poll() is None, "another fleet's process is not ours to stop"
    finally:
        other.kill()
        other.wait()
