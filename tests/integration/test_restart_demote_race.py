"""Local restart racing a demote, 100 times, with the real sample service: never two live instances on one node.

The issue's incident: a local restart and a demote 0.3 s apart left two ledger processes on
one node, and one of them acknowledged a seq already stored. Here a real node agent (real
Redis, the real hook runner, the sample service's real start and stop hooks) restarts the
service in place while a demote arrives, either from the agent itself (its watchdog: the same
hook lane) or from another thread the way a failover's demote step in a worker's pool would
(the node's hook lock is the only thing between them); every third round the racer is a second
start instead (a drill's restart-service rollback). A writer keeps posting to the
service's port throughout.

Three checks, all on what really ran: a watcher counts the service's live instances on the node
from /proc (each instance is a session leader forked by its start hook) and must never see
two; no instance ever had to wait for the data directory's lock (the service logs it); and the
ledger's records, each naming the instance that accepted it, must show no two instances
accepting in overlapping windows. The agent's clock is a fake one advanced by the
test (it only decides *when* the watchdog fires); the random pause before each demote only
varies where in the start hook it lands.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from continuity.blueprint import load_blueprint
from continuity.detect.agent import Agent
from continuity.drills import procs
from continuity.services.hooks import run_service_hook, service_port
from continuity.services.probes import ProbeResult
from tests.failover_support import accept_overlaps, accepted_windows, make_blueprint
from tests.helpers import Background, wait_for

# 100 rounds of real hook processes: ~2.5 min at load 6, ~6 min with a CPU hog on both cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROUNDS = 100
NODE = "core-a"
WAIT = 60.0  # bound on one round's hooks on a loaded machine; never a margin a correct run depends on


def instances(state: Path) -> list[int]:
    """Live instances of the ledger on NODE: forked by `ledger_service start`, each leads its own session."""
    out = []
    for pid in procs.fleet_processes(state):
        argv = procs.cmdline(pid)
        if "continuity.sample.ledger_service" in argv and "--node" in argv and argv[argv.index("--node") + 1] == NODE:
            try:
                stat = (procs.PROC / str(pid) / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[3]) == pid:  # session id == pid: the instance, not its hook
                out.append(pid)
    return out


class Watcher(Background):
    """Samples the live instances continuously; remembers the most seen at once."""

    def __init__(self, state: Path) -> None:
        super().__init__()
        self.state = state
        self.most: list[int] = []
        self.samples = 0

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            seen = instances(self.state)
            self.samples += 1
            if len(seen) > len(self.most):
                self.most = seen
            stop.wait(0.005)  # a scan reads every process's command line: leave the hooks some CPU


class Writer(Background):
    """Posts ever-increasing seqs to the service's port; the ledger records who accepted each."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.acked = 0

    def loop(self, stop: threading.Event) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            req = urllib.request.Request(f"http://127.0.0.1:{self.port}/records", method="POST",
                                         data=json.dumps({"seq": seq}).encode())
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    self.acked += resp.status == 200
            except OSError:
                stop.wait(0.005)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def agent(tmp_path: Path, redis_url: str, rds: Any, state_dir: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Agent, Clock]]:
    bp_path = make_blueprint(tmp_path, ("ledger",), restart_after_failures="1", max_local_restarts="100",
                             restart_window="10s")
    for name, value in {"CONTINUITY_REDIS_URL": redis_url, "CONTINUITY_STATE": str(state_dir),
                        "CONTINUITY_PULSE_FILE": str(state_dir / "pulse_history.jsonl"),
                        "CONTINUITY_BLUEPRINT": str(bp_path),
                        # the test drives the lease by hand: the instance must not also watch it and stop itself
                        "CONTINUITY_SAMPLE_LEASE_WATCH": "0"}.items():
        monkeypatch.setenv(name, value)
    clock = Clock()
    a = Agent(load_blueprint(bp_path), NODE, rds, b"race-test-key", clock=clock, hook_timeout=20.0)
    yield a, clock
    a.demote_all("test over")
    run_service_hook(a.bp, "ledger", NODE, "stop", None)


def test_local_restart_racing_a_demote_never_leaves_two_instances(agent, state_dir: Path) -> None:
    a, clock = agent
    rnd = random.Random(9)
    a.beat_once()  # bootstrap: the ledger starts here at epoch 1
    assert a.wait_idle(WAIT)
    wait_for(lambda: instances(state_dir), timeout=WAIT, what="the first instance")
    port = service_port(a.bp, "ledger", NODE)
    assert port is not None
    with Watcher(state_dir) as watcher, Writer(port) as writer:
        for i in range(ROUNDS):
            restart = threading.Thread(target=a.recover_once, args=({"ledger": ProbeResult(False, "down")},))
            restart.start()
            time.sleep(rnd.uniform(0.0, 0.4))  # lands the demote anywhere in the restart's start hook
            if i % 3 == 0:
                clock.t += a.bp.policy.lease_ttl  # the agent's watchdog: renewal overdue -> demote on the lane
                a.check_fence()
                a.beat_once()  # the lease is still ours: reclaim, queued behind the demote
            else:
                # a failover's demote step or a drill's restart-service rollback, run by a pool process of the
                # node's worker: only the hook lock of (node, service) stands between it and the agent's start
                which = "demote" if i % 3 == 1 else "start"
                run_service_hook(a.bp, "ledger", NODE, which, 1, timeout=WAIT)
            restart.join(WAIT)
            assert a.wait_idle(WAIT), f"round {i}: hooks still running"
            a.beat_once()
            assert a.wait_idle(WAIT)
            live = instances(state_dir)
            assert len(live) <= 1 and len(watcher.most) <= 1, f"round {i}: two live instances {watcher.most or live}"
    assert watcher.samples > ROUNDS and writer.acked > 0
    # an instance started while another lived waits for the data directory and says so in the service's log
    log = (state_dir / "nodes" / NODE / "ledger" / "service.log").read_text()
    assert "waiting for the instance" not in log, "a second instance was started beside a live one"
    windows = accepted_windows(state_dir, "ledger")
    assert len(windows) > ROUNDS / 2, "many instances took writes one after the other"
    assert accept_overlaps(windows) == []
    lines = (state_dir / "nodes" / NODE / "ledger" / "ledger.jsonl").read_text().splitlines()
    seqs = [json.loads(x)["seq"] for x in lines]
    assert len(seqs) == len(set(seqs)), "a seq stored twice"
