"""``continuity backup snapshot``: back up paths, SQLite databases and ledgers, or a configured backup set.

This is the command that needs the whole engine: the snapshot writer and, for
``--config --set``, the pydantic backup-set schema in :mod:`continuity.backup.api`,
which is imported only on that path (a snapshot of paths does not pay for it).
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity.backup.excludes import BadPattern, ExcludeOptions
from continuity.backup.excludes import build as build_excluder
from continuity.backup.snapshot import Source, take_snapshot
from continuity.cli import output
from continuity.cli.backup.common import (
    JsonOpt,
    LimitDownOpt,
    LimitUpOpt,
    PwFileOpt,
    QuietOpt,
    RepoOpt,
    fmt_bytes,
    open_repo,
)
from continuity.cli.output import emit_json
from continuity.durations import parse_duration
from continuity.errors import PartialFailure, UsageError

commands = typer.Typer()


@commands.command("snapshot")
def snapshot(paths: list[str] = typer.Argument(None, help="Directories or files to back up (with "
                                                          "--stdin-from-command: the command and its arguments)."),
             repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
             sqlite: list[str] = typer.Option([], "--sqlite", help="SQLite database to copy online."),
             ledger: list[str] = typer.Option([], "--ledger", help="JSON Lines / JSON array ledger."),
             config: Path | None = typer.Option(None, "--config", help="Run a backup set from this file."),
             set_name: str | None = typer.Option(None, "--set", help="Backup set name."),
             tag: list[str] = typer.Option([], "--tag"),
             host: str | None = typer.Option(None, "--host", help="Node name recorded in the snapshot."),
             task_key: str | None = typer.Option(None, help="Idempotency key: reuse a snapshot with this key."),
             force: bool = typer.Option(False, "--force", help="Re-read every file (ignore the parent)."),
             exclude: list[str] = typer.Option([], "--exclude", "-e", metavar="PATTERN",
                                               help="Leave out what matches PATTERN (restic's syntax; repeatable)."),
             iexclude: list[str] = typer.Option([], "--iexclude", metavar="PATTERN",
                                                help="Like --exclude, ignoring case."),
             exclude_file: list[str] = typer.Option([], "--exclude-file", metavar="FILE",
                                                    help="Read exclude patterns from FILE (repeatable)."),
             iexclude_file: list[str] = typer.Option([], "--iexclude-file", metavar="FILE",
                                                     help="Like --exclude-file, ignoring case."),
             exclude_caches: bool = typer.Option(False, "--exclude-caches",
                                                 help="Leave out the contents of directories tagged with a valid "
                                                      "CACHEDIR.TAG (the tag itself is kept)."),
             exclude_if_present: list[str] = typer.Option([], "--exclude-if-present", metavar="NAME[:HEADER]",
                                                          help="Leave out the contents of directories holding NAME "
                                                               "(starting with HEADER)."),
             one_file_system: bool = typer.Option(False, "--one-file-system", "-x",
                                                  help="Do not cross file system boundaries (mount points are "
                                                       "kept, empty)."),
             stdin_from_command: bool = typer.Option(False, "--stdin-from-command",
                                                     help="Run the arguments as a command and store its stdout; "
                                                          "a failing command saves nothing (exit 1)."),
             stdin_filename: str = typer.Option("stdin", "--stdin-filename",
                                                help="File name of the command's output in the snapshot."),
             command_timeout: str | None = typer.Option(None, "--command-timeout", metavar="DURATION",
                                                        help="Kill the --stdin-from-command command after this "
                                                             "long (default: no limit)."),
             limit_upload: int | None = LimitUpOpt, limit_download: int | None = LimitDownOpt,
             json_out: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Take a snapshot of PATHS (and --sqlite / --ledger sources, or a command's output), or of a configured --set."""
    opts = ExcludeOptions(tuple(exclude), tuple(iexclude), tuple(exclude_file), tuple(iexclude_file), exclude_caches,
                          tuple(exclude_if_present), one_file_system)
    with output.progress("snapshot", not (json_out or quiet)) as progress:
        if config is not None:
            if not set_name:
                raise UsageError("--config needs --set NAME")
            if not opts.empty() or stdin_from_command:
                raise UsageError("with --config the set's own keys decide what is excluded (exclude:, "
                                 "exclude_caches:, ...) and what runs (kind: command)")
            # why here: the set schema (pydantic) and the whole api cost ~15 MiB and 0.3 s at start-up,
            # which a snapshot of paths, the common scripted case, does not use
            from continuity.backup.api import load_fleet_backup_config, run_backup_set

            cfg = load_fleet_backup_config(config)
            for note in cfg.notes:
                output.err_console.print(f"note: {note}", markup=False, soft_wrap=True)
            summary = run_backup_set(set_name, cfg, task_key=task_key, progress=progress)
        else:
            sources = _sources(paths or [], sqlite, ledger, stdin_from_command, stdin_filename, command_timeout)
            try:
                excluder = build_excluder(opts)
            except BadPattern as exc:
                raise UsageError(str(exc)) from None
            r = open_repo(repo, password_file, limit_upload, limit_download)
            summary = take_snapshot(r, sources, set_name=set_name, node_name=host, tags=tag, task_key=task_key,
                                    progress=progress, force_full=force, excluder=excluder)
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
    for d in summary.get("skipped") or []:
        output.err_console.print(f"skipped: {d['path']}: {d['reason']}", markup=False, soft_wrap=True)
    for warning in summary.get("warnings") or []:
        output.err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if summary.get("errors"):
        for e in summary["errors"]:
            output.err_console.print(f"error: {e}", markup=False, soft_wrap=True)
        raise PartialFailure(f"snapshot {summary['id'][:8]} saved, but {len(summary['errors'])} "
                             "source item(s) could not be read completely")


def _sources(paths: list[str], sqlite: list[str], ledger: list[str], from_command: bool, filename: str,
             timeout: str | None) -> list[Source]:
    if from_command:
        if not paths:
            raise UsageError("--stdin-from-command needs the command to run: ... --stdin-from-command -- prog args")
        if sqlite or ledger:
            raise UsageError("--stdin-from-command stores one command's output: no --sqlite / --ledger with it")
        # why here: the set schema (pydantic) is needed only by this branch
        from continuity.backup.config import check_file_name

        try:
            check_file_name(filename)
            limit = parse_duration(timeout) if timeout is not None else None
        except ValueError as exc:
            raise UsageError(f"--stdin-filename / --command-timeout: {exc}") from None
        return [Source.command(filename, paths, timeout=limit)]
    sources = ([Source("directory", p) for p in paths] + [Source("sqlite", p) for p in sqlite]
               + [Source("ledger", p) for p in ledger])
    if not sources:
        raise UsageError("nothing to back up: give PATHS, --sqlite or --ledger (or --config --set)")
    return sources
