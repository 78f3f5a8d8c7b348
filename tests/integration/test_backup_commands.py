"""Command sources, before/after hooks and drill checks, with real processes.

A command source's stdout becomes a file of the snapshot; a failing or hanging command saves nothing; hooks run
in order around the snapshot with the outcome in their environment; a restore drill runs the source's check on
the restored file and fails when the check fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from continuity.backup import api
from continuity.backup.commands import CommandFailed
from continuity.backup.hooks import HookFailed
from continuity.backup.restore import restore
from continuity.errors import ConfigError
from tests.helpers import ROOT, wait_for

PY = sys.executable
# 3 MiB of a fixed pattern, written in pieces: more than one chunk, so it is streamed, not one blob
WRITER = "import sys\nfor i in range(48): sys.stdout.buffer.write(bytes([i]) * 65536)\nprint('dumped', file=sys.stderr)"
EXPECTED = b"".join(bytes([i]) * 65536 for i in range(48))


def _config(tmp_path: Path, sets: str) -> api.LoadedConfig:
    path = tmp_path / "backup.yml"
    path.write_text("version: 1\nsets:\n" + textwrap.indent(textwrap.dedent(sets), "  "))
    return api.load_backup_config(path, root=tmp_path)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")


def _set(name: str, sources: str, extra: str = "") -> str:
    head = f"{name}:\n  node: n1\n  repository: repo\n  key: {{password_env: CONTINUITY_PASSWORD}}\n  sources:\n"
    return head + textwrap.indent(textwrap.dedent(sources), "    ") + textwrap.indent(textwrap.dedent(extra), "  ")


def _snapshots(cfg: api.LoadedConfig, set_name: str) -> list[dict]:
    repo = api.set_repository(cfg, set_name)
    return [s for s in repo.load_snapshots()[0] if s.get("set") == set_name]


def test_command_output_is_stored_streamed_and_checked_by_the_drill(tmp_path: Path) -> None:
    check = ("import sys; d = open(sys.argv[1], 'rb').read(); "
             f"sys.exit(0 if len(d) == {len(EXPECTED)} and d[-1] == 47 else 5)")
    cfg = _config(tmp_path, _set("db", f"""\
        - kind: command
          name: app.dump
          command: [{PY}, -c, {json.dumps(WRITER)}]
          timeout: 1m
          check: [{PY}, -c, {json.dumps(check)}, "{{file}}"]
        """))
    summary = api.run_backup_set("db", cfg)
    assert summary["errors"] == [] and summary["files_new"] == 1 and summary["bytes_total"] == len(EXPECTED)
    repo = api.set_repository(cfg, "db")
    snap = repo.find_snapshot(summary["id"])
    assert snap["paths"] == ["/app.dump"]
    assert snap["sources"][0]["manifest"]["exit"] == 0 and snap["sources"][0]["manifest"]["bytes"] == len(EXPECTED)
    restore(repo, snap, str(tmp_path / "out"))
    assert (tmp_path / "out" / "app.dump").read_bytes() == EXPECTED
    drill = api.restore_drill_set("db", cfg)
    assert drill["ok"], drill
    assert drill["checks"][0]["ok"] and drill["checks"][0]["check"]["exit"] == 0


def test_a_failing_check_fails_the_drill_and_stdin_mode_feeds_the_file(tmp_path: Path) -> None:
    on_stdin = f"import sys; sys.exit(0 if sys.stdin.buffer.read() == b'x' * {len(EXPECTED)} else 7)"
    cfg = _config(tmp_path, _set("db", f"""\
        - kind: command
          name: app.dump
          command: [{PY}, -c, {json.dumps(WRITER)}]
          check: [{PY}, -c, {json.dumps(on_stdin)}]
        """))
    api.run_backup_set("db", cfg)
    drill = api.restore_drill_set("db", cfg)
    assert not drill["ok"]
    assert drill["checks"][0]["check"]["exit"] == 7 and "exited 7" in drill["checks"][0]["reason"]
    from workers.backup import verify_failure

    assert "app.dump: check python" in (verify_failure(drill) or "").replace(os.path.basename(PY), "python")


@pytest.mark.parametrize("how", ["exit", "killed"])
def test_a_failing_command_saves_no_snapshot(tmp_path: Path, how: str) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a")
    fail = ("import os, sys; sys.stdout.buffer.write(b'half a dump' * 100000); sys.stdout.flush(); "
            "print('FATAL: connection to server lost', file=sys.stderr); "
            + ("sys.exit(3)" if how == "exit" else "os.kill(os.getpid(), 9)"))
    cfg = _config(tmp_path, _set("db", f"""\
        - {{kind: directory, path: files}}
        - kind: command
          name: app.dump
          command: [{PY}, -c, {json.dumps(fail)}]
        """))
    with pytest.raises(CommandFailed) as err:
        api.run_backup_set("db", cfg)
    assert err.value.exit_code == 1
    assert ("exited 3" if how == "exit" else "killed by signal 9") in str(err.value)
    assert "connection to server lost" in str(err.value) and "no snapshot saved" in str(err.value)
    assert _snapshots(cfg, "db") == []


def _hang(tmp_path: Path, spawn: str) -> int:
    """A dump that starts ``spawn`` in the background and waits for it, past its 1 s deadline: the child's pid
    (the run failed and saved nothing)."""
    pidfile = tmp_path / "child.pid"
    cfg = _config(tmp_path, _set("db", f"""\
        - kind: command
          name: app.dump
          command: [sh, -c, "{spawn} & echo $! > {pidfile}; wait"]
          timeout: 1s
        """))
    with pytest.raises(CommandFailed, match="did not finish within its timeout"):
        api.run_backup_set("db", cfg)
    assert _snapshots(cfg, "db") == []
    return int(pidfile.read_text())


def test_a_hanging_command_is_killed_with_its_children(tmp_path: Path) -> None:
    child = _hang(tmp_path, "sleep 300")
    wait_for(lambda: not _alive(child), timeout=10, what="the dump's child process to be killed too")


def test_a_process_that_left_the_group_does_not_stretch_the_deadline(tmp_path: Path) -> None:
    """A daemonised child (setsid) keeps the dump's stdout open: the run still ends at the deadline."""
    escaped = _hang(tmp_path, "setsid sleep 120")
    try:
        assert _alive(escaped)  # it is still running: the run did not wait for it to let go of the pipe
    finally:
        os.kill(escaped, 9)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _logger(log: Path, word: str, code: int = 0) -> str:
    body = (f"import os; open({str(log)!r}, 'a').write({word!r} + ' ' + os.environ.get('BACKUP_HOOK', '-') "
            f"+ ' ' + os.environ.get('BACKUP_RESULT', '-') + ' ' + "
            f"os.environ.get('BACKUP_SNAPSHOT_ID', '-') + ' ' + os.environ['BACKUP_SET'] + '\\n'); "
            f"raise SystemExit({code})")
    return f"[{PY}, -c, {json.dumps(body)}]"


