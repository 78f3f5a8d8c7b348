"""``continuity backup restore``: a snapshot (or chosen paths) back onto disk, every byte verified.

With ``--seq N`` or ``--at TIME`` (and ``--set``) it is a point-in-time restore: the newest snapshot of the set
that ends at or before the target, then the set's shipped ledger log up to exactly that record
(:mod:`continuity.backup.pitr`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from continuity.backup.pitr import base_snapshot, recover_ledger, write_ledger
from continuity.backup.restore import restore as do_restore
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
from continuity.errors import ContinuityError, UsageError

commands = typer.Typer()


def parse_at(text: str) -> float:
    """``--at``: ISO 8601 (no zone means UTC) or unix seconds; a usage error naming the value otherwise."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value) and value >= 0:
            return value
        raise UsageError(f"--at {text!r}: not a time (ISO 8601 like 2026-12-01T03:00:00Z, or unix seconds)")
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--at {text!r}: not a time (ISO 8601 like 2026-12-01T03:00:00Z, or unix seconds)") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@commands.command("restore")
def restore(snapshot_id: str | None = typer.Argument(None, metavar="[SNAPSHOT]",
                                                     help="Snapshot id prefix or 'latest' (left out with --seq/--at: "
                                                          "the restore picks its base snapshot)."),
            target: Path = typer.Option(..., "--target", "-t", help="Directory to restore into."),
            include: list[str] = typer.Option([], "--include", "-i", help="Restore only this path (repeatable)."),
            set_name: str | None = typer.Option(None, "--set", help="Only this backup set's snapshots ('latest' "
                                                                    "is the set's newest, in a shared repository)."),
            seq: int | None = typer.Option(None, "--seq", help="Point in time: the set's ledger up to and including "
                                                               "the record with this seq (needs --set)."),
            at: str | None = typer.Option(None, "--at", help="Point in time: the set's ledger up to the last record "
                                                             "accepted at or before TIME (ISO 8601, no zone = UTC, or "
                                                             "unix seconds; needs --set)."),
            ledger: str | None = typer.Option(None, "--ledger", help="With --seq/--at: which ledger of the set (when "
                                                                    "it has several)."),
            repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt, json_out: bool = JsonOpt,
            limit_upload: int | None = LimitUpOpt, limit_download: int | None = LimitDownOpt,
            quiet: bool = QuietOpt) -> None:
    """Restore a snapshot (or chosen paths) into --target; every byte is verified. --seq/--at: point in time."""
    if seq is not None or at is not None:
        when = parse_at(at) if at is not None else None
        if seq is not None and when is not None:
            raise UsageError("--seq and --at choose the same thing: give one")
        if set_name is None:
            raise UsageError("--seq/--at need --set: the backup set whose snapshots and shipped log to use")
        if snapshot_id not in (None, "latest"):
            raise UsageError("--seq/--at pick the base snapshot themselves: leave SNAPSHOT out")
        if include:
            raise UsageError("--include cannot be combined with --seq/--at (the ledger is restored whole)")
        r = open_repo(repo, password_file, limit_upload, limit_download)
        _restore_at(r, set_name, target, seq, when, ledger, json_out, quiet)
        return
    if snapshot_id is None:
        raise UsageError("restore needs SNAPSHOT (an id prefix or 'latest'), or --seq/--at with --set")
    if ledger is not None:
        raise UsageError("--ledger only applies to a point-in-time restore (--seq/--at)")
    r = open_repo(repo, password_file, limit_upload, limit_download)
    snaps = None
    if set_name is not None:
        snaps = [s for s in r.load_snapshots()[0] if s.get("set") == set_name]
        if not snaps:
            raise UsageError(f"no snapshot of set {set_name!r} in this repository")
    snap = r.find_snapshot(snapshot_id, snaps)
    with output.progress("restore", not (json_out or quiet)) as progress:
        result = do_restore(r, snap, str(target), includes=include or None, progress=progress)
    if json_out:
        emit_json(result)
    elif not quiet:
        output.console.print(f"restored {result['files']} files ({fmt_bytes(result['bytes'])}) from "
                             f"{snap['id'][:8]} to {result['target']} in {result['duration']:.2f}s")
    _report_losses(result)


def _restore_at(r: Any, set_name: str, target: Path, seq: int | None, at: float | None, ledger: str | None,
                json_out: bool, quiet: bool) -> None:
    rec = recover_ledger(r, set_name, seq=seq, at=at, source=ledger)
    result: dict[str, Any] | None = None
    snap = base_snapshot(r, rec)
    if snap is not None:
        with output.progress("restore", not (json_out or quiet)) as progress:
            result = do_restore(r, snap, str(target), progress=progress)
    size = write_ledger(rec, target / rec.source)
    if json_out:
        emit_json({"pitr": rec.as_dict(), "restore": result, "ledger": str(target / rec.source),
                   "ledger_bytes": size})
    elif not quiet:
        base = f"snapshot {snap['id'][:8]} ({rec.base_records} records)" if snap else "the log alone"
        output.console.print(
            f"restored {set_name} to {'seq ' + str(seq) if seq is not None else _iso(at)}: {base} + "
            f"{rec.records_from_log} records from {rec.segments} log segment(s); {rec.source} ends at seq "
            f"{rec.last_seq} ({_iso(rec.last_ts)}), newest recoverable seq {rec.newest_seq} → {target}",
            markup=False, soft_wrap=True)
    if result is not None:
        _report_losses(result)


def _report_losses(result: dict[str, Any]) -> None:
    for d in result["skipped"]:
        output.err_console.print(f"skipped: {d['path']}: {d['reason']}", markup=False, soft_wrap=True)
    for d in result["damaged"]:
        output.err_console.print(f"damaged: {d['path']}: {d['reason']}", markup=False, soft_wrap=True)
    for d in result["failed"]:
        output.err_console.print(f"failed: {d['path']}: {d['reason']}", markup=False, soft_wrap=True)
    lost = result["damaged"] + result["failed"]
    if lost:
        names = ", ".join(d["path"] for d in lost[:10])
        what = " and ".join(part for part in (f"{len(result['damaged'])} damaged" if result["damaged"] else "",
                                              f"{len(result['failed'])} failed" if result["failed"] else "") if part)
        raise ContinuityError(f"{what} entr{'y' if len(lost) == 1 else 'ies'} not restored: {names}")
