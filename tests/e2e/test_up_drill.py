"""A node-kill drill under `continuity up`: one restarter, one worker per node after, nothing after Ctrl-C.

`up` supervises its children and restarts the dead ones; the drill's rollback restarts the node it
killed. Both did, and the fleet ended with two workers for one node, one of which outlived Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from continuity.drills import procs
from tests.failover_support import make_blueprint
from tests.helpers import ROOT, continuity_cmd, run_cli, wait_for

pytestmark = pytest.mark.slow
NODES = ("core-a", "core-b", "sat-1")


def workers(state: Path) -> dict[str, list[int]]:
    """Main worker processes (not their pool children) of the fleet at ``state``, per node."""
    pids = [p for p in procs.fleet_processes(state) if "worker" in procs.cmdline(p)]
    main = [p for p in pids if procs._ppid(p) not in pids]
    out: dict[str, list[int]] = {}
    for pid in main:
        out.setdefault(procs.environ(pid).get("CONTINUITY_NODE", "?"), []).append(pid)
    return out


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    state = tmp_path / "state"
    bp = make_blueprint(tmp_path, ("ledger", "keystore", "notifier", "reports", "telemetry"), failover_cooldown="1s")
    doc = yaml.safe_load(bp.read_text())
    doc["nodes"]["sat-1"]["contact"] = [{"start": "00:00", "end": "24:00"}]
    bp.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env.update({"CONTINUITY_STATE": str(state), "CONTINUITY_ROOT": str(ROOT), "CONTINUITY_BLUEPRINT": str(bp),
                "CONTINUITY_ENV": "test", "CONTINUITY_PASSWORD": "up-drill-pw", "CONTINUITY_GAME_DAYS": "off",
                "CONTINUITY_BACKUP_CONFIG": str(tmp_path / "no-backup-sets.yml"), "PYTHONUNBUFFERED": "1"})
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen(continuity_cmd("up", "--no-live", "--flower-port", "0"), env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, env, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        procs.stop_fleet_processes(state)


def _status(env: dict[str, str]) -> dict | None:
    r = run_cli("status", "--json", env=env, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_node_kill_drill_under_up_ends_with_one_worker_per_node_and_nothing_after_ctrl_c(up) -> None:
    proc, env, state = up
    wait_for(lambda: (r := _status(env)) and r.get("mode", {}).get("mode") == "normal"
             and all(n["state"] == "alive" for n in r["nodes"]), timeout=180, what="the fleet to settle")
    assert {n: len(p) for n, p in workers(state).items()} == {n: 1 for n in NODES}
    res = run_cli("drill", "run", "primary-node-outage", "--json", env=env, timeout=240)
    record = json.loads(res.stdout)
    (victim,) = record["target"]["nodes"]
    assert record["injected"], res.stdout[-2000:] + res.stderr[-2000:]
    # the rollback waited for the supervisor's restart, so the node is back already; and only once
    found = workers(state)
    assert {n: len(p) for n, p in found.items()} == {n: 1 for n in NODES}, found
    assert victim in {n for n, p in found.items() if proc.pid in _ancestors(p[0])}, "up restarted it, not the drill"
    # ... after the rollback asked for it: the node stayed down for the whole fault window, as the drill wanted
    assert _started_at(found[victim][0]) >= record["rollback_at"] - 0.1, (record["fault_at"], record["rollback_at"])
    assert not (state / "supervisor" / "holds" / f"{victim}.json").exists()
    log = (Path(env["CONTINUITY_STATE"]).parent / "up.log").read_text()
    assert log.count(f"restarted worker:{victim}") == 1, log[-3000:]

    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0, log[-3000:]
    left = wait_for(lambda: not procs.fleet_processes(state) and "none", timeout=20,
                    what=f"no fleet process after Ctrl-C (left: {procs.fleet_processes(state)})")
    assert left == "none"


def _started_at(pid: int) -> float:
    """Wall-clock start time of a process (/proc gives clock ticks since boot; now minus its age)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    since_boot = int(stat[stat.rindex(")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid and pid > 1:
        pid = procs._ppid(pid) or 0
        out.add(pid)
    return out
