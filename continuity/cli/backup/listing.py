"""``continuity backup list``: the snapshots of a repository.

Scripts call it in loops (``--json``), so it imports only the repository
(through :mod:`continuity.cli.backup.common`); rich is loaded only to draw the
table for a human.
"""

from __future__ import annotations

from pathlib import Path

import typer

from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, RepoOpt, fmt_bytes, open_repo
from continuity.cli.output import emit_json

commands = typer.Typer()


@commands.command("list")
def list_(repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt,
          set_name: str | None = typer.Option(None, "--set"), json_out: bool = JsonOpt) -> None:
    """List snapshots (damaged snapshot records are reported, never hidden)."""
    r = open_repo(repo, password_file)
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
    t = output.table("ID", "Time", "Host", "Set", "Paths", "Files", "Size")
    for row in rows:
        t.add_row(row["short_id"], row["time"][:19].replace("T", " "), str(row["hostname"]), str(row["set"] or ""),
                  ", ".join(row["paths"] or []), str(row["files"]), fmt_bytes(row["bytes"] or 0))
    output.console.print(t)
    for k, v in bad.items():
        output.err_console.print(f"damaged snapshot {k[:8]}: {v}", markup=False)
