"""The beat scheduler rides out Redis trouble instead of exiting, and never schedules without the lock.

A real redis-server (killed and restarted with its AOF on the same port) and the real scheduler class, driven
tick by tick in this process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from continuity.redisd import RedisServer
from workers.beat import RETRY_AFTER, ContinuityScheduler, lock_timeout

PREFIX = "test-beat"


def scheduler(url: str, monkeypatch: pytest.MonkeyPatch, takeover: int = 10) -> ContinuityScheduler:
    monkeypatch.setenv("CONTINUITY_BEAT_LOCK_TIMEOUT", str(takeover))
    app = Celery("beat-test", broker=url)
    app.conf.update(redbeat_redis_url=url, redbeat_key_prefix=PREFIX, beat_max_loop_interval=1, timezone="UTC")
    return ContinuityScheduler(app=app, lazy=True)


@pytest.fixture
def server(own_redis: RedisServer) -> Iterator[RedisServer]:
    yield own_redis


def lock_holder(url: str) -> str | None:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return client.get(f"{PREFIX}:lock")
    finally:
        client.close()


def test_a_beat_whose_lock_acquisition_failed_at_start_takes_it_at_the_next_tick(server, monkeypatch) -> None:
    """RedBeat swallows a failed acquisition at start (lock None) and then died on ``None.extend``."""
    sched = scheduler(server.url, monkeypatch)
    assert sched.lock is None
    wait = sched.tick()
    assert 0 < wait <= sched.max_interval
    assert sched.lock is not None and lock_holder(server.url) == sched.lock.local.token.decode()


def test_the_lock_lifetime_keeps_a_takeover_within_the_configured_bound(server, monkeypatch) -> None:
    sched = scheduler(server.url, monkeypatch, takeover=30)
    assert sched.lock_timeout == 29 == lock_timeout(30, 1)  # a standby polls every max interval (1 s here)
    sched.tick()
    ttl = redis.Redis.from_url(server.url).pttl(f"{PREFIX}:lock") / 1000
    assert 28 < ttl <= 29
    assert lock_timeout(3, 5) == 10, "never under two polls"


def test_a_beat_that_lost_its_lock_stands_by_and_does_not_steal_it(server, monkeypatch) -> None:
    sched = scheduler(server.url, monkeypatch)
    sched.tick()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.set(f"{PREFIX}:lock", "another-beat", px=20_000)  # ours lapsed; another beat took it
    assert sched.tick() == sched.max_interval
    assert sched.lock is None and client.get(f"{PREFIX}:lock") == "another-beat"
    client.delete(f"{PREFIX}:lock")  # the other beat died and its lock lapsed
    sched.tick()
    assert sched.lock is not None and lock_holder(server.url) == sched.lock.local.token.decode()


def test_a_redis_restart_is_waited_out_not_fatal(server, monkeypatch) -> None:
    sched = scheduler(server.url, monkeypatch)
    sched.tick()
    server.kill()
    for _ in range(3):
        assert sched.tick() == RETRY_AFTER  # no exception: celery beat would have exited on one
    server.start()  # same port, with its AOF
    assert sched.tick() <= sched.max_interval
    # still (or again, had the AOF not kept the lock) the holder: nobody else was there to take it
    assert sched.lock is not None and lock_holder(server.url) == sched.lock.local.token.decode()
