"""`continuity status` against a real Redis at maxmemory: it says writes are refused, in the table and --json."""

from __future__ import annotations

import json

import pytest
import redis

from tests.helpers import project_env, run_cli


def test_status_says_when_redis_refuses_writes(own_redis, state_dir) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 200_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(1000):
            client.set(f"filler:{i}", "x" * 10_000)
    env = project_env(own_redis.url, state_dir)
    out = run_cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["redis"]["oom_refused"] >= 1
    assert any("maxmemory" in w for w in report["redis"]["warnings"])
    table = run_cli("status", env=env)
    assert table.returncode == 0 and "maxmemory" in table.stdout and "refused" in table.stdout
    client.config_set("maxmemory", 0)
    assert json.loads(run_cli("status", "--json", env=env).stdout)["redis"]["warnings"] == []
