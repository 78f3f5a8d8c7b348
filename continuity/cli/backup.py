"""`continuity backup ...`: restic-style commands over the backup engine.

Usable standalone (``--repo`` / ``CONTINUITY_REPOSITORY``, password from
``CONTINUITY_PASSWORD`` or ``--password-file``) so it can be compared with
restic on the same data, and with restic's exit codes so scripts carry over.
All work happens in :mod:`continuity.backup`; this module only parses,
prints and maps outcomes to exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from continuity import settings
from continuity.cli import output
from continuity.cli.output import emit_json
from continuity.errors import ContinuityError, PartialFailure, UsageError

app = typer.Typer(help="Encrypted, deduplicated snapshots with restore drills (restic-style).",
                  no_args_is_help=True)
key_app = typer.Typer(help="Manage the passwords that open a repository, and rotate its data key.",
                      no_args_is_help=True)
app.add_typer(key_app, name="key")

RepoOpt = typer.Option(None, "--repo", "-r", envvar=settings.REPOSITORY.name,
                       help="Repository: a path or s3://bucket/prefix.")
PwFileOpt = typer.Option(None, "--password-file", envvar=settings.PASSWORD_FILE.name,
                         help=f"File whose first line is the password (else ${settings.PASSWORD.name}).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _password(password_file: Path | None, env: settings.Setting[str | None] = settings.PASSWORD,
              what: str = "password") -> bytes:
    if password_file is not None:
        try:
            lines = password_file.read_bytes().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read {what} file {password_file}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise UsageError(f"{what} file {password_file} is empty")
        return lines[0]
    value = env.get()
    if not value:
        raise UsageError(f"no {what}: set ${env.name} or pass --password-file")
    return value.encode()


def _url(repo: str | None) -> str:
    if not repo:
        raise UsageError(f"no repository: pass --repo or set ${settings.REPOSITORY.name}")
    return repo


def _open(repo: str | None, password_file: Path | None) -> Any:
    # not via continuity.backup.api: that imports every engine module and the pydantic config schema,
    # while most commands need only the repository
    from continuity.backup.repository import Repository
    from continuity.backup.storage import open_backend

    return Repository.open(open_backend(_url(repo)), _password(password_file))


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr, only for humans at a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=output.err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@app.command()
def init(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
         copy_params_from: str | None = typer.Option(
             None, help="Share content-ID key and chunker seed with this repository so copy moves only new data."),
         from_password_file: Path | None = typer.Option(
             None, help=f"Password file for --copy-params-from (else ${settings.FROM_PASSWORD.name}, "
                        "else the same password)."),
         json_out: bool = JsonOpt) -> None:
    """Create a repository."""
    from continuity.backup import crypto
    from continuity.backup.api import open_repository
    from continuity.backup.repository import Repository
    from continuity.backup.storage import open_backend

    url = _url(repo)
    password = _password(password_file)
    ring = crypto.Keyring.new()
    if copy_params_from:
        src_pw = (_password(from_password_file, settings.FROM_PASSWORD)
                  if from_password_file or settings.FROM_PASSWORD.get() else password)
        src = open_repository(copy_params_from, src_pw)
        ring.id_key, ring.chunker_seed = src.keyring.id_key, src.keyring.chunker_seed
    r = Repository.init(open_backend(url), password, keyring=ring)
    if json_out:
        emit_json({"repository": url, "id": r.config["id"], "key": r.key_id})
    else:
        output.console.print(f"created repository {r.config['id'][:10]} at {url}")


@app.command()
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
    from continuity.backup.api import load_fleet_backup_config, run_backup_set
    from continuity.backup.snapshot import Source, take_snapshot

    with _progress("snapshot", not (json_out or quiet)) as progress:
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
            summary = take_snapshot(_open(repo, password_file), sources, set_name=set_name, node_name=host,
                                    tags=tag, task_key=task_key, progress=progress, force_full=force)
    if json_out:
        emit_json(summary)
    elif not quiet:
        output.console.print(f"snapshot {summary['id'][:8]} saved"
                      + (" (existing, same task key)" if summary.get("reused") else ""))
        if not summary.get("reused"):
            output.console.print(f"  files: {summary['files_new']} new, {summary['files_changed']} changed, "
                          f"{summary['files_unmodified']} unmodified; dirs: {summary['dirs']}")
            output.console.print(f"  added {_fmt_bytes(summary['data_added'])} in {summary['packs_added']} pack(s); "
                          f"read {_fmt_bytes(summary['bytes_read'])}; {summary['duration']:.2f}s")
    for note in summary.get("notes") or []:
        output.err_console.print(f"note: {note}")
    if summary.get("errors"):
        for e in summary["errors"]:
            output.err_console.print(f"error: {e}", markup=False)
        raise PartialFailure(f"snapshot {summary['id'][:8]} saved, but {len(summary['errors'])} "
                             "source item(s) could not be read completely")


@app.command("list")
def list_(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
          set_name: str | None = typer.Option(None, "--set"), json_out: bool = JsonOpt) -> None:
    """List snapshots (damaged snapshot records are reported, never hidden)."""
    r = _open(repo, password_file)
    snaps, bad = r.load_snapshots()
    if set_name:
        snaps = [s for s in snaps if s.get("set") == set_name]
    rows = [{"id": s["id"], "short_id": s["id"][:8], "time": s["time"], "hostname": s.get("hostname"),
             "set": s.get("set"), "paths": s.get("paths"), "tags": s.get("tags"),
             "files": (s.get("summary") or {}).get("files"), "bytes": (s.get("summary") or {}).get("bytes_total"),
             "original": s.get("original")} for s in snaps]
    if json_out:
        emit_json({"snapshots": rows, "damaged": [{"id": k, "reason": v} for k, v in bad.items()]})
        return
    from rich.table import Table

    t = Table("ID", "Time", "Host", "Set", "Paths", "Files", "Size")
    for row in rows:
        t.add_row(row["short_id"], row["time"][:19].replace("T", " "), str(row["hostname"]), str(row["set"] or ""),
                  ", ".join(row["paths"] or []), str(row["files"]), _fmt_bytes(row["bytes"] or 0))
    output.console.print(t)
    for k, v in bad.items():
        output.err_console.print(f"damaged snapshot {k[:8]}: {v}", markup=False)


@app.command()
def restore(snapshot_id: str = typer.Argument(..., metavar="SNAPSHOT", help="Snapshot id prefix or 'latest'."),
            target: Path = typer.Option(..., "--target", "-t", help="Directory to restore into."),
            include: list[str] = typer.Option([], "--include", "-i", help="Restore only this path (repeatable)."),
            repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt, json_out: bool = JsonOpt,
            quiet: bool = QuietOpt) -> None:
    """Restore a snapshot (or chosen paths) into --target; every byte is verified."""
    from continuity.backup.restore import restore as do_restore

    r = _open(repo, password_file)
    snap = r.find_snapshot(snapshot_id)
    with _progress("restore", not (json_out or quiet)) as progress:
        result = do_restore(r, snap, str(target), includes=include or None, progress=progress)
    if json_out:
        emit_json(result)
    elif not quiet:
        output.console.print(f"restored {result['files']} files ({_fmt_bytes(result['bytes'])}) from "
                      f"{snap['id'][:8]} to {result['target']} in {result['duration']:.2f}s")
    if result["damaged"]:
        for d in result["damaged"]:
            output.err_console.print(f"damaged: {d['path']}: {d['reason']}", markup=False)
        names = ", ".join(d["path"] for d in result["damaged"][:10])
        raise ContinuityError(f"{len(result['damaged'])} damaged file(s) not restored: {names}")


@app.command()
def verify(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
           read_data: bool = typer.Option(False, "--read-data", help="Read and authenticate every pack."),
           read_data_subset: str | None = typer.Option(None, "--read-data-subset",
                                                       help="Read only a subset: n/t (e.g. 1/5) or x%."),
           drill: str | None = typer.Option(None, "--drill", metavar="SNAPSHOT",
                                            help="Also restore SNAPSHOT into a sandbox and prove it."),
           json_out: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Check the repository; exit 1 naming every damaged snapshot and file."""
    from continuity.backup.verify import check, restore_drill

    r = _open(repo, password_file)
    with _progress("verify", not (json_out or quiet)) as progress:
        report = check(r, read_data=read_data or read_data_subset is not None, subset=read_data_subset,
                       progress=progress)
        if drill:
            report["drill"] = restore_drill(r, drill, progress=progress)
    ok = report["ok"] and (not drill or report["drill"]["ok"])
    if json_out:
        emit_json({**report, "ok": ok})
    else:
        _print_verify(report)
    if not ok:
        what = ([f"snapshot {d['id'][:8]}" for d in report["damaged_snapshots"]]
                + [f"index/{d['file'].split('/')[-1][:8]}" for d in report["damaged_index_files"]]
                + [f"pack {d['pack'][:8]}" for d in report["damaged_packs"]]
                + [f"{d['snapshot'][:8]}:{d['path']}" for d in report["damaged_files"]])
        if drill and not report["drill"]["ok"]:
            what.append(f"drill of {report['drill']['snapshot'][:8]} failed")
        raise ContinuityError(f"repository damaged: {', '.join(what[:20])}"
                              + (f" and {len(what) - 20} more" if len(what) > 20 else ""))


