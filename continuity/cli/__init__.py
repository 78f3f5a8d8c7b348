"""The ``continuity`` command: one module (or package) per command group, mounted here lazily.

Every command raises :class:`continuity.errors.ContinuityError` for failures a
user should read; :func:`main` turns those into one line on stderr and the
restic-style exit code, so no user mistake ever ends in a traceback.

A command's module is imported only when that command runs (see
:mod:`continuity.cli.lazy`): importing all of them pulls in the blueprint's
pydantic models, redis-py and rich tables, which roughly doubled the start-up
of a ``continuity backup list`` that scripts call in loops. Groups with
subcommands (``backup``, ``failover``, ``drill``, ``pulse``) are lazy the same
way, one level down, so each small module imports what it needs at its top.
Celery and ``workers/`` are reached only through :mod:`continuity.cli.launch`.

Shell completion (bash, zsh, fish) is typer's: ``continuity --install-completion``
adds it for the shell it runs in, ``--show-completion`` prints the script. The
command is always called ``continuity`` (also under ``python -m continuity``), so
the completion scripts work however it was started.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from continuity import __version__
from continuity.cli.lazy import LazyCommand, LazyGroup
from continuity.errors import ContinuityError, ExitCode

try:  # newer typer releases vendor their own copy of click: usage errors come from there
    from typer._click.exceptions import ClickException as _VendoredClickException
except ImportError:  # older typer uses click itself, handled in _click_errors
    _VendoredClickException = None  # type: ignore[assignment,misc]

COMMANDS: dict[str, LazyCommand] = {
    "worker": LazyCommand("processes", "Run a Celery worker for one node's queue (hostname NODE@%h) that registers "
                                       "the node in Redis."),
    "beat": LazyCommand("processes", "Run celery beat with the Redis lock: a second beat is a hot standby."),
    "status": LazyCommand("status", "Nodes (last seen, queue depth), services (tier, primary, standbys) and the "
                                    "continuity mode."),
    "up": LazyCommand("up", "Start the embedded fleet: redis-server, one worker per node, beat and Flower. "
                            "Ctrl-C stops it all."),
    "report": LazyCommand("report", "Per domain and tier: declared vs measured RTO/RPO, backup freshness, last "
                                    "verified restore, verdict."),
    "blueprint": LazyCommand("blueprint", "Validate the blueprint and render what it implies."),
    "backup": LazyCommand("backup", "Encrypted, deduplicated snapshots with restore drills (restic-style)."),
    "failover": LazyCommand("failover", "Failover: status, switchover, forced failover, maintenance pause, history."),
    "drill": LazyCommand("drill", "Chaos drills: list scenarios, run one (or plan it with --dry-run), read reports."),
    "pulse": LazyCommand("pulse", "Read and verify the pulse history; list its event kinds."),
    "operator": LazyCommand("operator", "Operator identity: make an operator key, show who commands act as."),
    "metrics": LazyCommand("metrics", "Print the fleet's Prometheus metrics once (what /metrics serves): backups, "
                                      "services, replication, nodes, drills, pulse."),
    "notify": LazyCommand("notify", "Webhook notifications: check ops/notifications.yml, see deliveries, send a "
                                    "test."),
}


def load_command(name: str) -> Any:
    """Import the module behind the top-level command ``name`` and build its click command."""
    return COMMANDS[name].load(name)


class RootGroup(LazyGroup):
    """The top-level group: every command of :data:`COMMANDS`, imported only when used."""

    registry = COMMANDS


app = typer.Typer(
    name="continuity",
    help="Continuity & resilience layer: backups, failure detection, failover, chaos drills.",
    cls=RootGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"continuity {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_show_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    # a callback makes typer build a group even though no command is registered eagerly
    pass


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, prog_name="continuity", standalone_mode=False)
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
    """Usage errors may come from typer's vendored click, or from click itself.

    click is looked up, not imported: a ``click.ClickException`` can only have
    been raised if something already imported click, and importing it for the
    check would add its start-up to every failing command.
    """
    found: list[type[Exception]] = []
    if _VendoredClickException is not None:
        found.append(_VendoredClickException)
    click = sys.modules.get("click")
    if click is not None:
        found.append(click.ClickException)
    return tuple(found)
