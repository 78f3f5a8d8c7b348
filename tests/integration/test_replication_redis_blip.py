"""A Redis outage pauses replication (no lease can be confirmed) and it resumes by itself: no process dies, no
data is applied without a proven lease, nothing is copied twice."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import redis

from continuity.state import leases
from tests.failover_support import make_blueprint
from tests.helpers import project_env, wait_for

TTL = 2.0


def test_replication_waits_out_a_redis_outage_and_resumes_where_it_was(tmp_path: Path, state_dir: Path, own_redis,
                                                                       spawn) -> None:
    bp = make_blueprint(tmp_path, ("ledger",))
    env = project_env(own_redis.url, state_dir, CONTINUITY_BLUEPRINT=str(bp))
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=0.5,
                                  socket_connect_timeout=0.5)
    assert leases.bootstrap(client, "ledger", "core-a", TTL)
    stop = threading.Event()

    def hold() -> None:  # core-a's agent, as far as the lease goes: renew, and take it back after the outage
        while not stop.wait(0.3):
            try:
                if not leases.renew(client, "ledger", "core-a", 1, TTL):
                    leases.acquire(client, "ledger", "core-a", 1, TTL)
            except redis.RedisError:
                pass

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    source = state_dir / "nodes" / "core-a" / "ledger" / "ledger.jsonl"
    copy = state_dir / "nodes" / "core-b" / "ledger" / "ledger.jsonl"
    source.parent.mkdir(parents=True)
    seq = 0

    def append(n: int) -> None:
        nonlocal seq
        with open(source, "a") as fh:
            for _ in range(n):
                seq += 1
                fh.write(json.dumps({"seq": seq}) + "\n")

    append(100)
    procs = [spawn([sys.executable, "-m", "continuity.replication", "--node", n], env, f"replicator-{n}")
             for n in ("core-a", "core-b")]
    wait_for(lambda: copy.exists() and copy.read_bytes() == source.read_bytes(), timeout=60, what="core-b in step")
    inode = copy.stat().st_ino
    try:
        own_redis.stop()  # the outage
        down = time.monotonic()
        append(50)
        wait_for(lambda: time.monotonic() - down > TTL + 0.5, timeout=10, what="every lease reading lapsed")
        held = copy.read_bytes()
        append(50)
        time.sleep(1.5)  # appends go on; nothing may be applied while no lease can be confirmed
        assert copy.read_bytes() == held
        assert all(p.alive() for p in procs)
        own_redis.start()
        append(50)
        wait_for(lambda: copy.read_bytes() == source.read_bytes(), timeout=60, what="core-b caught up after Redis")
        assert copy.stat().st_ino == inode and all(p.alive() for p in procs)
    finally:
        stop.set()
        holder.join(5)
        client.close()
