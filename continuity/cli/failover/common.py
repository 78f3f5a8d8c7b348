"""What the ``continuity failover`` commands share: the blueprint, a Redis client, checks and record printing."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from continuity import paths, settings
from continuity.blueprint import Blueprint, load_blueprint
from continuity.cli.output import console
from continuity.errors import ContinuityError, UsageError
from continuity.redisd import connect, fleet_url
from continuity.state.controls import GLOBAL

F = TypeVar("F", bound=Callable[..., Any])

def redis_errors(fn: F) -> F:
    """An unreachable Redis is one clear line (exit 1), never a traceback: this is what on-call sees first."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            where = fleet_url() or f"({settings.REDIS_URL.name} unset, no `continuity up` running)"
            raise ContinuityError(f"cannot talk to Redis at {where}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def blueprint() -> Blueprint:
    return load_blueprint(paths.blueprint_path())


def redis_client() -> Any:
    return connect(socket_timeout=5)


def check_service(bp: Blueprint, service: str | None) -> None:
    if service is not None and service not in bp.services:
        raise UsageError(f"unknown service {service!r}; the blueprint declares: {', '.join(sorted(bp.services))}")


def check_move(service: str, to: str) -> None:
    """Usage errors before anything touches Redis: unknown service or node is exit 2, not a stuck request."""
    bp = blueprint()
    check_service(bp, service)
    if to not in bp.nodes:
        raise UsageError(f"unknown node {to!r}; the blueprint declares: {', '.join(sorted(bp.nodes))}")


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def pause_line(scope: str, note: dict[str, Any]) -> str:
    """One pause for a human: scope, who, why, and its declared end (or that it ran past it)."""
    what = "the whole fleet" if scope == GLOBAL else scope
    if note.get("expired"):
        state = f"EXPIRED at {when(note.get('until'))} UTC (no longer blocks failover; `failover resume` clears it)"
    elif note.get("until") is not None:
        state = f"until {when(note.get('until'))} UTC"
    else:
        state = "until resumed"
    why = f" — {note['reason']}" if note.get("reason") else ""
    return f"pause: {what} by {note.get('who', '?')} since {when(note.get('at'))} UTC, {state}{why}"


def data_line(prep: dict[str, Any]) -> str:
    """What the prepare step started the new epoch from and what that lost, against the committed position."""
    src = prep.get("source")
    if src == "standby" and prep.get("from"):
        src = f"standby {prep['from']}"
    elif src == "snapshot" and prep.get("snapshot"):
        src = f"snapshot {str(prep['snapshot'])[:8]}"
    start = (prep.get("starts_from") or {}).get("records")
    committed = prep.get("committed") or {}
    out = f"data: {src}, starts at {'-' if start is None else start} records"
    if committed:
        lost, secs_lost = prep.get("loss_records"), prep.get("loss_seconds")
        out += (f"; committed {committed.get('records')} at epoch {committed.get('epoch')}: lost "
                f"{'-' if lost is None else lost} records ({secs(secs_lost)})")
    return out


def print_record(rec: dict[str, Any]) -> None:
    """One failover record for a human: who moved what where, then every step with node, duration, outcome."""
    console.print(f"record {rec.get('id')}: {rec.get('kind', '')} of {rec.get('service', '')} "
                  f"{rec.get('old_primary') or '-'} -> {rec.get('new_primary') or rec.get('candidate') or '-'}: "
                  f"[bold]{rec.get('outcome')}[/] (by {rec.get('who', '?')})", soft_wrap=True, highlight=False)
    why = (rec.get("finish_detail") or {}).get("reason")
    if why:  # an escalation (or a superseded chain) says why it stopped: what the on-call must act on
        console.print(f"  {rec.get('outcome')}: {why}", soft_wrap=True, highlight=False, markup=False)
    if rec.get("detection") is not None:
        console.print(f"  detection (last heartbeat -> declared dead) {secs(rec['detection'])}", highlight=False)
    if rec.get("lease_wait") is not None:
        console.print(f"  waiting out the old lease + margin {secs(rec['lease_wait'])}", highlight=False)
    for st in rec.get("steps", []):
        mark = "ok" if st.get("ok") else ("FAILED" if st.get("ok") is False else "...")
        extra = f" — {st['error']}" if st.get("error") else ""
        dur = "-" if st.get("duration") is None else f"{st['duration'] * 1000:.0f}ms"
        console.print(f"  [{st['attempt']}] {st['step']:<8} {st.get('node') or '-':<8} {dur:>8} {mark}{extra}",
                      soft_wrap=True, highlight=False, markup=False)
        if st.get("step") == "prepare" and st.get("source"):
            console.print(f"      {data_line(st)}", soft_wrap=True, highlight=False, markup=False)
    if rec.get("mttr") is not None:
        console.print(f"  recovery (last seen -> verified) {secs(rec['mttr'])}")
