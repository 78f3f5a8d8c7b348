"""The PostgreSQL recipe of docs/continuity/backup.md, on a real server under a real write load.

A private postgres (Debian's binaries, own data directory, free loopback port) takes transfers from pgbench
(two clients, every transaction moves money between two accounts and logs both legs) while a backup set's
command source runs ``pg_dump -Fc``. To know what "the database at dump time" held, the test holds a
repeatable-read transaction that exported its snapshot and gives that snapshot to pg_dump (``--snapshot``):
rows counted in that transaction are exactly what the dump contains. The dump is restored from the
snapshot into a fresh server with pg_restore: the counts match, the ledger balances, and the restore drill
ran ``pg_restore --list`` on the restored file.
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.backup import api
from continuity.backup.commands import CommandFailed
from continuity.backup.restore import restore
from continuity.backup.verify import Check, run_check
from tests.helpers import wait_for
from tests.pgserver import MISSING, PgServer, pg_bin

pytestmark = pytest.mark.skipif(pg_bin() is None, reason=MISSING)

ACCOUNTS = 50
TRANSFER = textwrap.dedent("""\
    \\set a random(1, 50)
    \\set b random(1, 50)
    BEGIN;
    UPDATE accounts SET balance = balance - 7 WHERE id = :a;
    UPDATE accounts SET balance = balance + 7 WHERE id = :b;
    INSERT INTO legs (account, amount) VALUES (:a, -7), (:b, 7);
    END;
    """)


@pytest.fixture
def source_db() -> Iterator[PgServer]:
    pg = PgServer("pg-source").start()
    try:
        pg.psql("CREATE DATABASE appdb")
        pg.psql(f"CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
                f"INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;"
                "CREATE TABLE legs (id bigserial PRIMARY KEY, account int NOT NULL REFERENCES accounts,"
                " amount int NOT NULL, at timestamptz NOT NULL DEFAULT now());", db="appdb")
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def fresh_db() -> Iterator[PgServer]:
    pg = PgServer("pg-restored").start()
    try:
        yield pg
    finally:
        pg.stop()


def _held_snapshot(pg: PgServer) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """A psql session inside a repeatable-read transaction that exported its snapshot, plus what it sees."""
    session = subprocess.Popen([pg.tool("psql"), *pg.conn_args("appdb"), "-At", "-v", "ON_ERROR_STOP=1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert session.stdin is not None and session.stdout is not None

    def ask(sql: str) -> str:
        session.stdin.write(sql + "\n")  # type: ignore[union-attr]
        session.stdin.flush()  # type: ignore[union-attr]
        return session.stdout.readline().strip()  # type: ignore[union-attr]

    assert ask("BEGIN ISOLATION LEVEL REPEATABLE READ;") == "BEGIN"
    snapshot = ask("SELECT pg_export_snapshot();")
    seen = {"legs": ask("SELECT count(*) FROM legs;"), "accounts": ask("SELECT count(*) FROM accounts;"),
            "balance": ask("SELECT sum(balance) FROM accounts;"), "net": ask("SELECT sum(amount) FROM legs;")}
    return session, snapshot, seen


def _config(tmp_path: Path, pg: PgServer, snapshot: str | None, db: str = "appdb") -> api.LoadedConfig:
    pin = f"--snapshot={snapshot}, " if snapshot else ""
    (tmp_path / "backup.yml").write_text(textwrap.dedent(f"""\
        version: 1
        sets:
          appdb:
            node: db-1
            repository: repo
            key: {{password_env: CONTINUITY_PASSWORD}}
            sources:
              - kind: command
                name: appdb.dump
                command: [{pg.tool('pg_dump')}, -Fc, {pin}--host, 127.0.0.1, --port, {pg.port},
                          --username, postgres, {db}]
                timeout: 10m
                check: [{pg.tool('pg_restore')}, --list, "{{file}}"]
        """))
    return api.load_backup_config(tmp_path / "backup.yml", root=tmp_path)


def test_dump_under_load_restores_into_a_fresh_server(source_db: PgServer, fresh_db: PgServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    script = tmp_path / "transfer.sql"
    script.write_text(TRANSFER)
    load = subprocess.Popen([source_db.tool("pgbench"), "-n", "-c", "2", "-j", "2", "-T", "600", "-f", str(script),
                             *source_db.conn_args("appdb")[:-2], "appdb"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    session = None
    try:
        wait_for(lambda: int(source_db.psql("SELECT count(*) FROM legs", db="appdb")) > 200, timeout=60,
                 what="pgbench to be writing")
        session, exported, at_dump = _held_snapshot(source_db)
        summary = api.run_backup_set("appdb", _config(tmp_path, source_db, exported))
        assert summary["errors"] == [] and summary["bytes_total"] > 0
        # the writers kept going past the dump's snapshot (with both cores hogged a commit may lag the dump)
        wait_for(lambda: int(source_db.psql("SELECT count(*) FROM legs", db="appdb")) > int(at_dump["legs"]),
                 timeout=60, what="the writers to commit past the dump's snapshot")
        assert load.poll() is None, load.stderr.read() if load.stderr else ""
    finally:
        if session is not None and session.stdin is not None:
            session.stdin.write("COMMIT;\n")
            session.stdin.close()
            session.wait(30)
        load.terminate()
        load.wait(30)
    cfg = _config(tmp_path, source_db, exported)
    drill = api.restore_drill_set("appdb", cfg)
    assert drill["ok"], drill
    ran = drill["checks"][0]["check"]
    assert ran["command"][0].endswith("pg_restore") and ran["command"][1] == "--list" and ran["exit"] == 0
    assert "TABLE DATA public legs" in ran["output"]

    repo = api.set_repository(cfg, "appdb")
    restore(repo, repo.find_snapshot(summary["id"]), str(tmp_path / "restored"))
    fresh_db.psql("CREATE DATABASE appdb")
    r = subprocess.run([fresh_db.tool("pg_restore"), "--exit-on-error", "--no-owner", *fresh_db.conn_args("appdb"),
                        str(tmp_path / "restored" / "appdb.dump")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    restored = {"legs": fresh_db.psql("SELECT count(*) FROM legs", db="appdb"),
                "accounts": fresh_db.psql("SELECT count(*) FROM accounts", db="appdb"),
                "balance": fresh_db.psql("SELECT sum(balance) FROM accounts", db="appdb"),
                "net": fresh_db.psql("SELECT sum(amount) FROM legs", db="appdb")}
    assert restored == at_dump
    assert restored["balance"] == str(1000 * ACCOUNTS) and restored["net"] == "0"  # every transfer whole


def test_a_failing_dump_saves_nothing_and_the_check_rejects_a_non_dump(source_db: PgServer, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    cfg = _config(tmp_path, source_db, None, db="no_such_db")
    with pytest.raises(CommandFailed, match='pg_dump exited 1: .*"no_such_db" does not exist'):
        api.run_backup_set("appdb", cfg)
    assert api.set_repository(cfg, "appdb").load_snapshots()[0] == []
    garbage = tmp_path / "not-a-dump"
    garbage.write_bytes(b"PGDMP" + bytes(range(256)) * 4)
    check = api.drill_checks(cfg.sets["appdb"])["appdb.dump"]
    assert isinstance(check, Check)
    outcome = run_check(check, str(garbage), str(tmp_path))
    assert not outcome.ok and outcome.returncode == 1
