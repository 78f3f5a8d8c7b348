"""``continuity backup unlock``: remove stale repository locks (needs the storage backend, not the password)."""

from __future__ import annotations

import typer

from continuity.backup.locks import unlock as do_unlock
from continuity.backup.storage import open_backend
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, RepoOpt, url
from continuity.cli.output import emit_json
from continuity.errors import RepositoryMissing

commands = typer.Typer()


@commands.command("unlock")
def unlock(repo: str | None = RepoOpt,
           remove_all: bool = typer.Option(False, "--remove-all", help="Also remove locks that look live."),
           json_out: bool = JsonOpt) -> None:
    """Remove stale locks (dead process on this host, or not refreshed for 30 minutes)."""
    backend = open_backend(url(repo))
    if not backend.exists("config"):
        raise RepositoryMissing(f"no repository at {backend.url}")
    removed = do_unlock(backend, remove_all=remove_all)
    if json_out:
        emit_json({"removed": removed})
    else:
        output.console.print(f"removed {len(removed)} lock(s)")
        for r in removed:
            output.console.print(f"  {r}", markup=False)
