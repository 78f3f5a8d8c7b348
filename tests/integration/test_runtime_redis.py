"""`continuity up` supervises its own redis-server: killed, it comes back on the same port with its data."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from continuity.blueprint import load_blueprint
from continuity.redisd import RedisServer
from continuity.runtime import Runtime
from tests.helpers import ROOT, wait_for


def _synced(workdir: Path, needle: bytes) -> bool:
    """The append-only file on disk holds ``needle`` (what a kill -9 keeps)."""
    return any(needle in p.read_bytes() for p in workdir.rglob("*.aof*") if p.is_file())


def test_a_killed_redis_server_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    rt = Runtime(load_blueprint(ROOT / "ops" / "blueprint.yml"), redis=server, url=server.url)
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=2)
        client.set("continuity:test:kept", "across-a-crash")
        wait_for(lambda: _synced(server.workdir, b"across-a-crash"), timeout=10, what="the AOF fsync")
        assert rt.supervise_once() == []
        port, old_pid = server.port, server.proc.pid
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: rt.supervise_once() == ["redis"], timeout=10, what="the supervisor to restart Redis")
        assert server.port == port and server.proc.pid != old_pid
        with pytest.raises(ProcessLookupError):
            os.kill(old_pid, 0)  # reaped, not a zombie
        assert client.get("continuity:test:kept") == "across-a-crash"
        assert rt.supervise_once() == []
    finally:
        server.kill()
