"""Shared test helpers: wait on conditions with deadlines (never bare sleeps), run real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


def operator_env(state: Path) -> dict[str, str]:
    """An operator key for the fleet of ``state`` (made once, its public line trusted by that fleet's workers):
    switchover, forced failover and pause need one, as a person at the CLI would have."""
    from continuity.signing import ensure_key

    key = ensure_key(state / "test-operator" / "operator.ed25519", "operator", "test-operator")
    trusted = state / "keys" / "trusted" / "operator"
    trusted.mkdir(parents=True, exist_ok=True, mode=0o700)
    (trusted / "test-operator.pub").write_text(key.public.line() + "\n", encoding="utf-8")
    return {"CONTINUITY_OPERATOR_KEY": str(key.path)}


def operator_pause(state: Path, service: str | None = None, reason: str = "test") -> str:
    """A pause note (the value of ``failover:pause[:<service>]``) signed by the fleet's test operator key, as
    `continuity failover pause` writes it: the detector ignores unsigned ones."""
    import json
    import time

    from continuity import pause_auth
    from continuity.signing import load_key

    key = load_key(Path(operator_env(state)["CONTINUITY_OPERATOR_KEY"]), "operator")
    body = {"service": service, "who": "test", "at": time.time(), "reason": reason, "until": None}
    return json.dumps(pause_auth.sign(key, body))


def project_env(redis_url: str, state: Path, **extra: str) -> dict[str, str]:
    """Environment for child processes: the test's Redis, its own state dir, the repo's ops/, an operator key."""
    env = dict(os.environ)
    env.update(operator_env(state))
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


def register_nodes(env: dict[str, str], nodes: list[str] | tuple[str, ...] | set[str]) -> None:
    """Do what the operator (or `continuity up`) does before a node's worker starts: make the node's heartbeat
    key in its key directory and write its public half into the registry the detector trusts."""
    from continuity.state import heartbeats

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("CONTINUITY_")})
    try:
        heartbeats.provision(sorted(nodes))
    finally:
        os.environ.clear()
        os.environ.update(saved)


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


class Background:
    """A loop on a daemon thread for the length of a ``with`` block (a writer, a watcher beside a test).

    Subclasses implement :meth:`loop`, which runs until ``stop`` is set (on leaving the block).
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop, args=(self._stop,), daemon=True)

    def loop(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@contextlib.contextmanager
def signed_as_control(state: Path) -> Iterator[None]:
    """Messages this test process publishes inside the block carry the fleet's control-key envelope.

    Workers refuse unsigned control-plane tasks (continuity.task_auth); a test that sends tasks the way beat or
    the CLI would signs them with the control key of the fleet's own state dir (created there on first use, with
    its public half in the trusted folder the workers read)."""
    import workers.app  # noqa: F401 - connects the signing hook (before_task_publish) in this process
    from continuity import task_auth

    old = os.environ.get("CONTINUITY_STATE")
    os.environ["CONTINUITY_STATE"] = str(state)
    try:
        key = task_auth.role_key(task_auth.CONTROL)
    finally:
        if old is None:
            os.environ.pop("CONTINUITY_STATE", None)
        else:
            os.environ["CONTINUITY_STATE"] = old
    with task_auth.signing_as(key):
        yield
