"""``continuity status``: nodes, services and the continuity mode, from one read of Redis.

The report itself is built by :mod:`continuity.status` (a pure function of the
blueprint and a Redis snapshot); this module reads, handles an unreachable Redis
and draws. ``continuity up`` redraws the same tables live.
"""

from __future__ import annotations

from typing import Any

import redis
import typer

from continuity import paths
from continuity.blueprint import load_blueprint
from continuity.cli import output
from continuity.config_watch import load_or_last_good
from continuity.durations import format_duration
from continuity.errors import ContinuityError
from continuity.redisd import connect
from continuity.status import build_report, read_snapshot

commands = typer.Typer()


def status_table(report: dict[str, Any]) -> Any:
    """The human view of a status report: a table of nodes above a table of services."""
    nodes = output.table(title=f"fleet {report['fleet']} — mode {report['mode'].get('mode', 'unknown')}")
    for col in ("node", "kind", "state", "last seen", "queue", "depth", "contact"):
        nodes.add_column(col)
    for n in report["nodes"]:
        ago = format_duration(n["seen_ago"]) + " ago" if n["seen_ago"] is not None else "never"
        nodes.add_row(n["id"], n["kind"], n["state"], ago, n["queue"], str(n["queue_depth"]),
                      "yes" if n["in_contact"] else "blackout")
    svcs = output.table(title="services")
    for col in ("service", "domain", "tier", "RTO", "RPO", "primary", "standbys", "epoch"):
        svcs.add_column(col)
    for s in report["services"]:
        svcs.add_row(s["id"], s["domain"], str(s["tier"]), format_duration(s["rto"]), format_duration(s["rpo"]),
                     s["primary"], ", ".join(s["standbys"]) or "-", str(s["epoch"]))
    problems = [f"config: {e.get('file')} does not load ({e.get('node')}): {e.get('error')}; the last good "
                f"content stays in force" for e in report.get("config_errors") or []]
    det = report.get("detector")
    if det is not None and det.get("stale"):
        when = "never" if det.get("age") is None else format_duration(det["age"]) + " ago"
        problems.append(f"detector: last sweep {when}; node states and mode below are not current")
    return output.group(*map(output.warning, problems), nodes, svcs)


def read_report() -> dict[str, Any]:
    """The status report from Redis; an unreachable Redis is one clear line (exit 1), not a traceback.

    A blueprint broken by an edit is reported, and the last copy that loaded is used to show the fleet (which
    keeps running on it, see :mod:`continuity.config_watch`); with no such copy the error stands (exit 2).
    """
    loaded = load_or_last_good(load_blueprint, paths.blueprint_path(), paths.last_good("blueprint.yml"))
    bp = loaded.value
    client = connect()
    try:
        report = build_report(bp, read_snapshot(client, bp))
        if loaded.error is not None:
            report["config_errors"] = [{"file": loaded.error.path, "node": "this command",
                                        "error": loaded.error.error, "since": loaded.error.since},
                                       *report["config_errors"]]
        return report
    except redis.RedisError as exc:
        raise ContinuityError(f"cannot read status from Redis: {exc}") from None
    finally:
        client.close()


@commands.command("status")
def status(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Nodes (last seen, queue depth), services (tier, primary, standbys) and the continuity mode."""
    report = read_report()
    if json_out:
        output.emit_json(report)
    else:
        output.console.print(status_table(report))
