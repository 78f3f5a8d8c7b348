"""``continuity backup verify``: check a repository and name every damaged snapshot, pack and file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from continuity.backup import api
from continuity.backup.verify import check, restore_drill
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, QuietOpt, RepoOpt, fmt_bytes, open_repo
from continuity.cli.output import emit_json
from continuity.errors import ContinuityError, UsageError

commands = typer.Typer()


@commands.command("verify")
def verify(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
           read_data: bool = typer.Option(False, "--read-data", help="Read and authenticate every pack."),
           read_data_subset: str | None = typer.Option(None, "--read-data-subset",
                                                       help="Read only a subset: n/t (e.g. 1/5) or x%."),
           drill: str | None = typer.Option(None, "--drill", metavar="SNAPSHOT",
                                            help="Also restore SNAPSHOT into a sandbox and prove it."),
           config: Path | None = typer.Option(None, "--config", help="Verify this file's --set: its repository, "
                                                                     "its snapshots, its drill checks."),
           set_name: str | None = typer.Option(None, "--set", help="Backup set name (with --config)."),
           json_out: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Check the repository; exit 1 naming every damaged snapshot and file."""
    if config is not None:
        if not set_name:
            raise UsageError("--config needs --set NAME")
        cfg = api.load_fleet_backup_config(config)
        r = api.set_repository(cfg, set_name)
    else:
        r = open_repo(repo, password_file)
    with output.progress("verify", not (json_out or quiet)) as progress:
        report = check(r, read_data=read_data or read_data_subset is not None, subset=read_data_subset,
                       progress=progress)
        if drill and config is not None:
            report["drill"] = api.restore_drill_set(set_name or "", cfg, snapshot=drill, progress=progress)
        elif drill:
            report["drill"] = restore_drill(r, drill, progress=progress)
    ok = report["ok"] and (not drill or report["drill"]["ok"])
    if json_out:
        emit_json({**report, "ok": ok})
    else:
        _print_verify(report)
    if not ok:
        what = ([report["keyring"]] if report.get("keyring") else []) + (
                [f"snapshot {d['id'][:8]}" for d in report["damaged_snapshots"]]
                + [f"index/{d['file'].split('/')[-1][:8]}" for d in report["damaged_index_files"]]
                + [f"pack {d['pack'][:8]}" for d in report["damaged_packs"]]
                + [f"{d['snapshot'][:8]}:{d['path']}" for d in report["damaged_files"]])
        if drill and not report["drill"]["ok"]:
            what.append(f"drill of {report['drill']['snapshot'][:8]} failed")
        raise ContinuityError(f"repository damaged: {', '.join(what[:20])}"
                              + (f" and {len(what) - 20} more" if len(what) > 20 else ""))


def _print_verify(report: dict[str, Any]) -> None:
    console = output.console
    console.print(f"checked {report['snapshots']} snapshots, {report['packs']} packs"
                  + (f", read {report['packs_read']} packs ({fmt_bytes(report['bytes_read'])})"
                     if report["packs_read"] else ""))
    if report.get("keyring"):
        console.print(f"keyring: {report['keyring']}", markup=False)
    for d in report["damaged_index_files"]:
        console.print(f"damaged index file {d['file']}: {d['reason']}", markup=False)
    for d in report["damaged_snapshots"]:
        console.print(f"damaged snapshot {d['id']}: {d['reason']}", markup=False)
    for d in report["damaged_packs"]:
        console.print(f"damaged pack {d['pack']}: {d['reason']}", markup=False)
    for d in report["damaged_trees"]:
        console.print(f"snapshot {d['snapshot'][:8]}: {d['path']}: {d['reason']}", markup=False)
    for d in report["damaged_files"]:
        console.print(f"snapshot {d['snapshot'][:8]}: damaged file {d['path']}: {d['reason']}", markup=False)
    if report.get("unreferenced_packs"):
        console.print(f"{len(report['unreferenced_packs'])} unreferenced pack(s) (prune removes them)")
    if "drill" in report:
        d = report["drill"]
        sqlite = ", ".join(str(c["integrity"]) for c in d["sqlite"]) or "none"
        ledgers = ", ".join(f"{c['records']}/{c['expected_records']} records" for c in d["ledgers"]) or "none"
        console.print(f"restore drill of {d['snapshot'][:8]}: {'ok' if d['ok'] else 'FAILED'} — "
                      f"{d['files_hashed']} files hashed, sqlite integrity: {sqlite}, ledgers: {ledgers}",
                      markup=False, highlight=False, soft_wrap=True)
        for c in d.get("checks") or []:
            ran = " ".join(c["check"]["command"]) if c.get("check") else "no check declared"
            console.print(f"  {c['name']}: {'ok' if c['ok'] else 'FAILED: ' + c['reason']} ({ran})",
                          markup=False, highlight=False, soft_wrap=True)
        p = d.get("pitr")
        if p:
            console.print(f"  point in time: {'ok' if p['ok'] else 'FAILED: ' + p['reason']} ({p['segments']} log "
                          f"segment(s), newest recoverable seq {p.get('newest_seq')}, a restore to seq "
                          f"{p.get('checked_seq')} is exactly the prefix)" if p["ok"] else
                          f"  point in time: FAILED: {p['reason']}", markup=False, highlight=False, soft_wrap=True)
    if report["ok"]:
        console.print("no errors were found")
