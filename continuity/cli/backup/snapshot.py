"""``continuity backup snapshot``: back up paths, SQLite databases and ledgers, or a configured backup set.

This is the command that needs the whole engine: the snapshot writer and, for
``--config --set``, the pydantic backup-set schema in :mod:`continuity.backup.api`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity.backup.api import load_fleet_backup_config, run_backup_set
from continuity.backup.snapshot import Source, take_snapshot
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, QuietOpt, RepoOpt, fmt_bytes, open_repo
from continuity.cli.output import emit_json
from continuity.errors import PartialFailure, UsageError

commands = typer.Typer()


@commands.command("snapshot")
def snapshot(paths: list[str] = typer.Argument(None, help="Directories or files to back up."),
             repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
             sqlite: list[str] = typer.Option([], "--sqlite", help="SQLite database to copy online."),
             ledger: list[str] = typer.Option([], "--ledger", help="JSON Lines / JSON array ledger."),
             config: Path | None = typer.Option(None, "--config", help="Run a backup set from this file."),
             set_name: str | None = typer.Option(None, "--set", help="Backup set name."),
             tag: list[str] = typer.Option([], "--tag"),
             host: str | None = typer.Option(None, "--host", help="Node name recorded in the snapshot."),
             task_key: str | None = typer.Option(None, help="Idempotency key: reuse a snapshot with this key."),
             force: bool = typer.Option(False, "--force", help="Re-read every file (ignore the parent)."),
             json_out: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Take a snapshot of PATHS (and --sqlite / --ledger sources), or of a configured --set."""
    with output.progress("snapshot", not (json_out or quiet)) as progress:
        if config is not None:
            if not set_name:
                raise UsageError("--config needs --set NAME")
            cfg = load_fleet_backup_config(config)
            for note in cfg.notes:
                output.err_console.print(f"note: {note}", markup=False, soft_wrap=True)
            summary = run_backup_set(set_name, cfg, task_key=task_key, progress=progress)
        else:
            sources = ([Source("directory", p) for p in paths or []] + [Source("sqlite", p) for p in sqlite]
                       + [Source("ledger", p) for p in ledger])
            if not sources:
                raise UsageError("nothing to back up: give PATHS, --sqlite or --ledger (or --config --set)")
            summary = take_snapshot(open_repo(repo, password_file), sources, set_name=set_name, node_name=host,
                                    tags=tag, task_key=task_key, progress=progress, force_full=force)
    if json_out:
        emit_json(summary)
    elif not quiet:
        output.console.print(f"snapshot {summary['id'][:8]} saved"
                             + (" (existing, same task key)" if summary.get("reused") else ""))
        if not summary.get("reused"):
            output.console.print(f"  files: {summary['files_new']} new, {summary['files_changed']} changed, "
                                 f"{summary['files_unmodified']} unmodified; dirs: {summary['dirs']}")
            output.console.print(f"  added {fmt_bytes(summary['data_added'])} in {summary['packs_added']} pack(s); "
                                 f"read {fmt_bytes(summary['bytes_read'])}; {summary['duration']:.2f}s")
    for note in summary.get("notes") or []:
        output.err_console.print(f"note: {note}")
    if summary.get("errors"):
        for e in summary["errors"]:
            output.err_console.print(f"error: {e}", markup=False)
        raise PartialFailure(f"snapshot {summary['id'][:8]} saved, but {len(summary['errors'])} "
                             "source item(s) could not be read completely")
