"""A SQLite database under continuous writes is captured consistently."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from continuity.backup.repository import Repository
from continuity.backup.restore import restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from continuity.backup.verify import restore_drill
from tests.unit.test_backup_engine import FAST_KDF


@pytest.mark.slow
def test_sqlite_under_continuous_writes(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE tx (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    con.execute("CREATE TABLE balance (id INTEGER PRIMARY KEY, total INTEGER NOT NULL)")
    con.execute("INSERT INTO balance VALUES (1, 0)")
    con.commit()
    con.close()
    committed = [0]  # highest seq whose COMMIT has returned
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        w = sqlite3.connect(db, timeout=30)
        w.execute("PRAGMA journal_mode=WAL")
        seq = 0
        try:
            while not stop.is_set():
                seq += 1
                # each transaction touches two tables: a torn copy would break the invariant below
                w.execute("BEGIN IMMEDIATE")
                w.execute("INSERT INTO tx VALUES (?, ?)", (seq, "x" * (100 + seq % 900)))
                w.execute("UPDATE balance SET total = total + ? WHERE id = 1", (seq,))
                w.execute("COMMIT")
                committed[0] = seq
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            w.close()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while committed[0] < 2000 and time.monotonic() < deadline:  # let the WAL grow before snapshotting
        time.sleep(0.01)
    assert committed[0] >= 2000, "writer made no progress"
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", kdf=FAST_KDF)
    results = []
    for _ in range(3):
        before = committed[0]  # every transaction up to here committed before the copy began
        summary = take_snapshot(repo, [Source("sqlite", str(db))])
        results.append((before, summary))
    stop.set()
    t.join(timeout=30)
    assert not errors, errors
    for before, summary in results:
        assert summary["errors"] == []
        out = tmp_path / f"out-{summary['id'][:8]}"
        restore(repo, repo.find_snapshot(summary["id"]), str(out))
        r = sqlite3.connect(out / "live.db")
        assert r.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n, top = r.execute("SELECT count(*), max(seq) FROM tx").fetchone()
        total = r.execute("SELECT total FROM balance").fetchone()[0]
        r.close()
        assert top >= before  # nothing committed before the copy is missing
        assert n == top  # no gaps: a prefix of the history
        assert total == top * (top + 1) // 2  # both tables from the same transaction boundary
        assert not (out / "live.db-wal").exists()
        drill = restore_drill(repo, summary["id"])
        assert drill["ok"] and drill["sqlite"][0]["tables"]["tx"] == top
