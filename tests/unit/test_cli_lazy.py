"""The CLI imports a command's module only when that command runs, yet --help lists them all.

That holds one level down too: ``backup``, ``failover``, ``drill`` and ``pulse``
are lazy groups whose subcommands live in small modules of their own.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from continuity.cli import COMMANDS, app, load_command
from continuity.cli.backup import COMMANDS as BACKUP
from continuity.cli.drill import COMMANDS as DRILL
from continuity.cli.failover import COMMANDS as FAILOVER
from continuity.cli.lazy import LazyCommand
from continuity.cli.pulse import COMMANDS as PULSE
from tests.unit.test_backup_damage import run_cli

ROOT = Path(__file__).resolve().parents[2]

# what a run left in sys.modules, printed as JSON whatever the exit status
PROBE = """
import json, sys
from continuity.cli import main
try:
    main(sys.argv[1:])
finally:
    mods = [m for m in sys.modules if m.startswith(("continuity", "rich", "celery", "redis"))]
    print("\\nMODULES " + json.dumps(mods), file=sys.stderr)
"""


def _modules(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, set[str]]:
    full_env = {**os.environ, "COLUMNS": "300", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, check=False)
    line = [x for x in proc.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return proc.returncode, proc.stdout, set(json.loads(line[len("MODULES "):]))


# machinery every run imports; a command module is anything else under continuity.cli
CLI_CORE = {"continuity.cli.output", "continuity.cli.lazy"}
SUBCOMMANDS = [(group, name, entry) for group, registry in
               (("backup", BACKUP), ("failover", FAILOVER), ("drill", DRILL), ("pulse", PULSE))
               for name, entry in registry.items()]


def _first_paragraph(cmd: click.Command) -> str:
    return inspect.cleandoc(cmd.help or "").split("\n\n")[0].replace("\n", " ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_registry_help_matches_the_command(name: str) -> None:
    """The hard-coded short help must say what the module's own help says (else --help drifts)."""
    cmd = load_command(name)
    assert cmd.name == name
    assert _first_paragraph(cmd) == COMMANDS[name].help


@pytest.mark.parametrize(("group", "name", "entry"), SUBCOMMANDS, ids=[f"{g}-{n}" for g, n, _ in SUBCOMMANDS])
def test_subcommand_registry_help_matches_the_command(group: str, name: str, entry: LazyCommand) -> None:
    """The same for each lazy group's subcommands: the registry's text is what the command's docstring says."""
    cmd = entry.load(name)
    assert cmd.name == name
    assert _first_paragraph(cmd) == entry.help


@pytest.mark.parametrize("group", ["backup", "failover", "drill", "pulse"])
def test_group_help_lists_its_commands_without_importing_them(group: str) -> None:
    rc, out, mods = _modules([group, "--help"])
    assert rc == 0
    for g, name, entry in SUBCOMMANDS:
        if g == group:
            assert any(line.split()[1:2] == [name] and entry.help in line for line in out.splitlines()), name
    assert {m for m in mods if m.startswith(f"continuity.cli.{group}.")} == set()
    assert "redis" not in mods and "celery" not in mods


def test_help_lists_every_command_without_importing_any() -> None:
    rc, out, mods = _modules(["--help"])
    assert rc == 0
    for name, entry in COMMANDS.items():
        assert any(line.split()[1:2] == [name] and entry.help in line for line in out.splitlines()), name
    loaded = {m for m in mods if m.startswith("continuity.cli.") and m not in CLI_CORE}
    assert loaded == set()
    assert "continuity.blueprint" not in mods and "celery" not in mods


def test_backup_list_imports_only_what_it_uses(tmp_path: Path) -> None:
    env = {"CONTINUITY_PASSWORD": "pw"}
    subprocess.run([sys.executable, "-m", "continuity", "backup", "init", "--repo", str(tmp_path / "r")],
                   env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
    rc, out, mods = _modules(["backup", "list", "--repo", str(tmp_path / "r"), "--json"], env)
    assert rc == 0 and json.loads(out) == []
    assert "continuity.cli.backup" in mods and "continuity.backup.repository" in mods
    heavy = {"continuity.blueprint", "continuity.config", "continuity.backup.api", "continuity.backup.config",
             "continuity.cli.failover", "continuity.cli.drill", "continuity.cli.status", "continuity.cli.up",
             "continuity.cli.processes", "continuity.cli.launch", "continuity.cli.backup.snapshot",
             "continuity.cli.backup.init", "rich.console", "rich.table", "celery", "redis"}
    assert heavy & mods == set()


def test_pulse_verify_does_not_import_redis(tmp_path: Path) -> None:
    """verify is what one runs when Redis is gone: only ``pulse tail`` (its own module) pays for redis-py."""
    history = tmp_path / "pulse_history.jsonl"
    history.write_text("")
    rc, out, mods = _modules(["pulse", "verify", "--file", str(history)])
    assert rc == 0 and "0 events, chain intact" in out
    assert "continuity.cli.pulse" in mods
    assert {"continuity.cli.pulse_tail", "redis", "rich.console"} & mods == set()


def test_commands_resolve_through_click_and_run_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    assert root.list_commands(ctx)[: len(COMMANDS)] == list(COMMANDS)
    backup = root.get_command(ctx, "backup")
    assert backup is not None and backup.get_command(ctx, "list") is not None
    assert root.get_command(ctx, "nope") is None
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    assert run_cli(["backup", "init", "--repo", str(tmp_path / "r")], capsys)[0] == 0


def test_typo_suggests_a_command_not_imported_yet(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["failovr"], capsys)
    assert rc == 2 and "Did you mean 'failover'" in err