def _print_verify(report: dict[str, Any]) -> None:
    output.console.print(f"checked {report['snapshots']} snapshots, {report['packs']} packs"
                  + (f", read {report['packs_read']} packs ({_fmt_bytes(report['bytes_read'])})"
                     if report["packs_read"] else ""))
    for d in report["damaged_index_files"]:
        output.console.print(f"damaged index file {d['file']}: {d['reason']}", markup=False)
    for d in report["damaged_snapshots"]:
        output.console.print(f"damaged snapshot {d['id']}: {d['reason']}", markup=False)
    for d in report["damaged_packs"]:
        output.console.print(f"damaged pack {d['pack']}: {d['reason']}", markup=False)
    for d in report["damaged_trees"]:
        output.console.print(f"snapshot {d['snapshot'][:8]}: {d['path']}: {d['reason']}", markup=False)
    for d in report["damaged_files"]:
        output.console.print(f"snapshot {d['snapshot'][:8]}: damaged file {d['path']}: {d['reason']}", markup=False)
    if report.get("unreferenced_packs"):
        output.console.print(f"{len(report['unreferenced_packs'])} unreferenced pack(s) (prune removes them)")
    if "drill" in report:
        d = report["drill"]
        output.console.print(f"restore drill of {d['snapshot'][:8]}: {'ok' if d['ok'] else 'FAILED'} — "
                      f"{d['files_hashed']} files hashed, sqlite {[c['integrity'] for c in d['sqlite']]}, "
                      f"ledgers {[(c['records'], c['expected_records']) for c in d['ledgers']]}")
    if report["ok"]:
        output.console.print("no errors were found")


