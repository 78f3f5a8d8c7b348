"""``continuity backup forget`` and ``prune``: apply a retention policy, then drop unreferenced data.

Together because ``forget --prune`` runs the prune of ``prune``: both need
:mod:`continuity.backup.prune`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity.backup.prune import forget as do_forget
from continuity.backup.prune import prune as do_prune
from continuity.backup.retention import Policy
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, RepoOpt, open_repo
from continuity.cli.output import emit_json
from continuity.durations import parse_duration
from continuity.errors import UsageError

commands = typer.Typer()


@commands.command("forget")
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
    try:
        within = parse_duration(keep_within) if keep_within else 0.0
    except ValueError as exc:
        raise UsageError(f"--keep-within: {exc}") from None
    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, within)
    if policy.empty():
        raise UsageError("no policy given: refusing to forget everything (use --keep-last etc.)")
    r = open_repo(repo, password_file)
    result = do_forget(r, policy, set_name=set_name, dry_run=dry_run)
    result["prune"] = do_prune(r, dry_run=dry_run) if prune_after else None
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


@commands.command("prune")
def prune(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
          dry_run: bool = typer.Option(False, "--dry-run", "-n"), json_out: bool = JsonOpt) -> None:
    """Remove data no snapshot references (takes the exclusive lock)."""
    result = do_prune(open_repo(repo, password_file), dry_run=dry_run)
    if json_out:
        emit_json(result)
    else:
        output.console.print(f"packs: {result['packs_kept']} kept, {result['packs_repacked']} repacked, "
                             f"{result['packs_deleted']} deleted" + (" (dry run)" if dry_run else ""))
