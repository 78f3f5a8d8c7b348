"""Shared test helpers: wait on conditions with deadlines (never bare sleeps), run real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(cond: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the condition may race with start-up
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc!r})"
                                                                                  if last_exc else ""))


def project_env(redis_url: str, state: Path, **extra: str) -> dict[str, str]:
    """Environment for child processes: the test's Redis, its own state dir, the repo's ops/."""
    env = dict(os.environ)
    env.update({
        "CONTINUITY_REDIS_URL": redis_url,
        "CONTINUITY_ROOT": str(ROOT),
        "CONTINUITY_STATE": str(state),
        "CONTINUITY_PULSE_FILE": str(state / "pulse_history.jsonl"),
        "PYTHONUNBUFFERED": "1",
        # no backup jobs unless a test brings its own sets: the shipped ones protect the shipped
        # blueprint's services, which a test's own blueprint may not declare (beat refuses a mismatch)
        "CONTINUITY_BACKUP_CONFIG": str(state / "no-backup-sets.yml"),
    })
    env.update(extra)
    return env


def continuity_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "continuity", *args]


class Proc:
    """A child process in its own session, killed with its whole group at teardown."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.argv = argv
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(10)
        else:
            self.signal(signal.SIGKILL)  # reap stragglers left in the group
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_cli(*args: str, env: dict[str, Any] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(continuity_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, input=input)
