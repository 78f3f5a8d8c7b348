"""The node-loss fault's plan, on real processes and a real redis-server: what it kills, what it deletes.

A stand-in worker (a real process with ``CONTINUITY_NODE=core-a`` and a signed registration) with a child
(the replicator's place in the tree), a process listening on core-a's ledger port (its service), and data roots
for core-a and core-b. ``prepare`` must name all three processes and exactly core-a's root, touch nothing;
``inject`` kills them all and deletes that root and nothing else. The guard: a root that is not the node's own
(inside another node's root, a link) is refused at prepare, with everything left as it was.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity import registrations, task_auth
from continuity.blueprint import load_blueprint
from continuity.drills import faults, procs
from continuity.drills.probes import service_port
from continuity.drills.scenarios import Target
from continuity.drills.targets import resolve
from continuity.state import keys
from tests.failover_support import make_blueprint
from tests.helpers import wait_for

NODE = "core-a"
SLEEPER = "import time; time.sleep(300)"
WORKER = ("import subprocess, sys, time\n"
          f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
          "time.sleep(300)\n")


class Node:
    """A stand-in node core-a: worker (with a child) and a service on its ledger port, all real processes."""

    def __init__(self, tmp: Path, state: Path, rds, node_state: Path) -> None:
        self.bp = load_blueprint(make_blueprint(tmp, ("ledger",)))
        env = {**os.environ, "CONTINUITY_NODE": NODE, "CONTINUITY_STATE": str(node_state)}
        self.worker = subprocess.Popen([sys.executable, "-c", WORKER], env=env)
        self.child = wait_for(lambda: procs.descendants(self.worker.pid), timeout=20, what="the worker's child")[0]
        port = service_port(self.bp, "ledger", NODE)
        assert port
        self.service = subprocess.Popen([sys.executable, "-c", f"import socket, time\ns = socket.socket()\n"
                                         f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                         f"s.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(300)\n"])
        wait_for(lambda: procs.listeners(port), timeout=20, what="the service to listen")
        own = task_auth.role_key(task_auth.NODE, NODE)
        info = {"node": NODE, "hostname": socket.gethostname(), "pid": self.worker.pid, "started": time.time(),
                "queue": f"node.{NODE}", "worker": None}
        rds.hset(keys.nodes_registry(), NODE, json.dumps(registrations.sign(own, info)))
        self.ctx = faults.FaultContext(rds, self.bp, state / "drills")
        self.plan = resolve(Target.model_validate({"kind": "node", "nodes": [NODE]}), self.bp)

    @property
    def pids(self) -> list[int]:
        return [self.worker.pid, self.child, self.service.pid]

    def close(self) -> None:
        procs.send(self.pids, 9)
        for p in (self.worker, self.service):
            p.wait()


def write(path: Path, text: str = "data\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def node_state(state_dir: Path, monkeypatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    return state_dir


@pytest.fixture
def node(tmp_path: Path, node_state: Path, rds) -> Iterator[Node]:
    n = Node(tmp_path, node_state, rds, node_state)
    yield n
    n.close()


def test_plan_names_every_process_of_the_node_and_only_its_root(node: Node, node_state: Path) -> None:
    mine = write(node_state / "nodes" / NODE / "ledger" / "ledger.jsonl")
    theirs = write(node_state / "nodes" / "core-b" / "ledger" / "ledger.jsonl")
    key = next((node_state / "keys").rglob("*"))  # the node's key is outside its data root: it survives
    prepared = faults.prepare("node-loss", node.ctx, node.plan, {})
    assert sorted(prepared.detail["pids"][NODE]) == sorted(node.pids)
    assert prepared.detail["roots"] == {NODE: str((node_state / "nodes" / NODE).resolve())}
    assert [a["kind"] for a in prepared.rollbacks] == ["restart-process"]
    assert prepared.rollbacks[0]["node"] == NODE and prepared.rollbacks[0]["argv"][0] == sys.executable
    assert mine.exists() and all(procs.alive(p) for p in node.pids)  # prepare touches nothing

    out = prepared.inject()
    assert all(not procs.alive(p) for p in node.pids)
    assert not (node_state / "nodes" / NODE).exists()
    assert out["deleted"] == {NODE: str((node_state / "nodes" / NODE).resolve())}
    assert theirs.read_text() == "data\n" and key.exists()
    assert sorted(p.name for p in (node_state / "nodes").iterdir()) == ["core-b"]  # no trash left behind

    # the rollback brings the worker back on the empty root (and writes nothing there itself)
    node.worker.wait()
    faults.executors(node.ctx)["restart-process"](prepared.rollbacks[0])
    ledger = node.ctx.spawned_ledger
    relaunched = [int(e["pid"]) for e in procs.spawned(ledger)]
    try:
        assert len(relaunched) == 1 and procs.environ(relaunched[0]).get("CONTINUITY_NODE") == NODE
        assert not (node_state / "nodes" / NODE).exists()
    finally:
        procs.kill_spawned(ledger)


def test_a_root_inside_another_nodes_root_is_refused(tmp_path: Path, node_state: Path, rds) -> None:
    """The worker's environment points its state into core-b's root: its "root" is core-b's data. Refused."""
    inside = node_state / "nodes" / "core-b"
    victim = write(inside / "nodes" / NODE / "ledger.jsonl", "core-b's bytes\n")
    n = Node(tmp_path, node_state, rds, inside)
    try:
        with pytest.raises(faults.FaultError, match="overlaps node 'core-b'"):
            faults.prepare("node-loss", n.ctx, n.plan, {})
        assert victim.read_text() == "core-b's bytes\n" and all(procs.alive(p) for p in n.pids)
    finally:
        n.close()


