"""``continuity backup restore``: a snapshot (or chosen paths) back onto disk, every byte verified."""

from __future__ import annotations

from pathlib import Path

import typer

from continuity.backup.restore import restore as do_restore
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, QuietOpt, RepoOpt, fmt_bytes, open_repo
from continuity.cli.output import emit_json
from continuity.errors import ContinuityError

commands = typer.Typer()


@commands.command("restore")
def restore(snapshot_id: str = typer.Argument(..., metavar="SNAPSHOT", help="Snapshot id prefix or 'latest'."),
            target: Path = typer.Option(..., "--target", "-t", help="Directory to restore into."),
            include: list[str] = typer.Option([], "--include", "-i", help="Restore only this path (repeatable)."),
            repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt, json_out: bool = JsonOpt,
            quiet: bool = QuietOpt) -> None:
    """Restore a snapshot (or chosen paths) into --target; every byte is verified."""
    r = open_repo(repo, password_file)
    snap = r.find_snapshot(snapshot_id)
    with output.progress("restore", not (json_out or quiet)) as progress:
        result = do_restore(r, snap, str(target), includes=include or None, progress=progress)
    if json_out:
        emit_json(result)
    elif not quiet:
        output.console.print(f"restored {result['files']} files ({fmt_bytes(result['bytes'])}) from "
                             f"{snap['id'][:8]} to {result['target']} in {result['duration']:.2f}s")
    if result["damaged"]:
        for d in result["damaged"]:
            output.err_console.print(f"damaged: {d['path']}: {d['reason']}", markup=False)
        names = ", ".join(d["path"] for d in result["damaged"][:10])
        raise ContinuityError(f"{len(result['damaged'])} damaged file(s) not restored: {names}")
