"""`continuity failover ...`: see where every role is, move one by hand, pause automation, read the history.

Verbs follow patronictl (status, switchover, failover, pause, resume, history)
because operators already know them: a *switchover* is coordinated (the old
primary demotes itself first), a *failover* is forced (the old primary is
unreachable; we still wait out its lease). Every action is recorded with the
operator's user@host in the pulse history.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from continuity import paths, settings
from continuity.blueprint import Blueprint, load_blueprint
from continuity.cli.output import console, emit_json
from continuity.errors import ContinuityError, UsageError

app = typer.Typer(help="Failover: status, switchover, forced failover, maintenance pause, history.",
                  no_args_is_help=True)
F = TypeVar("F", bound=Callable[..., Any])


def _redis_errors(fn: F) -> F:
    """An unreachable Redis is one clear line (exit 1), never a traceback: this is what on-call sees first."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            from continuity.redisd import fleet_url

            where = fleet_url() or f"({settings.REDIS_URL.name} unset, no `continuity up` running)"
            raise ContinuityError(f"cannot talk to Redis at {where}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def _bp() -> Blueprint:
    return load_blueprint(paths.blueprint_path())


def _client() -> Any:
    from continuity.redisd import connect

    return connect(socket_timeout=5)


def _check_service(bp: Blueprint, service: str | None) -> None:
    if service is not None and service not in bp.services:
        raise UsageError(f"unknown service {service!r}; the blueprint declares: {', '.join(sorted(bp.services))}")


def _check_move(service: str, to: str) -> None:
    """Usage errors before anything touches Redis: unknown service or node is exit 2, not a stuck request."""
    bp = _bp()
    _check_service(bp, service)
    if to not in bp.nodes:
        raise UsageError(f"unknown node {to!r}; the blueprint declares: {', '.join(sorted(bp.nodes))}")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def build_status(client: Any, bp: Blueprint, now: float | None = None) -> dict[str, Any]:
    """One read of everything an operator needs before touching a role."""

    from continuity.failover import control, records
    from continuity.state import epochs as epoch_store
    from continuity.state import incidents, leases, routes

    now = time.time() if now is None else now
    route_map = routes.read_many(client, sorted(bp.services))
    epochs = epoch_store.read_many(client, bp.services)
    paused, global_pause, cooldowns = control.read_controls(client, bp)
    pauses = control.read_pauses(client, bp)
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


@app.command()
@_redis_errors
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Where every role is: primary, epoch, lease, route, pause and cool-down, last failover."""
    bp = _bp()
    report = build_status(_client(), bp)
    if as_json:
        emit_json(report)
        return
    if report["global_pause"]:
        console.print("[bold yellow]automatic failover is PAUSED fleet-wide[/]")
    console.print(f"fleet {report['fleet']}", highlight=False)
    for s in report["services"]:
        lf = s["last_failover"]
        lease = f"lease {_secs(s['lease']['ttl'])}" if s["lease"] else "no lease"
        flags = (["PAUSED"] if s["paused"] else []) + ([f"cool-down {_secs(s['cooldown_left'])}"]
                                                       if s["cooldown_left"] else [])
        console.print(f"{s['service']} (tier {s['tier']}): primary {s['primary'] or '-'} epoch {s['epoch']} {lease}"
                      f" route {(s['route'] or {}).get('url') or '-'} {' '.join(flags)}"
                      f" last failover: {lf['outcome'] + ' ' + _when(lf['started']) if lf else '-'}",
                      soft_wrap=True, highlight=False)
    nodes = ", ".join(f"{n}={(v or {}).get('state', 'unknown')}" for n, v in report["nodes"].items())
    console.print(f"nodes: {nodes}")
    for run in report["running"]:
        console.print(f"failover in progress: {run['service']} -> {run['candidate']} ({run['kind']}, "
                      f"{run['age']:.1f}s, last step {run['last_step'] or '-'}) record {run['id']}", highlight=False)
    for iid, inc in report["incidents"].items():
        console.print(f"[bold red]open incident[/] {iid}: {inc.get('reason', '')}")


def _operator() -> str:
    from continuity.failover.records import operator

    return operator()


def _finish(rid: str, wait: bool, timeout: float, as_json: bool) -> None:
    if not wait:
        if as_json:
            emit_json({"record": rid, "outcome": "running"})
        else:
            console.print(f"started: record {rid} (follow with `continuity failover history`)")
        return
    from workers.failover import wait_record

    rec = wait_record(rid, timeout)
    if as_json:
        emit_json(rec)
    else:
        _print_record(rec or {"id": rid, "outcome": "unknown", "steps": []})
    if not rec or rec["outcome"] != "succeeded":
        outcome = rec["outcome"] if rec else "unknown"
        raise ContinuityError(f"record {rid}: outcome {outcome}"
                              + (" (still running at the deadline)" if outcome == "running" else ""))


def _print_record(rec: dict[str, Any]) -> None:
    console.print(f"record {rec.get('id')}: {rec.get('kind', '')} of {rec.get('service', '')} "
                  f"{rec.get('old_primary') or '-'} -> {rec.get('new_primary') or rec.get('candidate') or '-'}: "
                  f"[bold]{rec.get('outcome')}[/] (by {rec.get('who', '?')})", soft_wrap=True, highlight=False)
    if rec.get("detection") is not None:
        console.print(f"  detection (last heartbeat -> declared dead) {_secs(rec['detection'])}", highlight=False)
    if rec.get("lease_wait") is not None:
        console.print(f"  waiting out the old lease + margin {_secs(rec['lease_wait'])}", highlight=False)
    for st in rec.get("steps", []):
        mark = "ok" if st.get("ok") else ("FAILED" if st.get("ok") is False else "...")
        extra = f" — {st['error']}" if st.get("error") else ""
        dur = "-" if st.get("duration") is None else f"{st['duration'] * 1000:.0f}ms"
        console.print(f"  [{st['attempt']}] {st['step']:<8} {st.get('node') or '-':<8} {dur:>8} {mark}{extra}",
                      soft_wrap=True, highlight=False, markup=False)
    if rec.get("mttr") is not None:
        console.print(f"  recovery (last seen -> verified) {_secs(rec['mttr'])}")


@app.command()
@_redis_errors
def switchover(service: str = typer.Argument(..., help="Service to move."),
               to: str = typer.Option(..., "--to", help="Node to promote (a placement node of the service)."),
               wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the record to finish."),
               timeout: float = typer.Option(60.0, help="Seconds to wait."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Coordinated move of a healthy primary: demote it first, then promote NODE (never two primaries)."""
    _check_move(service, to)
    from workers.failover import switchover as do_switchover

    _finish(do_switchover(service, to, _operator()), wait, timeout, as_json)


@app.command("failover")
@_redis_errors
def failover_cmd(service: str = typer.Argument(..., help="Service to move."),
                 to: str = typer.Option(..., "--to", help="Node to promote."),
                 force: bool = typer.Option(False, "--force", help="Required: the old primary is unreachable."),
                 wait: bool = typer.Option(True, "--wait/--no-wait"),
                 timeout: float = typer.Option(60.0, help="Seconds to wait."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Forced failover when the old primary cannot demote itself: waits out its lease + margin, fences, promotes."""
    _check_move(service, to)
    if not force:
        raise UsageError("a forced failover needs --force (for a healthy primary use "
                         f"`continuity failover switchover {service} --to {to}`)")
    from workers.failover import force_failover

    _finish(force_failover(service, to, _operator()), wait, timeout, as_json)


@app.command()
@_redis_errors
def pause(service: str | None = typer.Argument(None, help="Service to pause; all services when omitted."),
          reason: str = typer.Option("", help="Why (shown in status and history)."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Maintenance: no automatic failover for SERVICE (or the whole fleet) until `resume`."""
    from continuity.failover import control

    bp = _bp()
    _check_service(bp, service)
    body = control.pause(_client(), service, _operator(), reason)
    if as_json:
        emit_json(body)
    else:
        console.print(f"automatic failover paused for {service or 'the whole fleet'} by {body['who']}")


@app.command()
@_redis_errors
def resume(service: str | None = typer.Argument(None, help="Service to resume; the global pause when omitted."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """End a maintenance pause."""
    from continuity.failover import control

    bp = _bp()
    _check_service(bp, service)
    who = _operator()
    was = control.resume(_client(), service, who)
    if as_json:
        emit_json({"service": service, "who": who, "was_paused": was})
    else:
        scope = service or "the whole fleet"
        console.print(f"automatic failover resumed for {scope}" if was else f"{scope} was not paused")


@app.command()
@_redis_errors
def history(as_json: bool = typer.Option(False, "--json"),
            limit: int = typer.Option(20, min=1, help="Newest N records."),
            service: str | None = typer.Option(None, help="Only this service.")) -> None:
    """Every failover and switchover, newest first: when, who, why, from → to, outcome, timings."""
    from continuity.failover import records

    bp = _bp()
    _check_service(bp, service)
    recs = records.history(_client(), limit=limit, service=service)
    if as_json:
        emit_json(recs)
        return
    if not recs:
        console.print("no failover records yet")
    for r in recs:  # one line per record: greppable, never truncated by the terminal width
        console.print(f"{_when(r['started'])}  {r['service']}  {r['kind']}  {r.get('old_primary') or '-'} -> "
                      f"{r.get('new_primary') or r.get('candidate') or '-'}  {r['outcome']}  by {r.get('who') or '-'}"
                      f"  detection {_secs(r.get('detection'))}  recovery {_secs(r.get('mttr'))}  id {r['id']}",
                      soft_wrap=True, highlight=False)


@app.command()
@_redis_errors
def show(record_id: str = typer.Argument(..., help="Record id from `history`."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One record with every step's node, duration and outcome."""
    from continuity.failover import records

    rec = records.get_record(_client(), record_id)
    if rec is None:
        raise ContinuityError(f"no failover record {record_id!r}")
    if as_json:
        emit_json(rec)
    else:
        _print_record(rec)

