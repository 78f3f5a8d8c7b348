"""``continuity backup verify``: check a repository and name every damaged snapshot, pack and file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from continuity.backup.verify import check, restore_drill
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, QuietOpt, RepoOpt, fmt_bytes, open_repo
from continuity.cli.output import emit_json
from continuity.errors import ContinuityError

commands = typer.Typer()


@commands.command("verify")
def verify(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
           read_data: bool = typer.Option(False, "--read-data", help="Read and authenticate every pack."),
           read_data_subset: str | None = typer.Option(None, "--read-data-subset",
                                                       help="Read only a subset: n/t (e.g. 1/5) or x%."),
           drill: str | None = typer.Option(None, "--drill", metavar="SNAPSHOT",
                                            help="Also restore SNAPSHOT into a sandbox and prove it."),
           json_out: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Check the repository; exit 1 naming every damaged snapshot and file."""
    r = open_repo(repo, password_file)
    with output.progress("verify", not (json_out or quiet)) as progress:
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
    console = output.console
    console.print(f"checked {report['snapshots']} snapshots, {report['packs']} packs"
                  + (f", read {report['packs_read']} packs ({fmt_bytes(report['bytes_read'])})"
                     if report["packs_read"] else ""))
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
        console.print(f"restore drill of {d['snapshot'][:8]}: {'ok' if d['ok'] else 'FAILED'} — "
                      f"{d['files_hashed']} files hashed, sqlite {[c['integrity'] for c in d['sqlite']]}, "
                      f"ledgers {[(c['records'], c['expected_records']) for c in d['ledgers']]}")
    if report["ok"]:
        console.print("no errors were found")
