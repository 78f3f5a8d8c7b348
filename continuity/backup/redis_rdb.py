"""Put a Redis RDB (from a snapshot) back as the data directory a fleet's redis-server starts on.

Why this is more than copying a file: the layer runs Redis with AOF on (Celery
needs it), and a redis-server started with ``appendonly yes`` loads only its
AOF — a ``dump.rdb`` next to it is ignored, so the fleet would come up empty.
:func:`load_rdb` does what Redis' own documentation prescribes for switching
an RDB-only data set to AOF, with the same redis-server binary the fleet runs
(an RDB written by a newer Redis may not load in an older one, so the wrong
binary would fail here rather than at start-up):

1. the RDB becomes ``dump.rdb`` in the directory;
2. a redis-server on a free loopback port starts there with AOF off, loading it;
3. ``CONFIG SET appendonly yes`` makes it write the AOF from what it loaded;
   the rewrite is awaited;
4. it stops (flushing the AOF), ``dump.rdb`` is removed;
5. a second start with AOF on — as the fleet starts it — must find the same
   keys without expiry (keys with a TTL may rightly have expired meanwhile).

Stop the fleet first: nothing may run on the directory while this writes it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from continuity.errors import ContinuityError, UsageError
from continuity.redisd import RedisServer, connect

DATA_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb")
RDB_MAGIC = b"REDIS"


@dataclass(frozen=True)
class Loaded:
    redis_dir: str
    keys: int  # every key the RDB held (in all databases)
    persistent_keys: int  # of which without expiry: what the second start must find again
    replaced: str | None  # where the directory's earlier data set was moved (with --replace)
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts(client: redis.Redis) -> tuple[int, int]:
    """(keys, keys without expiry) over every database, from INFO keyspace."""
    keyspace: Mapping[str, Any] = client.info("keyspace")
    keys = sum(int(v.get("keys", 0)) for v in keyspace.values() if isinstance(v, dict))
    expiring = sum(int(v.get("expires", 0)) for v in keyspace.values() if isinstance(v, dict))
    return keys, keys - expiring


def _await_aof(client: redis.Redis, deadline: float) -> None:
    while True:
        info = client.info("persistence")
        if (int(info.get("aof_enabled", 0)) == 1 and int(info.get("aof_rewrite_in_progress", 1)) == 0
                and int(info.get("aof_rewrite_scheduled", 1)) == 0):
            if info.get("aof_last_bgrewrite_status", "ok") != "ok":
                raise ContinuityError("redis-server could not write the AOF (aof_last_bgrewrite_status: "
                                      f"{info.get('aof_last_bgrewrite_status')}); see its redis.log")
            return
        if time.monotonic() > deadline:
            raise ContinuityError("redis-server did not finish writing the AOF in time")
        time.sleep(0.05)


def load_rdb(rdb: str | Path, redis_dir: str | Path, *, replace: bool = False,
             timeout: float = 300.0) -> Loaded:
    """Make ``redis_dir`` hold exactly ``rdb``'s data, as an AOF the fleet's redis-server loads at start."""
    started = time.monotonic()
    deadline = started + timeout
    rdb, target = Path(rdb), Path(redis_dir)
    try:
        with open(rdb, "rb") as f:
            head = f.read(len(RDB_MAGIC))
    except OSError as exc:
        raise UsageError(f"{rdb}: {exc.strerror}") from None
    if head != RDB_MAGIC:
        raise UsageError(f"{rdb}: not a Redis RDB file (it does not start with REDIS)")
    replaced = None
    if target.exists() and any((target / name).exists() for name in DATA_FILES):
        if not replace:
            raise UsageError(f"{target} already holds a Redis data set: stop whatever runs on it, then pass "
                             "--replace to move it aside")
        replaced = target.with_name(f"{target.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        os.rename(target, replaced)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rdb, target / "dump.rdb")
    server = RedisServer(target, appendonly=False).start(timeout=max(10.0, deadline - time.monotonic()))
    try:
        client = connect(server.url, socket_timeout=30)
        keys, persistent = _counts(client)
        client.config_set("appendonly", "yes")
        _await_aof(client, deadline)
        client.close()
    finally:
        server.stop()
    (target / "dump.rdb").unlink()
    check = RedisServer(target, appendonly=True).start(timeout=max(10.0, deadline - time.monotonic()))
    try:
        client = connect(check.url, socket_timeout=30)
        _, again = _counts(client)
        client.close()
    finally:
        check.stop()
    if again != persistent:
        raise ContinuityError(f"{target}: the RDB held {persistent} keys without expiry, a start with AOF on "
                              f"found {again}: the directory is not usable (see {target / 'redis.log'})")
    return Loaded(str(target), keys, persistent, str(replaced) if replaced else None,
                  round(time.monotonic() - started, 3))
