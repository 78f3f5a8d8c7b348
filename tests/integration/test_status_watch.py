"""`continuity status --watch` in a real pseudo-terminal, and `failover resolve`, against a real Redis.

The watch redraws at its interval (counted in the output, not timed), shows a failover in progress and the
open incident, and Ctrl-C (the terminal's interrupt character, as a person types it) ends it with exit 0.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

from continuity.state import failover_records, incidents
from tests.helpers import ROOT, project_env, run_cli

HEADER = b"continuity status \xe2\x80\x94 every"


def _own_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty (stdin), as a login shell has."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A child process on a pty of 100x40, its screen output collected as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        os.set_blocking(self.master, False)
        env = {**env, "TERM": "xterm", "COLUMNS": "100", "LINES": "40"}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                     preexec_fn=_own_terminal)
        os.close(slave)
        self.out = b""

    def read_until(self, predicate, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while not predicate(self.out):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"screen never matched; got:\n{self.out[-3000:].decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    if self.proc.poll() is not None and not predicate(self.out):
                        screen = self.out.decode(errors="replace")
                        raise AssertionError(f"exited {self.proc.returncode}:\n{screen}") from None
        return self.out

    def ctrl_c(self) -> None:
        """Type ^C: the terminal's line discipline sends SIGINT to the foreground process group."""
        os.write(self.master, b"\x03")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def env(redis_url: str, tmp_path) -> dict[str, str]:
    return project_env(redis_url, tmp_path / "state")


def test_watch_redraws_shows_what_runs_and_ctrl_c_exits_0(rds, env: dict[str, str]) -> None:
    now = time.time()
    failover_records.create(rds, "r-ledger", {"id": "r-ledger", "service": "ledger", "kind": "failover",
                                              "old_primary": "core-a", "candidate": "core-b", "started": now}, now)
    incidents.open_(rds, "failover-keystore", {"id": "failover-keystore", "service": "keystore",
                                               "reason": "every candidate failed"})
    term = Terminal([sys.executable, "-m", "continuity", "status", "--watch", "--interval", "0.2"], env)
    try:
        term.read_until(lambda out: out.count(HEADER) >= 3)  # redrawn: three screens at least
        screen = term.out.decode(errors="replace")
        assert "failover running: ledger core-a -> core-b" in screen and "record r-ledger" in screen
        assert "continuity failover resolve failover-keystore" in screen
        for name in ("core-a", "core-b", "sat-1", "keystore", "ledger", "notifier", "reports", "telemetry"):
            assert name in screen
        failover_records.close(rds, "r-ledger", "succeeded", {"at": now + 5})
        seen = term.out.count(HEADER)
        term.read_until(lambda out: out.count(HEADER) >= seen + 2)
        last = term.out[term.out.rindex(HEADER):].decode(errors="replace")
        assert "failover running" not in last  # the next screen no longer shows the closed record
        term.ctrl_c()
        assert term.proc.wait(30) == 0
        assert b"Traceback" not in term.out
    finally:
        term.close()


def test_watch_survives_redis_going_away(env: dict[str, str]) -> None:
    dead = {**env, "CONTINUITY_REDIS_URL": "redis://127.0.0.1:1/0"}
    term = Terminal([sys.executable, "-m", "continuity", "status", "-W", "-i", "0.2"], dead)
    try:
        term.read_until(lambda out: out.count(HEADER) >= 2 and b"cannot read status from Redis" in out)
        term.ctrl_c()
        assert term.proc.wait(30) == 0
    finally:
        term.close()


def test_watch_is_for_people(env: dict[str, str]) -> None:
    r = run_cli("status", "--watch", "--json", env=env)
    assert r.returncode == 2 and "status --json" in r.stderr and "Traceback" not in r.stderr


def test_resolve_closes_an_incident_and_records_who(rds, env: dict[str, str]) -> None:
    incidents.open_(rds, "failover-ledger", {"id": "failover-ledger", "service": "ledger", "reason": "escalated"})
    incidents.open_(rds, "storm-1", {"id": "storm-1", "kind": "failover-storm"})
    r = run_cli("failover", "resolve", "nope", env=env)
    assert r.returncode == 2 and "no open incident 'nope'" in r.stderr and "failover-ledger" in r.stderr
    r = run_cli("failover", "resolve", "ledger", "--note", "promoted by hand", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["closed"] == ["failover-ledger"]
    assert incidents.ids(rds) == ["storm-1"]
    events = [json.loads(line) for line in open(env["CONTINUITY_PULSE_FILE"])]
    resolved = [e for e in events if e["kind"].endswith("failover.incident_resolved")]
    assert len(resolved) == 1 and resolved[0]["data"]["note"] == "promoted by hand"
    assert resolved[0]["data"]["incident"]["reason"] == "escalated"
    assert resolved[0]["data"]["who"].startswith("test-operator [key ")
    r = run_cli("failover", "resolve", "--all", env=env)
    assert r.returncode == 0 and "storm-1" in r.stdout and incidents.ids(rds) == []
