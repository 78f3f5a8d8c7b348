"""The ``continuity`` command: one file per command group, mounted here.

Every command raises :class:`continuity.errors.ContinuityError` for failures a
user should read; :func:`main` turns those into one line on stderr and the
restic-style exit code, so no user mistake ever ends in a traceback.
"""

from __future__ import annotations

import sys

import typer

from continuity.cli import backup, blueprint, drill, failover, pulse, report, runtime
from continuity.errors import ContinuityError, ExitCode

app = typer.Typer(
    name="continuity",
    help="Continuity & resilience layer: backups, failure detection, failover, chaos drills.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(blueprint.app, name="blueprint")
app.add_typer(backup.app, name="backup")
app.add_typer(failover.app, name="failover")
app.add_typer(drill.app, name="drill")
app.add_typer(pulse.app, name="pulse")
runtime.register(app)
report.register(app)


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