def _dump_logging(log: Path, code: int = 0) -> str:
    body = f"open({str(log)!r}, 'a').write('dump\\n'); print('data'); raise SystemExit({code})"
    return f"[{PY}, -c, {json.dumps(body)}]"


def _hooked(name: str, log: Path, hooks: str, dump_code: int = 0) -> str:
    """A set whose command source logs "dump" to ``log``, with the ``hooks`` block (before:/after:)."""
    return _set(name, f"""\
        - kind: command
          name: app.dump
          command: {_dump_logging(log, dump_code)}
        """, hooks)


def test_hooks_run_in_order_around_the_snapshot(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = _config(tmp_path, _hooked("db", log, f"""\
        before:
          - {{command: {_logger(log, 'freeze')}, on_failure: abort, timeout: 30s}}
          - {{command: {_logger(log, 'flush')}, on_failure: abort}}
        after:
          - {{command: {_logger(log, 'thaw')}, on_failure: continue}}
        """))
    summary = api.run_backup_set("db", cfg, task_key="t1")
    assert log.read_text().splitlines() == ["freeze before - - db", "flush before - - db", "dump",
                                            f"thaw after saved {summary['id']} db"]
    assert [h["phase"] for h in summary["hooks"]] == ["before", "before", "after"] and summary["warnings"] == []
    again = api.run_backup_set("db", cfg, task_key="t1")  # a redelivered task: no hook, no dump runs again
    assert again["reused"] and again["id"] == summary["id"] and len(log.read_text().splitlines()) == 4


def test_an_aborting_before_hook_means_no_snapshot_but_after_hooks_run(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = _config(tmp_path, _hooked("db", log, f"""\
        before:
          - {{command: {_logger(log, 'freeze', 4)}, on_failure: abort}}
          - {{command: {_logger(log, 'never')}, on_failure: abort}}
        after:
          - {{command: {_logger(log, 'thaw')}, on_failure: abort}}
        """))
    with pytest.raises(HookFailed, match="before hook python.* exited 4; no snapshot taken"):
        api.run_backup_set("db", cfg)
    assert log.read_text().splitlines() == ["freeze before - - db", "thaw after skipped  db"]
    assert _snapshots(cfg, "db") == []


def test_continue_reports_and_goes_on_and_an_aborting_after_hook_fails_the_run(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = _config(tmp_path, _hooked("warn", log, f"""\
        before:
          - {{command: {_logger(log, 'optional', 2)}, on_failure: continue}}
        """) + _hooked("strict", log, f"""\
        after:
          - {{command: {_logger(log, 'thaw', 9)}, on_failure: abort}}
        """))
    summary = api.run_backup_set("warn", cfg)
    assert summary["id"] and any("exited 2" in w and "continue" in w for w in summary["warnings"])
    with pytest.raises(HookFailed, match=r"snapshot \w{8} saved, but after hook .* exited 9"):
        api.run_backup_set("strict", cfg)
    assert len(_snapshots(cfg, "strict")) == 1  # saved: the failure is about what the hook should have undone


def test_after_hooks_learn_that_the_snapshot_failed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = _config(tmp_path, _hooked("db", log, f"""\
        after:
          - {{command: {_logger(log, 'thaw')}, on_failure: continue}}
        """, dump_code=1))
    with pytest.raises(CommandFailed):
        api.run_backup_set("db", cfg)
    assert log.read_text().splitlines() == ["dump", "thaw after failed  db"]


@pytest.mark.parametrize(("source", "message"), [
    ("{kind: command, name: a.dump, command: 'pg_dump app'}", "argv list, never a shell string"),
    ("{kind: command, command: [pg_dump]}", "needs name:"),
    ("{kind: command, name: a/b, command: [pg_dump]}", "one file name"),
    ("{kind: command, name: a.dump, command: []}", "at least the program"),
    ("{kind: directory, path: x, check: ['true']}", "only for kind: command"),
    ("{kind: command, name: a.dump, command: [pg_dump, --port, 5432, {x: 1}]}", "argument 3 of the command"),
])
def test_bad_command_sources_name_file_and_line(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, _set("db", f"- {source}\n"))
    assert err.value.line == 8 and message in str(err.value) and "sets.db.sources[0]" in str(err.value)


def test_hooks_need_an_explicit_failure_policy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="before\\[0\\].*required key 'on_failure' is missing"):
        _config(tmp_path, _set("db", "- {kind: directory, path: x}\n", "before:\n  - {command: ['true']}\n"))
    with pytest.raises(ConfigError, match="exclude\\[1\\]: invalid exclude pattern"):
        _config(tmp_path, _set("db", "- {kind: directory, path: x}\n", "exclude: ['*.o', '[unclosed']\n"))


def test_cli_stdin_from_command_like_restic(tmp_path: Path) -> None:
    env = {**os.environ, "CONTINUITY_PASSWORD": "pw", "CONTINUITY_REPOSITORY": str(tmp_path / "repo")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "continuity", "backup", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    assert cli("init").returncode == 0
    bad = cli("snapshot", "--stdin-from-command", "--stdin-filename", "db.dump", "--", PY, "-c",
              "import sys; print('part'); sys.exit(2)")
    assert bad.returncode == 1 and "exited 2" in bad.stderr
    assert json.loads(cli("snapshots", "--json").stdout) == []
    ok = cli("snapshot", "--json", "--stdin-from-command", "--stdin-filename", "db.dump", "--", PY, "-c", WRITER)
    assert ok.returncode == 0, ok.stderr
    listed = json.loads(cli("snapshots", "--json").stdout)
    assert [s["paths"] for s in listed] == [["/db.dump"]]
    assert cli("restore", "latest", "--target", str(tmp_path / "out")).returncode == 0
    assert (tmp_path / "out" / "db.dump").read_bytes() == EXPECTED
    slow = cli("snapshot", "--stdin-from-command", "--command-timeout", "1s", "--", "sleep", "30")
    assert slow.returncode == 1 and "timeout (1.0s)" in slow.stderr
