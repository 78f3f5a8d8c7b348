"""Two beats: the second is a hot standby; after the first is killed the schedule goes on, never doubled."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from continuity.state import keys
from tests.helpers import continuity_cmd, wait_for

pytestmark = pytest.mark.slow


def _pings(rds) -> list[dict]:
    events = [json.loads(f["event"]) for _, f in rds.xrange(keys.pulse_stream())]
    return [e for e in events if e["kind"] == "continuity_layer.node.ping" and e["data"]["target"] == "core-a"]


def test_standby_beat_takes_over_without_double_runs(spawn, start_worker, worker_env, rds) -> None:
    env = dict(worker_env, CONTINUITY_PING_INTERVAL="1", CONTINUITY_BEAT_LOCK_TIMEOUT="5",
               CONTINUITY_BEAT_MAX_LOOP="1")
    start_worker("core-a", env=env)
    beat_a = spawn(continuity_cmd("beat"), env, "beat-a")
    wait_for(lambda: len(_pings(rds)) >= 2, timeout=30, what="beat A scheduling pings")
    beat_b = spawn(continuity_cmd("beat"), env, "beat-b")
    wait_for(lambda: "Acquiring lock" in beat_b.output() or "beat: Starting" in beat_b.output(), timeout=30,
             what="beat B started as standby")
    before_kill = len(_pings(rds))
    beat_a.kill9()
    # the standby takes the lock once A's lease runs out and carries on
    wait_for(lambda: "Acquired lock" in beat_b.output(), timeout=30, what="beat B acquiring the lock")
    wait_for(lambda: len(_pings(rds)) >= before_kill + 3, timeout=30, what="pings continuing after takeover")
    pings = _pings(rds)
    dues = Counter(round(e["data"]["due"], 3) for e in pings)
    doubled = {d: n for d, n in dues.items() if n > 1}
    assert not doubled, f"entries ran twice for one due time: {doubled}"
    assert all(e["data"]["correct"] for e in pings)


def test_beat_survives_redis_restarts_and_keeps_scheduling(spawn, start_worker, own_redis, state_dir) -> None:
    """celery beat used to exit on the first connection error of a Redis restart (and the restarted beat waited out
    the old lock): now it waits for Redis and goes on, and runs nothing twice."""
    from tests.failover_support import pulse_events
    from tests.helpers import project_env

    env = project_env(own_redis.url, state_dir, CONTINUITY_PING_INTERVAL="1", CONTINUITY_BEAT_LOCK_TIMEOUT="10",
                      CONTINUITY_BEAT_MAX_LOOP="1")
    start_worker("core-a", env=env)
    beat = spawn(continuity_cmd("beat"), env, "beat")

    def pings() -> list[dict]:  # from the history file: the stream lives in the Redis being restarted
        return [e for e in pulse_events(state_dir, "node.ping") if e["data"]["target"] == "core-a"]

    wait_for(lambda: len(pings()) >= 2, timeout=60, what="beat scheduling pings")
    for _ in range(2):
        own_redis.kill()
        time.sleep(4)  # the fault: Redis stays down this long
        own_redis.start()
        before = len(pings())
        wait_for(lambda n=before: len(pings()) >= n + 2, timeout=60, what="pings after Redis came back")
        assert beat.alive(), beat.output()[-3000:]
    out = beat.output()
    at = out.find("Traceback")
    assert at < 0, out[max(0, at - 1500):at + 3000]  # what beat was doing, and the whole traceback
    dues = Counter(round(e["data"]["due"], 3) for e in pings())
    assert not {d: n for d, n in dues.items() if n > 1}, "an entry ran twice for one due time"
