"""`continuity failover ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="failover commands", no_args_is_help=True)