@app.command()
def forget(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
           keep_last: int = typer.Option(0, "--keep-last"), keep_hourly: int = typer.Option(0, "--keep-hourly"),
           keep_daily: int = typer.Option(0, "--keep-daily"), keep_weekly: int = typer.Option(0, "--keep-weekly"),
           keep_monthly: int = typer.Option(0, "--keep-monthly"),
           keep_yearly: int = typer.Option(0, "--keep-yearly"),
           keep_within: str | None = typer.Option(None, "--keep-within", help="e.g. 7d, 12h"),
           set_name: str | None = typer.Option(None, "--set", help="Only this backup set."),
           prune_after: bool = typer.Option(False, "--prune", help="Prune right after."),
           dry_run: bool = typer.Option(False, "--dry-run", "-n"), json_out: bool = JsonOpt) -> None:
    """Remove snapshots not kept by the policy (per backup set / host+paths group)."""
    from continuity.backup.prune import forget as do_forget
    from continuity.backup.prune import prune
    from continuity.backup.retention import Policy
    from continuity.durations import parse_duration

    try:
        within = parse_duration(keep_within) if keep_within else 0.0
    except ValueError as exc:
        raise UsageError(f"--keep-within: {exc}") from None
    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, within)
    if policy.empty():
        raise UsageError("no policy given: refusing to forget everything (use --keep-last etc.)")
    r = _open(repo, password_file)
    result = do_forget(r, policy, set_name=set_name, dry_run=dry_run)
    result["prune"] = prune(r, dry_run=dry_run) if prune_after else None
    if json_out:
        emit_json(result)
        return
    output.console.print(f"keep {len(result['keep'])} snapshot(s), remove {len(result['remove'])}"
                  + (" (dry run)" if dry_run else ""))
    for s in result["remove"]:
        output.console.print(f"  remove {s['id'][:8]} {s['time'][:19]} {s['group']}", markup=False)
    if result["prune"]:
        p = result["prune"]
        output.console.print(f"pruned: {p['packs_deleted']} packs deleted, {p['packs_repacked']} repacked")


