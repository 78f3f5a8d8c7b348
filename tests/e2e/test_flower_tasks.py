"""Flower after a switchover, as an operator sees it in a browser: the chain's steps are tasks on its page.

A real fleet (workers with their agents, beat) and a real Flower started before the switchover (Flower
draws tasks from the events it receives). Headless Chromium opens Flower's tasks page, filters it the way
a person types in its search box, and the page lists every step of the chain, each succeeded, on the node
that ran it; a screenshot of that page is produced. Skips only where Chromium is absent.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from continuity.redisd import free_port
from continuity.runtime import FLOWER_TASK_COLUMNS
from tests.chromium import Chromium, find
from tests.failover_support import Fleet, fleet_fixture  # noqa: F401 - the `fleet` fixture
from tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.slow
STEPS = ("demote", "fence", "prepare", "promote", "repoint", "verify", "record")

ROWS = """JSON.stringify(Array.from(document.querySelectorAll('#tasks-table tbody tr')).map(
  tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent.trim())))"""


def test_flower_lists_the_chain_steps_after_a_switchover(fleet: Fleet, spawn, tmp_path: Path) -> None:
    if find() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` does it)")
    port = free_port()
    env = {**fleet.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    spawn([sys.executable, "-m", "celery", "-A", "workers.app", "flower", "--address=127.0.0.1", f"--port={port}",
           "--persistent=False", f"--tasks_columns={FLOWER_TASK_COLUMNS}"], env, "flower")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: urllib.request.urlopen(f"{base}/healthcheck", timeout=2).read() == b"OK", timeout=60,
             what="flower to answer")
    fleet.start()
    r = run_cli("failover", "switchover", "ledger", "--to", "core-b", "--json", env=fleet.env, timeout=120)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    # Flower has seen the last step's events (its API reads the same state its pages draw)
    api = f"{base}/api/tasks?taskname=continuity.failover.record&limit=5"
    wait_for(lambda: any(t["state"] == "SUCCESS" for t in json.load(urllib.request.urlopen(api, timeout=5)).values()),
             timeout=60, what="flower to see the record step succeed")

    browser = Chromium(tmp_path / "chromium-profile", width=1600, height=1000)
    try:
        browser.load(f"{base}/tasks")
        wait_for(lambda: browser.evaluate("typeof $ !== 'undefined' && $('#tasks-table').DataTable() !== null"),
                 what="the tasks table")
        browser.evaluate("$('#tasks-table').DataTable().search('continuity.failover').draw(); 1")
        rows = wait_for(lambda: (found := json.loads(browser.evaluate(ROWS)))
                        and sum(1 for row in found if any(f"continuity.failover.{s}" in c for c in row
                                                          for s in STEPS)) >= len(STEPS) and found,
                        timeout=60, what="the chain's steps in Flower's tasks table")
        headers = json.loads(browser.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('#tasks-table thead th')).map(t => t.textContent))"))
        png = browser.screenshot()
    finally:
        browser.close()
    (tmp_path / "flower-tasks.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    by_step = {}
    for row in rows:
        for s in STEPS:
            if any(c == f"continuity.failover.{s}" for c in row):
                by_step[s] = row
    assert set(by_step) == set(STEPS)
    for s, row in by_step.items():
        assert "SUCCESS" in row, (s, row)
    assert [h.strip().lower() for h in headers] == FLOWER_TASK_COLUMNS.split(",")
    assert all(record["id"] in row[2] for row in by_step.values())  # args: which record each step served
    nodes = {st["step"]: st["node"] for st in record["steps"]}
    assert any("core-a" in c for c in by_step["demote"]) and nodes["demote"] == "core-a"
    assert any("core-b" in c for c in by_step["promote"]) and nodes["promote"] == "core-b"
