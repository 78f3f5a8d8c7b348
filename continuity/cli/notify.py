"""``continuity notify check|status|test``: the webhooks of ops/notifications.yml, from the command line.

``check`` validates the file (a mistake is one line naming file, line and key, exit 2) and says where each webhook
posts and what it hears about; ``status`` lists the watched conditions that hold now (open episodes) and pending,
delivered and given-up deliveries with their last error;
``test`` posts one test notification to a webhook now, bypassing the queue, so a new Slack channel or receiver
can be tried before anything goes wrong.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import typer

from continuity import paths
from continuity.cli import output
from continuity.cli.failover.common import redis_client, redis_errors, when
from continuity.errors import ContinuityError, UsageError
from continuity.notify import conditions
from continuity.notify.config import load_notifications, url_of
from continuity.notify.deliver import http_post
from continuity.notify.payloads import idempotency_key, render
from continuity.notify.topics import Notice
from continuity.state import notifications as store
from continuity.state.values import object_or_raw

app = typer.Typer(help="Webhook notifications: check ops/notifications.yml, see deliveries, send a test.",
                  no_args_is_help=True)


@app.command()
def check(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Validate ops/notifications.yml and show each webhook's target, format and topics."""
    path = paths.notifications_path()
    cfg = load_notifications(path)
    hooks = {name: {"format": h.format, "topics": list(h.topics), "url": h.url, "url_env": h.url_env,
                    "url_env_set_here": bool(h.url_env and os.environ.get(h.url_env)), "timeout": h.timeout}
             for name, h in sorted(cfg.webhooks.items())}
    if as_json:
        output.emit_json({"file": str(path), "exists": path.exists(), "webhooks": hooks,
                          "retry": cfg.retry.model_dump(), "checks": cfg.checks.model_dump()})
        return
    if not path.exists():
        output.console.print(f"{path}: no such file: no webhooks are told anything", highlight=False)
        return
    output.console.print(f"{path}: ok, {len(hooks)} webhook(s)", highlight=False)
    for name, h in hooks.items():
        target = h["url"] or f"${h['url_env']}" + ("" if h["url_env_set_here"] else " (not set in this shell)")
        output.console.print(f"  {name}: {h['format']} to {target}; topics: {', '.join(h['topics'])}",
                             highlight=False, markup=False, soft_wrap=True)
    c = cfg.checks
    output.console.print(f"  watched every {c.every:g}s: backup stale past its RPO (or {c.snapshot_schedules:g}x its "
                         f"schedule), restore unverified for {c.verify_schedules:g}x its drill schedule, pause "
                         f"without end older than {c.pause_without_expiry:g}s, standby lag over its RPO",
                         highlight=False, markup=False, soft_wrap=True)


def _open_episodes(client: object) -> list[dict[str, object]]:
    out = []
    for key, raw in sorted(store.episodes(client).items()):
        ep = conditions.episode_of(key, object_or_raw(raw))
        if ep is not None:
            out.append({"key": key, "topic": ep.notice.topic, "since": ep.since, "title": ep.notice.title,
                        "labels": ep.notice.labels})
    return out


@app.command()
@redis_errors
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
           last: int = typer.Option(20, "--last", help="How many recent deliveries to list.")) -> None:
    """Pending, delivered and given-up notifications per webhook, and the most recent deliveries."""
    client = redis_client()
    stats = store.stats(client)
    pending = store.pending_by_webhook(client)
    hooks = sorted({w for w, _ in stats} | set(pending))
    summary = {w: {"pending": pending.get(w, 0), "delivered": stats.get((w, store.DELIVERED), 0),
                   "given_up": stats.get((w, store.GIVEN_UP), 0)} for w in hooks}
    recent = store.recent(client, last)
    episodes = _open_episodes(client)
    if as_json:
        output.emit_json({"webhooks": summary, "recent": recent, "open": episodes})
        return
    for ep in episodes:
        output.console.print(f"open since {when(ep['since'])}: {ep['topic']}: {ep['title']}", highlight=False,
                             markup=False, soft_wrap=True)
    if not hooks:
        output.console.print("no notifications yet")
        return
    for w, n in summary.items():
        output.console.print(f"{w}: {n['pending']} pending, {n['delivered']} delivered, {n['given_up']} given up",
                             highlight=False)
    for d in recent:
        notice = d.get("notice") or {}
        err = f" — {d['last_error']}" if d.get("last_error") else ""
        output.console.print(f"  {when(d.get('created'))} {d.get('webhook')} {d.get('status'):<9} "
                             f"{notice.get('topic')}: {notice.get('title')} ({d.get('attempts', 0)} attempt(s)){err}",
                             highlight=False, markup=False, soft_wrap=True)


@app.command()
def test(webhook: str = typer.Argument(..., help="Webhook name from ops/notifications.yml."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Post one test notification to WEBHOOK now (not queued, not retried); exit 1 if it is not accepted."""
    cfg = load_notifications(paths.notifications_path())
    hook = cfg.webhooks.get(webhook)
    if hook is None:
        raise UsageError(f"no webhook {webhook!r} in {paths.notifications_path()} "
                         f"(declared: {', '.join(sorted(cfg.webhooks)) or 'none'})")
    notice = Notice("test", "info", "continuity test notification", "Sent by `continuity notify test`; nothing "
                    "happened.", f"test-{uuid.uuid4().hex}", time.time(), "notify.test", {})
    body = json.dumps(render(hook.format, notice, webhook, cfg.model.fleet or "continuity"), sort_keys=True).encode()
    headers = {"Idempotency-Key": idempotency_key(webhook, notice.event_id), **hook.headers}
    try:
        code = http_post(url_of(webhook, hook), body, headers, hook.timeout)
    except OSError as exc:
        raise ContinuityError(f"webhook {webhook}: {exc}") from None
    if as_json:
        output.emit_json({"webhook": webhook, "status": code, "ok": 200 <= code < 300})
    if not 200 <= code < 300:
        raise ContinuityError(f"webhook {webhook} answered HTTP {code}")
    if not as_json:
        output.console.print(f"webhook {webhook} accepted the test notification (HTTP {code})")
