"""`continuity pulse ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="pulse commands", no_args_is_help=True)
