"""``continuity backup log``: the shipped ledger log of a repository, per set and ledger (a read command).

What a point-in-time restore can reach: how many segments, which lines and seqs they cover, when the newest was
shipped and by which node at which epoch. Damaged segments are named on stderr and make the exit 1, as a
damaged snapshot does for ``list``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from continuity.backup.logship import Segment, load_segments
from continuity.cli import output
from continuity.cli.backup.common import JsonOpt, PwFileOpt, RepoOpt, open_repo
from continuity.cli.output import emit_json
from continuity.errors import ContinuityError

commands = typer.Typer()


def summarize(segments: list[Segment]) -> list[dict[str, Any]]:
    """One row per (set, ledger): segments, lines covered, seq and time range, the newest ship."""
    groups: dict[tuple[str, str], list[Segment]] = {}
    for s in segments:
        groups.setdefault((s.set_name, s.source), []).append(s)
    rows = []
    for (set_name, source), segs in sorted(groups.items()):
        newest = max(segs, key=lambda s: (s.end.count, s.shipped))
        rows.append({"set": set_name, "ledger": source, "segments": len(segs),
                     "first_line": min(s.start.count for s in segs) + 1, "last_line": newest.end.count,
                     "first_seq": min(segs, key=lambda s: s.start.count).first_seq, "last_seq": newest.last_seq,
                     "last_ts": newest.last_ts, "last_shipped": newest.shipped, "node": newest.node,
                     "epoch": newest.epoch, "bytes": sum(len(s.payload) for s in segs)})
    return rows


def _iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@commands.command("log")
def log(set_name: str | None = typer.Option(None, "--set", help="Only this backup set's log."),
        repo: str | None = RepoOpt, password_file: Path | None = PwFileOpt, json_out: bool = JsonOpt) -> None:
    """Show the shipped ledger log (what a --seq/--at restore can reach), per set and ledger."""
    r = open_repo(repo, password_file)
    segments, bad = load_segments(r, set_name)
    rows = summarize(segments)
    if json_out:
        emit_json(rows)
    else:
        t = output.table("set", "ledger", "segments", "lines", "seqs", "last record", "shipped by",
                         keep=("set", "ledger"))
        for row in rows:
            t.add_row(row["set"], row["ledger"], str(row["segments"]), f"{row['first_line']}-{row['last_line']}",
                      f"{row['first_seq']}-{row['last_seq']}", _iso(row["last_ts"]),
                      f"{row['node']} (epoch {row['epoch']}) at {_iso(row['last_shipped'])}")
        output.console.print(t)
    for sid, reason in sorted(bad.items()):
        output.err_console.print(f"damaged log segment {sid[:8]}: {reason}", markup=False, soft_wrap=True)
    if bad:
        raise ContinuityError(f"{len(bad)} damaged log segment(s)")
