"""``continuity backup copy``: copy snapshots between repositories, moving only the data the destination lacks."""

from __future__ import annotations

from pathlib import Path

import typer

from continuity import settings
from continuity.backup.api import open_repository
from continuity.backup.replicate import copy as do_copy
from continuity.backup.throttle import Limits
from continuity.cli import output
from continuity.cli.backup.common import (
    JsonOpt,
    LimitDownOpt,
    LimitUpOpt,
    PwFileOpt,
    RepoOpt,
    fmt_bytes,
    open_repo,
    password,
)
from continuity.cli.output import emit_json

commands = typer.Typer()


@commands.command("copy")
def copy(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
         to: str = typer.Option(..., "--to", help="Destination repository."),
         to_password_file: Path | None = typer.Option(None, help="Destination password file "
                                                      f"(else ${settings.TO_PASSWORD.name}, else the same password)."),
         set_name: str | None = typer.Option(None, "--set"),
         snapshot_ids: list[str] = typer.Argument(None, metavar="[SNAPSHOT]..."),
         limit_upload: int | None = LimitUpOpt, limit_download: int | None = LimitDownOpt,
         json_out: bool = JsonOpt) -> None:
    """Copy snapshots to another repository, moving only data it lacks."""
    src = open_repo(repo, password_file, limit_download=limit_download)
    pw = (password(to_password_file, settings.TO_PASSWORD)
          if to_password_file or settings.TO_PASSWORD.get() else password(password_file))
    dst = open_repository(to, pw, limits=Limits.from_kib(limit_upload, None))
    result = do_copy(src, dst, snapshot_ids=snapshot_ids or None, set_name=set_name)
    if json_out:
        emit_json(result)
    else:
        output.console.print(f"copied {len(result['copied'])} snapshot(s), skipped {result['skipped']}; "
                             f"added {result['blobs_added']} blobs ({fmt_bytes(result['bytes_added'])})")
