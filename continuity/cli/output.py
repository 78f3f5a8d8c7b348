"""Shared output helpers so every read command offers the same ``--json`` contract.

rich costs a few hundred milliseconds to import, and a ``--json`` run (what
scripts call in loops) never draws a table, so this is the one module of the
CLI that imports rich, and only when a human-readable view is drawn: the
console, tables and progress bars are built here on first use.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    console: Console
    err_console: Console


def __getattr__(name: str) -> Any:
    """``console`` / ``err_console`` are made on first use: a ``--json`` run never pays for importing rich."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console  # why: rich only once something is printed for a human (module docstring)

    made = Console(stderr=name == "err_console")
    globals()[name] = made
    return made


def table(*headers: str, keep: tuple[str, ...] = (), **options: Any) -> Table:
    """A rich table with these column headers (``options`` as for ``rich.table.Table``, e.g. ``title``).

    Columns named in ``keep`` hold what people type next (scenario names, ids, sets): they are never wrapped
    or cut with an ellipsis; the other columns wrap to make room at 80 columns."""
    from rich.table import Column, Table  # why: only human output draws tables (module docstring)

    return Table(*(Column(h, no_wrap=h in keep) for h in headers), **options)


def group(*renderables: Any) -> Any:
    """Several rich renderables printed as one (a table of nodes above a table of services)."""
    from rich.console import Group  # why: only human output draws tables (module docstring)

    return Group(*renderables)


def text(line: str) -> Any:
    """A plain line among tables (no markup is read from it)."""
    from rich.text import Text  # why: only human output draws (module docstring)

    return Text(line)


def warning(text: str) -> Any:
    """A line a human must not miss, printed as is (no markup is read from it: it may quote a user's file)."""
    from rich.text import Text  # why: only human output draws (module docstring)

    return Text(text, style="bold red")


def note(text: str) -> Any:
    """A line about work in progress (a failover, a drill), printed as is."""
    from rich.text import Text  # why: only human output draws (module docstring)

    return Text(text, style="bold yellow")


@contextmanager
def progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr, only for humans at a terminal; yields ``update(done, total)`` or None."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    # why: a script (no TTY) or --json/--quiet run never imports rich's progress machinery
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    err_console = sys.modules[__name__].err_console  # made once, shared with every other stderr message
    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (stable key order, one document, trailing newline)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
