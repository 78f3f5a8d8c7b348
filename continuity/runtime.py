"""The embedded default: the whole fleet on one machine with one command.

``continuity up`` starts a private redis-server (unless $CONTINUITY_REDIS_URL
names one), one worker per blueprint node, beat and Flower, and supervises
them as child process groups. Stopping (Ctrl-C, SIGTERM) tears every group
down, so nothing is left orphaned to confuse the next run. No Celery import
here: children are separate processes, exactly as on a real fleet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from continuity import paths, settings
from continuity.backup import api
from continuity.backup.config import load_fleet_backup_config
from continuity.blueprint import Blueprint
from continuity.errors import ContinuityError
from continuity.redisd import RedisServer, free_port, redis_url
from continuity.sample import ledger_service
from continuity.state.heartbeats import ensure_node_key


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    """The preferred port when it is free (a stable Flower URL), else any free one."""
    return preferred if preferred and port_free(preferred) else free_port()


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self, env: dict[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            self.popen = subprocess.Popen(self.argv, env=env, cwd=paths.root(), stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Runtime:
    """Supervisor for the embedded fleet."""

    blueprint: Blueprint
    flower_port: int = 5555
    concurrency: int = 2
    redis: RedisServer | None = None
    url: str = ""
    flower_url: str = ""
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        state = paths.state_dir()
        state.mkdir(parents=True, exist_ok=True)
        self.url = redis_url() or ""
        if not self.url:
            port = settings.REDIS_PORT.get()
            self.redis = RedisServer(state / "redis", port=port, appendonly=True).start()
            self.url = self.redis.url
        self.env = dict(os.environ)
        self.env.update({settings.REDIS_URL.name: self.url, settings.ROOT.name: str(paths.root()),
                         settings.STATE.name: str(state), "PYTHONUNBUFFERED": "1"})
        _prepare_node_keys(self.blueprint, self.env)
        _prepare_backups(self.env)
        py = sys.executable
        logs = state / "logs"
        for node in sorted(self.blueprint.nodes):
            self.children.append(Child(f"worker:{node}", [py, "-m", "continuity", "worker", "--node", node,
                                                          "--concurrency", str(self.concurrency)],
                                       logs / f"worker-{node}.log"))
        self.children.append(Child("beat", [py, "-m", "continuity", "beat"], logs / "beat.log"))
        fport = pick_port(self.flower_port)
        self.flower_url = f"http://127.0.0.1:{fport}"
        flower_argv = [py, "-m", "celery", "-A", "workers.app", "flower", "--address=127.0.0.1",
                       f"--port={fport}", "--persistent=False"]
        auth = settings.FLOWER_AUTH.get()  # user:password
        if auth:
            flower_argv.append(f"--basic-auth={auth}")
        else:
            # loopback only, so the embedded default needs no credentials to read the API
            self.env["FLOWER_UNAUTHENTICATED_API"] = "true"
        self.children.append(Child("flower", flower_argv, logs / "flower.log"))
        for child in self.children:
            child.start(self.env)

    def supervise_once(self) -> list[str]:
        """Restart any child that died (a crashed worker is a node back from the dead); names restarted."""
        restarted = []
        for child in self.children:
            if child.popen is not None and not child.alive():
                child.restarts += 1
                child.start(self.env)
                restarted.append(child.name)
        return restarted

    def stop(self, timeout: float = 15.0) -> None:
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.popen is None:
                continue
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            child.signal_group(signal.SIGKILL)  # also reaps grandchildren (pool processes, service hooks)
            try:
                child.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _stop_services(self.env)
        if self.redis is not None:
            self.redis.stop()


def _prepare_node_keys(bp: Blueprint, env: dict[str, str]) -> None:
    """Give every simulated node its own heartbeat signing key (kept on disk, never in Redis)."""
    old = dict(os.environ)
    os.environ.update(env)
    try:
        for node in bp.nodes:
            ensure_node_key(node)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _prepare_backups(env: dict[str, str]) -> None:
    """Give the embedded fleet a backup password (a 0600 file, never in Redis) and initialised repositories.

    restic makes `init` a separate step; for the one-command demo we do it here so
    the first scheduled snapshot has somewhere to go. An operator's own
    CONTINUITY_PASSWORD always wins.
    """
    import secrets

    if not settings.PASSWORD.is_set(env):
        pw_file = paths.state_dir() / "keys" / "backup.password"
        pw_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not pw_file.exists():
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        env[settings.PASSWORD.name] = pw_file.read_text().strip()
    try:
        cfg = load_fleet_backup_config(paths.backup_config_path(), root=paths.root())
    except ContinuityError as exc:
        print(f"continuity: backups not scheduled: {exc}", file=sys.stderr)
        return
    password = env[settings.PASSWORD.name].encode()
    opened: dict[str, object] = {}
    for s in cfg.sets.values():
        for url in [s.repository, *(r.repository for r in s.replicate_to)]:
            full = cfg.resolve(url)
            if full in opened:
                continue
            try:
                first = next(iter(opened.values()), None)
                opened[full] = api.open_repository(full, password, create=True, params_from=first)  # type: ignore
            except ContinuityError as exc:
                print(f"continuity: repository {full}: {exc}", file=sys.stderr)


def _stop_services(env: dict[str, str]) -> None:
    """Stop sample services the hooks started (they run in their own sessions, outliving workers)."""
    stop_all = getattr(ledger_service, "stop_all", None)
    if stop_all is None:
        return
    old = dict(os.environ)
    os.environ.update(env)
    try:
        stop_all()
    except Exception as exc:  # noqa: BLE001 - best effort at shutdown
        print(f"continuity: could not stop sample services: {exc}", file=sys.stderr)
    finally:
        os.environ.clear()
        os.environ.update(old)


def require_ok(rt: Runtime) -> None:
    dead = [c.name for c in rt.children if not c.alive()]
    if dead:
        raise ContinuityError(f"failed to start: {', '.join(dead)} (see {paths.state_dir() / 'logs'})")
