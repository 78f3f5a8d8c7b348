"""Every command in ops/runbooks/continuity_failover.md, run in order against a live test fleet."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.failover_support import Fleet, fleet_fixture  # noqa: F401 - the `fleet` fixture
from tests.helpers import ROOT, run_cli

RUNBOOK = ROOT / "ops" / "runbooks" / "continuity_failover.md"
pytestmark = pytest.mark.slow


def runbook_commands() -> list[str]:
    """The ``$ continuity ...`` lines of the runbook's console blocks, in order."""
    text = RUNBOOK.read_text()
    cmds = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                cmds.append(line[2:].strip())
    return cmds


def test_runbook_lists_the_commands_we_expect() -> None:
    cmds = runbook_commands()
    assert all(c.startswith("continuity ") for c in cmds)
    for verb in ("status", "switchover", "failover", "pause", "resume", "history", "show"):
        assert any(c.split()[1:3] == ["failover", verb] for c in cmds), verb


def test_every_runbook_command_works_on_a_live_fleet(fleet: Fleet) -> None:
    fleet.start()
    for seq in range(1, 6):
        assert fleet.post("ledger", "core-a", seq) == 200
    ran = []
    for cmd in runbook_commands():
        args = shlex.split(cmd)[1:]
        if "RECORD_ID" in args:
            args[args.index("RECORD_ID")] = fleet.records()[0]["id"]
        if args[:2] == ["failover", "failover"]:
            # the situation this section is for: the primary's node is gone (its agent can no longer renew)
            fleet.workers["core-b"].kill9()
        r = run_cli(*args, env=fleet.env, timeout=120)
        assert r.returncode == 0, f"{cmd}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        assert "Traceback" not in r.stderr
        ran.append(cmd)
        if args[:2] == ["failover", "switchover"]:
            h = fleet.wait_primary("ledger", "core-b", epoch=2)
            assert h["records"] == 5
            assert "succeeded" in r.stdout
        if args[:2] == ["failover", "failover"]:
            h = fleet.wait_primary("ledger", "core-a", epoch=3)
            assert h["records"] == 5
        if args[:3] == ["failover", "history", "--json"]:
            hist = json.loads(r.stdout)
            assert [h["kind"] for h in hist] == ["forced", "switchover"]
            assert all(h["outcome"] == "succeeded" and h["who"].startswith("test-operator [key ") for h in hist)
            switch = hist[1]
            assert [s["step"] for s in switch["steps"]] == ["demote", "fence", "prepare", "promote", "repoint",
                                                            "verify", "record"]
            assert switch["steps"][0]["node"] == "core-a"
    assert ran == runbook_commands()
