"""The ``continuity`` command: one file per command group, mounted here lazily.

Every command raises :class:`continuity.errors.ContinuityError` for failures a
user should read; :func:`main` turns those into one line on stderr and the
restic-style exit code, so no user mistake ever ends in a traceback.

Command modules are imported only when their command runs: importing all of
them pulls in the blueprint's pydantic models, Celery-facing helpers and rich
tables, which roughly doubled the start-up of a ``continuity backup list``
that scripts call in loops. The short help of each command is written in
:data:`COMMANDS` so ``continuity --help`` lists everything without importing
anything (``tests/unit/test_cli_lazy.py`` keeps those strings honest).
"""

from __future__ import annotations

import importlib
import sys
from difflib import get_close_matches
from typing import Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from continuity.errors import ContinuityError, ExitCode


class LazyCommand(NamedTuple):
    module: str  # continuity.cli.<module>: a Typer ``app`` (a group) or a ``register(app)`` adding this command
    help: str  # shown by ``continuity --help`` without importing ``module``


COMMANDS: dict[str, LazyCommand] = {
    "worker": LazyCommand("runtime", "Run a Celery worker for one node's queue (hostname NODE@%h) that registers the "
                                     "node in Redis."),
    "beat": LazyCommand("runtime", "Run celery beat with the Redis lock: a second beat is a hot standby."),
    "status": LazyCommand("runtime", "Nodes (last seen, queue depth), services (tier, primary, standbys) and the "
                                     "continuity mode."),
    "up": LazyCommand("runtime", "Start the embedded fleet: redis-server, one worker per node, beat and Flower. "
                                 "Ctrl-C stops it all."),
    "report": LazyCommand("report", "Per domain and tier: declared vs measured RTO/RPO, backup freshness, last "
                                    "verified restore, verdict."),
    "blueprint": LazyCommand("blueprint", "Validate the blueprint and render what it implies."),
    "backup": LazyCommand("backup", "Encrypted, deduplicated snapshots with restore drills (restic-style)."),
    "failover": LazyCommand("failover", "Failover: status, switchover, forced failover, maintenance pause, history."),
    "drill": LazyCommand("drill", "Chaos drills: list scenarios, run one (or plan it with --dry-run), read reports."),
    "pulse": LazyCommand("pulse", "Read and verify the pulse history; list its event kinds."),
}


def load_command(name: str) -> Any:
    """Import the module behind ``name`` and build its click command (a group for ``app`` modules)."""
    module = importlib.import_module(f"continuity.cli.{COMMANDS[name].module}")
    if hasattr(module, "register"):
        holder = typer.Typer()
        module.register(holder)
        return typer.main.get_group(holder).commands[name]
    cmd = typer.main.get_group(module.app)
    cmd.name = name
    return cmd


class LazyGroup(TyperGroup):
    """The top-level group: lists every command from :data:`COMMANDS`, imports one only when it is used."""

    _help_only = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in self.commands if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        if self._help_only:  # listing for --help: the registry's text is enough
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name].help)
        cmd = load_command(cmd_name)
        self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._help_only = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._help_only = False

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """As typer's, but "did you mean" also offers commands not imported yet."""
        try:
            return self._click_resolve_command(ctx, args)
        except Exception as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches and isinstance(getattr(exc, "message", None), str):
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"  # type: ignore[attr-defined]
            raise


app = typer.Typer(
    name="continuity",
    help="Continuity & resilience layer: backups, failure detection, failover, chaos drills.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    # a callback makes typer build a group even though no command is registered eagerly
    pass


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, standalone_mode=False)
    except ContinuityError as exc:
        typer.echo(f"continuity: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        typer.echo("continuity: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Abort:
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code (2)
        if isinstance(exc, _click_errors()):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


def _click_errors() -> tuple[type[Exception], ...]:
    """Usage errors may come from click or from the copy of click that newer typer releases vendor."""
    import click

    found: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:
        pass
    else:
        found.append(VendoredClickException)
    return tuple(found)