@app.command()
def prune(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
          dry_run: bool = typer.Option(False, "--dry-run", "-n"), json_out: bool = JsonOpt) -> None:
    """Remove data no snapshot references (takes the exclusive lock)."""
    from continuity.backup.prune import prune as do_prune

    result = do_prune(_open(repo, password_file), dry_run=dry_run)
    if json_out:
        emit_json(result)
    else:
        output.console.print(f"packs: {result['packs_kept']} kept, {result['packs_repacked']} repacked, "
                      f"{result['packs_deleted']} deleted" + (" (dry run)" if dry_run else ""))


@app.command()
def copy(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
         to: str = typer.Option(..., "--to", help="Destination repository."),
         to_password_file: Path | None = typer.Option(None, help="Destination password file "
                                                      f"(else ${settings.TO_PASSWORD.name}, else the same password)."),
         set_name: str | None = typer.Option(None, "--set"),
         snapshot_ids: list[str] = typer.Argument(None, metavar="[SNAPSHOT]..."),
         json_out: bool = JsonOpt) -> None:
    """Copy snapshots to another repository, moving only data it lacks."""
    from continuity.backup.api import open_repository
    from continuity.backup.replicate import copy as do_copy

    src = _open(repo, password_file)
    pw = (_password(to_password_file, settings.TO_PASSWORD)
          if to_password_file or settings.TO_PASSWORD.get() else _password(password_file))
    dst = open_repository(to, pw)
    result = do_copy(src, dst, snapshot_ids=snapshot_ids or None, set_name=set_name)
    if json_out:
        emit_json(result)
    else:
        output.console.print(f"copied {len(result['copied'])} snapshot(s), skipped {result['skipped']}; "
                      f"added {result['blobs_added']} blobs ({_fmt_bytes(result['bytes_added'])})")


@app.command()
def unlock(repo: str | None = RepoOpt,
           remove_all: bool = typer.Option(False, "--remove-all", help="Also remove locks that look live."),
           json_out: bool = JsonOpt) -> None:
    """Remove stale locks (dead process on this host, or not refreshed for 30 minutes)."""
    from continuity.backup.locks import unlock as do_unlock
    from continuity.backup.storage import open_backend

    backend = open_backend(_url(repo))
    if not backend.exists("config"):
        from continuity.errors import RepositoryMissing

        raise RepositoryMissing(f"no repository at {backend.url}")
    removed = do_unlock(backend, remove_all=remove_all)
    if json_out:
        emit_json({"removed": removed})
    else:
        output.console.print(f"removed {len(removed)} lock(s)")
        for r in removed:
            output.console.print(f"  {r}", markup=False)


@key_app.command("list")
def key_list(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt, json_out: bool = JsonOpt) -> None:
    """List key files (passwords) of the repository."""
    r = _open(repo, password_file)
    keys = r.list_keys()
    if json_out:
        emit_json({"keys": keys, "data_key": f"{r.keyring.current:08x}",
                   "data_keys": len(r.keyring.data_keys)})
        return
    for k in keys:
        mark = "*" if k.get("current") else " "
        output.console.print(f"{mark} {k['id'][:8]}  {k.get('username')}@{k.get('hostname')}")
    output.console.print(f"current data key {r.keyring.current:08x} ({len(r.keyring.data_keys)} in keyring)")


@key_app.command("add")
def key_add(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
            new_password_file: Path | None = typer.Option(
                None, help=f"Else ${settings.NEW_PASSWORD.name}.")) -> None:
    """Add a password that opens the repository."""
    r = _open(repo, password_file)
    kid = r.add_key(_password(new_password_file, settings.NEW_PASSWORD, "new password"))
    output.console.print(f"added key {kid[:8]}")


@key_app.command("remove")
def key_remove(key_id: str = typer.Argument(...), repo: str | None = RepoOpt,
               password_file: Path | None = PwFileOpt) -> None:
    """Remove a key file (not the one used to open the repository)."""
    _open(repo, password_file).remove_key(key_id)
    output.console.print(f"removed key {key_id[:8]}")


@key_app.command("rotate")
def key_rotate(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt) -> None:
    """Start a new data key for new writes; data under older keys stays readable."""
    kid = _open(repo, password_file).rotate()
    output.console.print(f"new data key {kid:08x}")
