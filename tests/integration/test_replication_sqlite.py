"""SQLite replication under fire: the standby's replicator killed -9 twenty times mid-transfer, the replica a
valid database every time, and in the end the primary's database, while a writer changes pages all along.

Real replicator processes (``python -m continuity.replication``) on loopback, a real Redis holding the lease.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

import yaml

from continuity.state import leases
from tests.failover_support import make_blueprint
from tests.helpers import project_env, wait_for

ROWS = 60_000
KILLS = 20


def _blueprint(tmp_path: Path) -> Path:
    path = make_blueprint(tmp_path, ("ledger",))
    doc = yaml.safe_load(path.read_text())
    svc = doc["domains"]["payments"]["services"]["ledger"]
    svc["data"] = [{"kind": "sqlite", "path": "data/ledger.db", "interval": "100ms"}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _content(path: Path) -> list[tuple[int, str]]:
    with _ro(path) as db:
        return db.execute("SELECT k, v FROM t ORDER BY k").fetchall()


def test_the_replica_passes_integrity_check_after_every_kill_of_the_replicator_mid_transfer(
        tmp_path: Path, state_dir: Path, redis_url: str, rds, spawn) -> None:
    bp = _blueprint(tmp_path)
    env = project_env(redis_url, state_dir, CONTINUITY_BLUEPRINT=str(bp))
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    source = state_dir / "nodes" / "core-a" / "ledger" / "ledger.db"
    replica = state_dir / "nodes" / "core-b" / "ledger" / "ledger.db"
    staging = replica.with_name("ledger.db.repl-tmp")
    source.parent.mkdir(parents=True)
    db = sqlite3.connect(source, check_same_thread=False)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    db.execute("CREATE INDEX t_v ON t (v)")  # a second b-tree that must agree with the table: torn pages show
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"{i:08d}" * 30) for i in range(ROWS)])  # ~40 MB
    db.commit()
    stop = threading.Event()

    def write() -> None:  # scattered updates of other lengths, inserts, deletes: pages split and merge
        rnd = random.Random(7)
        n = 0
        while not stop.is_set():
            n += 1
            db.executemany("UPDATE t SET v = ? WHERE k = ?",
                           [(f"{n:08d}" * rnd.randrange(1, 60), rnd.randrange(ROWS)) for _ in range(200)])
            db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)",
                           [(ROWS + n * 10 + j, "y" * rnd.randrange(10, 900)) for j in range(10)])
            db.execute("DELETE FROM t WHERE k IN (SELECT k FROM t WHERE k >= ? LIMIT 5)", (ROWS,))
            db.commit()
            time.sleep(0.02)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    argv = [sys.executable, "-m", "continuity.replication", "--node"]
    spawn([*argv, "core-a"], env, "replicator-core-a")
    standby = spawn([*argv, "core-b"], env, "replicator-core-b-0")
    wait_for(replica.exists, timeout=60, what="the first image on core-b")
    rnd = random.Random(11)
    mid_transfer = 0
    try:
        for i in range(KILLS):
            wait_for(staging.exists, timeout=60, interval=0.005, what=f"a round being applied on core-b ({i})")
            time.sleep(rnd.uniform(0.0, 0.1))  # somewhere in the round (or just after it)
            standby.kill9()
            if staging.exists():  # it died with a round half applied
                mid_transfer += 1
            with _ro(replica) as check:
                assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"kill {i + 1}"
                assert check.execute("SELECT count(*) FROM t WHERE k < ?", (ROWS,)).fetchone() == (ROWS,)
            standby = spawn([*argv, "core-b"], env, f"replicator-core-b-{i + 1}")
    finally:
        stop.set()
        writer.join(10)
    assert mid_transfer >= KILLS // 2, f"only {mid_transfer} of {KILLS} kills hit a transfer: nothing was tested"
    final = _content(source)
    wait_for(lambda: _content(replica) == final, timeout=60, what="the replica equal to the primary's database")
    assert not staging.exists()
