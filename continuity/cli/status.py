"""``continuity status``: nodes, services and the continuity mode, from one read of Redis.

The report itself is built by :mod:`continuity.status` (a pure function of the
blueprint and a Redis snapshot); this module reads, handles an unreachable Redis
and draws. ``continuity up`` redraws the same tables live.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import typer

from continuity import paths
from continuity.blueprint import load_blueprint
from continuity.cli import output
from continuity.cli.failover.common import pause_line
from continuity.config_watch import load_or_last_good
from continuity.durations import format_duration
from continuity.errors import ContinuityError, UsageError
from continuity.redisd import connect
from continuity.status import build_report, read_replication, read_snapshot

commands = typer.Typer()


def status_table(report: dict[str, Any]) -> Any:
    """The human view of a status report: what is running now, a table of nodes, a table of services.

    Names an operator types next (nodes, services) are never cut: those columns do not wrap, the others do.
    """
    nodes = output.table(title=f"fleet {report['fleet']} — mode {report['mode'].get('mode', 'unknown')}")
    nodes.add_column("node", no_wrap=True)
    for col in ("kind", "state", "last seen", "depth", "contact", "next pass", "primary for"):
        nodes.add_column(col)
    for n in report["nodes"]:
        ago = format_duration(n["seen_ago"]) + " ago" if n["seen_ago"] is not None else "never"
        nodes.add_row(n["id"], n["kind"], n["state"], ago, str(n["queue_depth"]),
                      "yes" if n["in_contact"] else "blackout", pass_cell(n.get("next_pass")),
                      ", ".join(n.get("primary_for") or []) or "-")
    svcs = output.table(title="services")
    svcs.add_column("service", no_wrap=True)
    for col in ("tier", "RTO", "RPO", "primary", "standbys", "epoch", "replication"):
        svcs.add_column(col, no_wrap=col in ("primary", "epoch"))
    for s in report["services"]:
        svcs.add_row(s["id"], str(s["tier"]), format_duration(s["rto"]), format_duration(s["rpo"]),
                     s["primary"] or "-", ", ".join(s["standbys"]) or "-", str(s["epoch"]),
                     s.get("replication") or "-")
    tables = [nodes, svcs]
    if report.get("replication"):
        tables.append(replication_table(report["replication"]))
    problems = [f"config: {e.get('file')} does not load ({e.get('node')}): {e.get('error')}; the last good "
                f"content stays in force" for e in report.get("config_errors") or []]
    problems += [pause_line(scope, note) for scope, note in (report.get("pauses") or {}).items()]
    problems += [f"redis: {w}" for w in (report.get("redis") or {}).get("warnings", [])]
    waiting = [queued_line(n) for n in report["nodes"] if n.get("queued") and not (n["seen"] and n["in_contact"])]
    det = report.get("detector")
    if det is not None and det.get("stale"):
        when = "never" if det.get("age") is None else format_duration(det["age"]) + " ago"
        problems.append(f"detector: last sweep {when}; node states and mode below are not current")
    now = report.get("running") or {}
    busy = [f"failover running: {f['service']} {f['from'] or '-'} -> {f['to'] or '-'} ({f['kind']}, "
            f"{format_duration(f['age']) if f['age'] is not None else '?'}) record {f['id']}"
            for f in now.get("failovers") or []]
    if now.get("drill"):
        busy.append(f"drill running: {now['drill']}")
    problems += [f"incident open: {i} (once handled: `continuity failover resolve {i}`)"
                 for i in now.get("incidents") or []]
    if det is not None and det.get("leader") is None:
        problems.append("detector: no control worker holds the detector lease (nobody sweeps now)")
    lines = [*map(output.warning, problems), *map(output.note, busy), *map(output.note, waiting)]
    if det is not None:
        lines.append(output.text(detector_line(det)))
    return output.group(*lines, *tables)


def queued_line(n: dict[str, Any]) -> str:
    """``queued for sat-1 (offline): continuity.backup.copy expires in 1m20s, ...`` — what waits for the pass."""
    parts = []
    for q in n["queued"]:
        if q.get("unreadable"):
            parts.append("(unreadable message)")
            continue
        exp = ("never expires" if q["expires_in"] is None else "expired" if q["expired"]
               else f"expires in {format_duration(q['expires_in'])}")
        parts.append(f"{q['task']} {q['args']} {exp}".replace("  ", " "))
    more = n["queue_depth"] - len(n["queued"])
    why = "offline" if not n["seen"] else "out of contact"
    return (f"queued for {n['id']} ({why}): " + "; ".join(parts)
            + (f"; and {more} more" if more > 0 else ""))


def pass_cell(p: dict[str, Any] | None) -> str:
    """``in pass until 03:19:00Z`` or ``in 7m (03:10:00Z, 1m30s)``; ``-`` for a node that is always connected."""
    if not p:
        return "-"
    if p["in_pass"]:
        return f"in pass until {time.strftime('%H:%M:%SZ', time.gmtime(p['end']))}"
    when = time.strftime("%H:%M:%SZ", time.gmtime(p["start"]))
    return f"in {format_duration(p['starts_in'])} ({when}, {format_duration(p['length'])})"


def detector_line(det: dict[str, Any]) -> str:
    """One line: which worker leads the detector and since when, its last sweep, and any grace or tilt."""
    lead = det.get("leader")
    if lead:
        since = lead.get("since")
        when = time.strftime("%H:%M:%S", time.localtime(since)) if since is not None else "?"
        who = f"led by {lead['node'] or '?'} (pid {lead.get('pid')} on {lead.get('host')}) since {when}, " \
              f"term {lead.get('term')}"
    else:
        who = "no leader"
    swept = "never swept" if det.get("age") is None else f"last sweep {format_duration(det['age'])} ago"
    extra = ""
    if det.get("grace"):
        extra += f"; grace after {det['grace'].get('reason')} (no suspicion yet)"
    if det.get("tilt_until"):
        extra += "; in TILT (its own pause: nobody declared dead)"
    return f"detector: {who}; {swept}{extra}"


def replication_table(rows: list[dict[str, Any]]) -> Any:
    """Each standby's copy of each replicated source: state, how far behind, what it holds."""
    table = output.table(title="replication")
    for col in ("service", "source", "standby", "state", "lag", "behind", "holds", "short"):
        table.add_column(col, no_wrap=col in ("service", "standby"))
    for r in rows:
        lag = "-" if r["lag_seconds"] is None else format_duration(r["lag_seconds"])
        behind = "-" if r["lag_records"] is None else f"{r['lag_records']} rec"
        offset, count = r["applied"]
        holds = f"{count} rec" if count is not None else f"{offset} B"
        short = "-" if r.get("short") is None else f"{r['short']} rec"
        table.add_row(r["service"], r["source"], r["standby"], r["state"], lag, behind, holds, short)
    return table


