"""The README's run command on this machine: `continuity up` brings the embedded fleet up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.helpers import ROOT, continuity_cmd, wait_for

pytestmark = pytest.mark.slow


def _status(env: dict[str, str]) -> dict | None:
    out = subprocess.run(continuity_cmd("status", "--json"), env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _flower_tasks(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/tasks", timeout=5) as resp:
        return json.loads(resp.read())


def test_up_runs_fleet_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env.update({"CONTINUITY_STATE": str(state), "CONTINUITY_ROOT": str(ROOT), "PYTHONUNBUFFERED": "1"})
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen(continuity_cmd("up", "--no-live", "--flower-port", "0"), env=env, cwd=ROOT,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # within 30 s every sample node is seen
        report = wait_for(lambda: (r := _status(env)) and all(n["seen"] for n in r["nodes"]) and r,
                          timeout=30, what="every node seen in `continuity status --json`")
        assert {n["id"] for n in report["nodes"]} == {"core-a", "core-b", "sat-1"}
        text = (tmp_path / "up.log").read_text()
        flower = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))

        def pinged_everywhere() -> bool:
            tasks = _flower_tasks(flower).values()
            ran = {t["args"].strip("[]'\"") for t in tasks
                   if t["name"] == "continuity.node.ping" and t["state"] == "SUCCESS"
                   and t.get("worker", "").startswith(t["args"].strip("[]'\"") + "@")}
            return {"core-a", "core-b", "sat-1"} <= ran

        # beat put a job on each node's queue, which that node's worker ran: visible in Flower's API ...
        wait_for(pinged_everywhere, timeout=30, what="a ping on every node in Flower's API")
        # ... and in the pulse history
        events = [json.loads(line) for line in (state / "pulse_history.jsonl").read_text().splitlines()]
        pinged = {e["node"] for e in events if e["kind"] == "continuity_layer.node.ping" and e["data"]["correct"]}
        assert pinged == {"core-a", "core-b", "sat-1"}
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 6  # redis, 3 workers, beat, flower (plus pool processes)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        log.close()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-2000:]
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children),
             timeout=20, what="no orphan processes after Ctrl-C")