def test_a_root_that_is_a_link_is_refused(tmp_path: Path, node_state: Path, rds) -> None:
    """core-a's root is a link to a directory elsewhere (the separate-hosts bed plants such links): refused."""
    elsewhere = write(tmp_path / "elsewhere" / "nodes" / NODE / "ledger.jsonl", "not core-a's disk\n")
    (node_state / "nodes").mkdir(parents=True)
    (node_state / "nodes" / NODE).symlink_to(elsewhere.parent)
    n = Node(tmp_path, node_state, rds, node_state)
    try:
        with pytest.raises(faults.FaultError, match="is a link"):
            faults.prepare("node-loss", n.ctx, n.plan, {})
        assert elsewhere.read_text() == "not core-a's disk\n" and all(procs.alive(p) for p in n.pids)
    finally:
        n.close()


def test_a_path_that_is_not_a_node_root_is_refused() -> None:
    """The shape check: only ``.../nodes/<node>`` with the node's own name is ever deleted."""
    for path, node in [(Path("/tmp/x/state"), NODE), (Path("/tmp/x/nodes/core-b"), NODE),
                       (Path("/tmp/x/nodes/.."), ".."), (Path("/tmp/x/other/core-a"), NODE)]:
        with pytest.raises(faults.FaultError, match="not the data root"):
            faults.check_loss_root(path, node, {})


def test_a_root_reached_through_a_linked_parent_is_refused(tmp_path: Path) -> None:
    """``.../nodes`` itself a link to some other directory: the root resolves elsewhere and is refused."""
    write(tmp_path / "b" / "data" / NODE / "x")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "nodes").symlink_to(tmp_path / "b" / "data")
    with pytest.raises(faults.FaultError, match="resolves to"):
        faults.check_loss_root(tmp_path / "a" / "nodes" / NODE, NODE, {})


RUNNER = """
import sys, time
from pathlib import Path
import redis
from continuity.blueprint import load_blueprint
from continuity.drills import faults
from continuity.drills.scenarios import Target
from continuity.drills.targets import resolve
bp_path, url, state, go, out = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.02)
bp = load_blueprint(bp_path)
plan = resolve(Target.model_validate({"kind": "node", "nodes": ["core-a"]}), bp)
try:
    faults.prepare("node-loss", faults.FaultContext(redis.Redis.from_url(url), bp, Path(state) / "drills"), plan, {})
    Path(out).write_text("prepared")
except faults.FaultError as exc:
    Path(out).write_text("refused: " + str(exc))
time.sleep(300)
"""


def test_a_drill_run_inside_the_nodes_own_worker_is_refused(tmp_path: Path, node_state: Path, rds,
                                                             redis_url: str) -> None:
    """Core workers consume the control queue, so a drill task can run inside the worker it targets: a node
    loss would SIGSTOP its own runner and leave the node frozen, its root neither deleted nor given back."""
    bp_path = make_blueprint(tmp_path, ("ledger",))
    go, out = tmp_path / "go", tmp_path / "out"
    mine = write(node_state / "nodes" / NODE / "ledger" / "ledger.jsonl")
    env = {**os.environ, "CONTINUITY_NODE": NODE, "CONTINUITY_STATE": str(node_state)}
    script = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {RUNNER!r}, "
              f"{str(bp_path)!r}, {redis_url!r}, {str(node_state)!r}, {str(go)!r}, {str(out)!r}])\ntime.sleep(300)\n")
    worker = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=str(Path(__file__).parents[2]))
    try:
        wait_for(lambda: procs.descendants(worker.pid), timeout=20, what="the runner inside the worker")
        own = task_auth.role_key(task_auth.NODE, NODE)
        info = {"node": NODE, "hostname": socket.gethostname(), "pid": worker.pid, "started": time.time(),
                "queue": f"node.{NODE}", "worker": None}
        rds.hset(keys.nodes_registry(), NODE, json.dumps(registrations.sign(own, info)))
        go.write_text("go")
        result = wait_for(lambda: out.exists() and out.read_text(), timeout=60, what="the runner's answer")
        assert result.startswith("refused: this drill runs inside node 'core-a'"), result
        assert mine.exists() and all(procs.alive(p) and not procs.stopped(p) for p in procs.tree(worker.pid))
    finally:
        procs.send(procs.tree(worker.pid), 9)
        worker.wait()
