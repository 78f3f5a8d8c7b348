"""``continuity backup list`` / ``snapshots``: the snapshots of a repository.

``--json`` prints what ``restic snapshots --json`` prints — an array of
snapshot objects with restic's keys (``time``, ``parent``, ``tree``,
``paths``, ``hostname``, ``username``, ``uid``, ``gid``, ``excludes``,
``tags``, ``original``, ``program_version``, ``summary``, ``id``,
``short_id``; keys restic omits when empty are omitted here too) plus this
engine's own (``set``, ``files``, ``bytes``) — so tooling written against
restic reads it unchanged. A damaged snapshot record is never hidden: it is
named on stderr, as restic names a snapshot it cannot load.

Scripts call it in loops, so it imports only the repository (through
:mod:`continuity.cli.backup.common`); rich is loaded only to draw the table
for a human.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from continuity import __version__
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, RepoOpt, fmt_bytes, open_repo
from continuity.cli.output import emit_json

commands = typer.Typer()


def _restic_summary(s: dict[str, Any]) -> dict[str, Any] | None:
    """restic's snapshot summary from ours (same names where they exist, derived where they do not)."""
    ours = s.get("summary")
    if not isinstance(ours, dict):
        return None
    out = dict(ours)
    end = s.get("time")
    start = s.get("backup_start")
    if start is None and end and isinstance(ours.get("duration"), int | float):
        try:
            start = datetime.fromtimestamp(datetime.fromisoformat(end).timestamp() - ours["duration"],
                                           datetime.fromisoformat(end).tzinfo).isoformat()
        except ValueError:
            start = None
    out.update(backup_start=start or end, backup_end=end,
               total_files_processed=ours.get("files", 0), total_bytes_processed=ours.get("bytes_total", 0))
    return out


def restic_shape(s: dict[str, Any]) -> dict[str, Any]:
    """One snapshot record as ``restic snapshots --json`` shows it, with this engine's keys beside restic's."""
    summary = s.get("summary") or {}
    row: dict[str, Any] = {"time": s["time"], "parent": s.get("parent"), "tree": s.get("tree"),
                           "paths": s.get("paths") or [], "hostname": s.get("hostname"),
                           "username": s.get("username"), "uid": s.get("uid"), "gid": s.get("gid"),
                           "excludes": s.get("excludes"), "tags": s.get("tags"), "original": s.get("original"),
                           "program_version": s.get("program_version") or f"continuity {__version__}",
                           "summary": _restic_summary(s)}
    row = {k: v for k, v in row.items() if v not in (None, [], "") or k in ("paths", "tree")}
    row.update(id=s["id"], short_id=s["id"][:8], set=s.get("set"), files=summary.get("files"),
               bytes=summary.get("bytes_total"))
    return row


def _selected(s: dict[str, Any], set_name: str | None, hosts: list[str], tags: list[str], paths: list[str]) -> bool:
    if set_name and s.get("set") != set_name:
        return False
    if hosts and s.get("hostname") not in hosts:
        return False
    # restic: --tag a,b needs both; several --tag options are alternatives
    if tags and not any(set(t.split(",")) <= set(s.get("tags") or []) for t in tags):
        return False
    return not paths or set(paths) <= set(s.get("paths") or [])


@commands.command("list")
@commands.command("snapshots")
def list_(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
          set_name: str | None = typer.Option(None, "--set"),
          host: list[str] = typer.Option([], "--host", "-H", help="Only snapshots of this host (repeatable)."),
          tag: list[str] = typer.Option([], "--tag", help="Only snapshots with these tags (a,b: both; repeatable: "
                                                          "either)."),
          path: list[str] = typer.Option([], "--path", help="Only snapshots including this path (repeatable)."),
          latest: int = typer.Option(0, "--latest", min=0, help="Only the newest N snapshots per set or host+paths."),
          json_out: bool = JsonOpt) -> None:
    """List snapshots (damaged snapshot records are reported, never hidden)."""
    r = open_repo(repo, password_file)
    snaps, bad = r.load_snapshots()
    snaps = [s for s in snaps if _selected(s, set_name, host, tag, [str(Path(p).absolute()) for p in path])]
    if latest:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for s in snaps:
            key = (s.get("set"),) if s.get("set") else (None, s.get("hostname"), tuple(sorted(s.get("paths") or [])))
            groups.setdefault(key, []).append(s)
        keep = {id(s) for g in groups.values() for s in sorted(g, key=lambda x: x["time"])[-latest:]}
        snaps = [s for s in snaps if id(s) in keep]
    for k, v in bad.items():
        output.err_console.print(f"damaged snapshot {k[:8]}: {v}", markup=False)
    if json_out:
        emit_json([restic_shape(s) for s in snaps])
        return
    t = output.table("ID", "Time", "Host", "Set", "Paths", "Files", "Size", keep=("ID", "Set"))
    for s in snaps:
        row = restic_shape(s)
        t.add_row(row["short_id"], row["time"][:19].replace("T", " "), str(row.get("hostname")),
                  str(row["set"] or ""), ", ".join(row["paths"] or []), str(row["files"]), fmt_bytes(row["bytes"] or 0))
    output.console.print(t)