def read_report() -> dict[str, Any]:
    """The status report from Redis; an unreachable Redis is one clear line (exit 1), not a traceback.

    A blueprint broken by an edit is reported, and the last copy that loaded is used to show the fleet (which
    keeps running on it, see :mod:`continuity.config_watch`); with no such copy the error stands (exit 2).
    """
    loaded = load_or_last_good(load_blueprint, paths.blueprint_path(), paths.last_good("blueprint.yml"))
    bp = loaded.value
    client = connect()
    try:
        report = build_report(bp, read_snapshot(client, bp), repl=read_replication(client, bp))
        if loaded.error is not None:
            report["config_errors"] = [{"file": loaded.error.path, "node": "this command",
                                        "error": loaded.error.error, "since": loaded.error.since},
                                       *report["config_errors"]]
        return report
    except redis.RedisError as exc:
        raise ContinuityError(f"cannot read status from Redis: {exc}") from None
    finally:
        client.close()


def watch(interval: float, ticks: int | None = None) -> None:
    """Redraw the status every ``interval`` seconds, as `patronictl list -W` does, until Ctrl-C (exit 0).

    A Redis that goes away mid-watch (the thing one watches for during an incident) is a line on the
    screen, and the next refresh tries again; ``ticks`` bounds the loop (tests)."""
    shown = 0
    try:
        while ticks is None or shown < ticks:
            header = (f"continuity status — every {format_duration(interval)} — "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} — Ctrl-C to quit")
            try:
                view = status_table(read_report())
            except ContinuityError as exc:
                view = output.warning(str(exc))
            output.console.clear()
            output.console.print(header, markup=False, highlight=False, soft_wrap=True)
            output.console.print(view)
            shown += 1
            if ticks is None or shown < ticks:
                time.sleep(interval)
    except KeyboardInterrupt:
        output.console.print("")


@commands.command("status")
def status(json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
           watch_: bool = typer.Option(False, "--watch", "-W", help="Redraw every --interval seconds until "
                                                                    "Ctrl-C."),
           interval: float = typer.Option(2.0, "--interval", "-i", min=0.1, help="Seconds between redraws "
                                                                                 "(with --watch).")) -> None:
    """Nodes (last seen, queue depth), services (tier, primary, standbys) and the continuity mode."""
    if watch_:
        if json_out:
            raise UsageError("--watch redraws a table for people; for scripts poll `continuity status --json`")
        watch(interval)
        return
    report = read_report()
    if json_out:
        output.emit_json(report)
    else:
        output.console.print(status_table(report))
