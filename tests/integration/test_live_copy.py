"""Copies of data another process is writing: always a valid database, always whole ledger records.

The writers are real processes (a SQLite writer committing large multi-page transactions,
the sample ledger service taking writes); the copies run while they write. Each
check fails with a raw file copy in place of the consistent one.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.backup import livecopy
from continuity.backup.livecopy import CopyError
from continuity.redisd import free_port
from tests.failover_support import make_blueprint
from tests.helpers import ROOT, wait_for

# rewrites pages all over the file in every transaction, with no fsync between them (the writer's own
# durability choice): a byte copy taken mid-commit mixes old and new pages of one b-tree
WRITER = r"""
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("PRAGMA synchronous=OFF")
db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, blob BLOB)")
db.execute("CREATE INDEX IF NOT EXISTS t_blob ON t (blob)")
db.executemany("INSERT INTO t VALUES (?, ?)", [(i, os.urandom(300)) for i in range(6000)])
print("ready", flush=True)
n = 0
while True:
    n += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE t SET blob = randomblob(300) WHERE id % 5 = ?", (n % 5,))
    db.execute("INSERT INTO t VALUES (?, ?)", (6000 + n, os.urandom(300)))
    db.execute("COMMIT")
"""


@pytest.fixture
def sqlite_writer(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "live.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield db
    finally:
        proc.kill()
        proc.wait(10)


def _integrity(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("PRAGMA integrity_check")]
    finally:
        con.close()


@pytest.mark.slow
def test_sqlite_copied_while_a_process_writes_is_always_a_valid_database(sqlite_writer: Path,
                                                                          tmp_path: Path) -> None:
    dst = tmp_path / "copy" / "live.db"
    dst.parent.mkdir()
    rows = set()
    for i in range(40):
        out = livecopy.copy_sqlite(sqlite_writer, dst)
        assert out.kind == "sqlite" and out.bytes == dst.stat().st_size
        assert _integrity(dst) == ["ok"], f"copy {i} is not a valid database"
        con = sqlite3.connect(dst)
        rows.add(con.execute("SELECT max(id) FROM t").fetchone()[0])
        con.close()
    assert len(rows) > 1, "the writer wrote during the copies"
    assert not list(dst.parent.glob("*.tmp")), "no temp file left behind"


def test_ledger_copy_takes_complete_records_only(tmp_path: Path) -> None:
    src = tmp_path / "ledger.jsonl"
    src.write_bytes(b'{"seq": 1, "v": "a"}\n{"seq": 2, "v": "b"}\n{"seq": 3, "v": "half wri')
    out = livecopy.copy_ledger(src, tmp_path / "copy.jsonl")
    assert (out.records, out.last_seq, out.pending_bytes) == (2, 2, len(b'{"seq": 3, "v": "half wri'))
    assert (tmp_path / "copy.jsonl").read_bytes() == b'{"seq": 1, "v": "a"}\n{"seq": 2, "v": "b"}\n'


@pytest.mark.parametrize("body, why", [
    (b'{"seq": 1}\n{"seq": 2}\n{"seq": 1}\n', "line 3: seq 1 already stored at line 1"),
    (b'{"seq": 1}\nnot json\n', "line 2: not valid JSON"),
    (b'{"seq": 1}\n{"seq": "2"}\n', "line 2: not a record with an integer seq"),
])
def test_a_damaged_ledger_is_refused_and_the_target_kept(tmp_path: Path, body: bytes, why: str) -> None:
    src, dst = tmp_path / "ledger.jsonl", tmp_path / "dst.jsonl"
    src.write_bytes(body)
    dst.write_bytes(b'{"seq": 7}\n')
    with pytest.raises(CopyError, match=why):
        livecopy.copy_ledger(src, dst)
    assert dst.read_bytes() == b'{"seq": 7}\n'
    assert not list(tmp_path.glob("*.tmp"))


def test_kinds_come_from_the_blueprint_or_the_content(tmp_path: Path) -> None:
    db = tmp_path / "data.bin"
    sqlite3.connect(db).execute("CREATE TABLE x (a)").connection.commit()
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("hi")
    assert livecopy.kind_of(db) == "sqlite"
    assert livecopy.kind_of(tmp_path / "a.jsonl") == "ledger"
    assert livecopy.kind_of(tmp_path / "notes.txt") == "file"
    assert livecopy.kind_of(tmp_path / "notes.txt", {"notes.txt": "ledger"}) == "ledger"


@pytest.fixture
def serving_ledger(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The sample ledger service serving (unguarded: no Redis) from its own data directory."""
    state = tmp_path / "state"
    port = free_port()
    # no replicator runs here: the ledger replicates async in this copy (sync would refuse every write)
    env = {"CONTINUITY_STATE": str(state), "CONTINUITY_ROOT": str(ROOT), "PATH": "/usr/bin:/bin",
           "CONTINUITY_BLUEPRINT": str(make_blueprint(tmp_path))}
    proc = subprocess.Popen([sys.executable, "-m", "continuity.sample.ledger_service", "serve", "--service",
                             "ledger", "--node", "core-a", "--port", str(port), "--epoch", "1"], env=env, cwd=ROOT)
    try:
        yield state / "nodes" / "core-a" / "ledger", port
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_service_copy_under_writes_never_has_a_database_row_the_ledger_lacks(serving_ledger, tmp_path) -> None:
    """Databases are copied before ledgers: the sample service writes its ledger first, so the copy agrees."""
    import urllib.request

    src, port = serving_ledger
    stop = threading.Event()
    acked: list[int] = []

    def write() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            req = urllib.request.Request(f"http://127.0.0.1:{port}/records", method="POST",
                                         data=json.dumps({"seq": seq, "pad": "x" * 200}).encode())
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status == 200:
                        acked.append(seq)
            except OSError:
                pass

    wait_for(lambda: (src / "ledger.db").exists() and (src / "ledger.jsonl").exists(), timeout=30,
             what="the service's data files")
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        wait_for(lambda: len(acked) > 50, timeout=60, what="the writer to get going")
        dst = tmp_path / "candidate"
        for i in range(30):
            copies = livecopy.copy_service_files(src, dst, ["ledger.jsonl", "ledger.db", "ledger.db-journal"],
                                                 {"ledger.jsonl": "ledger", "ledger.db": "sqlite"})
            assert [c.kind for c in copies] == ["sqlite", "ledger"]
            ledger = {json.loads(line)["seq"] for line in (dst / "ledger.jsonl").read_text().splitlines()}
            con = sqlite3.connect(dst / "ledger.db")
            rows = {r[0] for r in con.execute("SELECT seq FROM records")}
            con.close()
            assert rows <= ledger, f"copy {i}: rows {sorted(rows - ledger)[:5]} missing from the ledger copy"
            assert _integrity(dst / "ledger.db") == ["ok"]
    finally:
        stop.set()
        writer.join(10)
