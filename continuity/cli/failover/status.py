"""``continuity failover status``: one read of everything an operator needs before touching a role."""

from __future__ import annotations

import time
from typing import Any

import typer

from continuity.blueprint import Blueprint
from continuity.cli.failover.common import blueprint, pause_line, redis_client, redis_errors, secs, when
from continuity.cli.output import console, emit_json
from continuity.failover import control, records
from continuity.state import epochs as epoch_store
from continuity.state import incidents, leases, routes

commands = typer.Typer()


def build_status(client: Any, bp: Blueprint, now: float | None = None) -> dict[str, Any]:
    """Per service: primary, epoch, lease, route, pause and cool-down, last failover; plus nodes and incidents."""
    now = time.time() if now is None else now
    route_map = routes.read_many(client, sorted(bp.services))
    epochs = epoch_store.read_many(client, bp.services)
    paused, global_pause, cooldowns = control.read_controls(client, bp, now)
    pauses = control.read_pauses(client, bp, now)
    lease_map = leases.read_many(client, sorted(bp.services))
    states = control.read_node_states(client, bp, now)
    open_incidents = incidents.read_all(client)
    last: dict[str, dict[str, Any]] = {}
    for rec in records.history(client, limit=200):
        last.setdefault(rec["service"], rec)
    services = []
    for sid in bp.topo_order():
        sv = bp.services[sid]
        lease = lease_map.get(sid)
        route = route_map.get(sid)
        rec = last.get(sid)
        services.append({
            "service": sid, "tier": sv.tier, "declared_primary": sv.primary, "standbys": list(sv.standbys),
            "primary": routes.primary_of(bp, sid, lease, route).node,
            "epoch": epochs.get(sid, 0),
            "lease": lease.as_dict() if lease else None,
            "route": route.as_dict() if route else None,
            "paused": global_pause or sid in paused,
            "cooldown_left": round(cooldowns[sid] - now, 3) if sid in cooldowns and cooldowns[sid] > now else 0.0,
            "last_failover": None if rec is None else {k: rec.get(k) for k in
                                                       ("id", "kind", "outcome", "started", "who", "old_primary",
                                                        "new_primary", "mttr")},
        })
    running = [{"id": r["id"], "service": r["service"], "kind": r["kind"], "candidate": r.get("candidate"),
                "age": round(now - r["started"], 3),
                "last_step": (r["steps"][-1]["step"] if r["steps"] else None)}
               for r in records.history(client, limit=200) if r["outcome"] == "running"]
    return {"time": now, "fleet": bp.model.fleet, "global_pause": global_pause, "pauses": pauses,
            "nodes": {n: states.get(n) for n in sorted(bp.nodes)}, "services": services,
            "incidents": open_incidents, "running": running}


@commands.command("status")
@redis_errors
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Where every role is: primary, epoch, lease, route, pause and cool-down, last failover."""
    bp = blueprint()
    report = build_status(redis_client(), bp)
    if as_json:
        emit_json(report)
        return
    if report["global_pause"]:
        console.print("[bold yellow]automatic failover is PAUSED fleet-wide[/]")
    for scope, note in report["pauses"].items():
        console.print(pause_line(scope, note), highlight=False, markup=False, soft_wrap=True)
    console.print(f"fleet {report['fleet']}", highlight=False)
    for s in report["services"]:
        lf = s["last_failover"]
        lease = f"lease {secs(s['lease']['ttl'])}" if s["lease"] else "no lease"
        flags = (["PAUSED"] if s["paused"] else []) + ([f"cool-down {secs(s['cooldown_left'])}"]
                                                       if s["cooldown_left"] else [])
        console.print(f"{s['service']} (tier {s['tier']}): primary {s['primary'] or '-'} epoch {s['epoch']} {lease}"
                      f" route {(s['route'] or {}).get('url') or '-'} {' '.join(flags)}"
                      f" last failover: {lf['outcome'] + ' ' + when(lf['started']) if lf else '-'}",
                      soft_wrap=True, highlight=False)
    nodes = ", ".join(f"{n}={(v or {}).get('state', 'unknown')}" for n, v in report["nodes"].items())
    console.print(f"nodes: {nodes}")
    for run in report["running"]:
        console.print(f"failover in progress: {run['service']} -> {run['candidate']} ({run['kind']}, "
                      f"{run['age']:.1f}s, last step {run['last_step'] or '-'}) record {run['id']}", highlight=False)
    for iid, inc in report["incidents"].items():
        console.print(f"[bold red]open incident[/] {iid}: {inc.get('reason', '')}")
