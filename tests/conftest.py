"""Fixtures: a real redis-server per test session (or per test when it must be killed), real workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from continuity import events
from continuity.redisd import RedisServer
from tests.helpers import ROOT, Proc, continuity_cmd, project_env, register_nodes, wait_for
from tests.metrics_support import Receiver

pytest_plugins = ["tests.leakcheck"]  # the suite fails if it leaves a process behind

# never let a developer's environment point tests at a real server
for _var in ("CONTINUITY_REDIS_URL", "CONTINUITY_ROOT", "CONTINUITY_STATE", "CONTINUITY_PULSE_FILE"):
    os.environ.pop(_var, None)

# an emitter passing a field its event kind does not declare fails its test (production only logs it)
events.STRICT = True


@pytest.fixture(autouse=True)
def _declared_event_fields() -> Iterator[None]:
    """Fail a test whose code emitted an undeclared field, even where the emitter swallowed the error."""
    events.VIOLATIONS.clear()
    yield
    found, events.VIOLATIONS[:] = list(events.VIOLATIONS), []
    assert not found, "\n".join(found)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server on a free port for the whole session; tests flush what they use."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the shared server for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.close()


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for tests that kill or restart it."""
    server = RedisServer(tmp_path / "own-redis", appendonly=True).start()
    yield server
    server.kill()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """Start real processes (workers, beat, services); all are stopped at teardown, none orphaned."""
    procs: list[Proc] = []

    def _spawn(argv: list[str], env: dict[str, str], name: str) -> Proc:
        p = Proc(argv, env, tmp_path / "logs" / f"{name}.log", cwd=ROOT)
        procs.append(p)
        return p

    yield _spawn
    for p in reversed(procs):
        p.stop()


@pytest.fixture
def worker_env(redis_url: str, state_dir: Path) -> dict[str, str]:
    return project_env(redis_url, state_dir)


@pytest.fixture
def start_worker(spawn, worker_env):
    """Start `continuity worker --node ID` as a real process and wait until it has registered."""

    def _start(node: str, env: dict[str, str] | None = None, extra: list[str] | None = None) -> Proc:
        e = env or worker_env
        register_nodes(e, [node])
        proc = spawn(continuity_cmd("worker", "--node", node, *(extra or [])), e, f"worker-{node}")
        client = redis.Redis.from_url(e["CONTINUITY_REDIS_URL"], decode_responses=True)
        from continuity.state import keys

        try:
            wait_for(lambda: client.hexists(keys.nodes_registry(), node) or not proc.alive(), timeout=60,
                     what=f"worker {node} to register")
        finally:
            client.close()
        assert proc.alive(), proc.output()[-3000:]
        return proc

    return _start


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP webhook receiver on a free port, not started (a test starts it: until then it is down)."""
    r = Receiver()
    yield r
    r.stop()
