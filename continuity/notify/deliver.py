"""The delivery loop: pulse events become deliveries owed to webhooks, and each is POSTed until it lands.

:class:`Notifier` does two things, over and over (``workers/observe.py`` runs it on a thread of every control
worker):

* :meth:`Notifier.pull` reads the pulse stream after the shared cursor, turns each event worth telling
  (:func:`continuity.notify.topics.notice_for`) into one delivery per subscribed webhook, and moves the cursor on.
  Deliveries are keyed ``<webhook>|<event id>`` and added only when unknown, so two loops reading the same events
  (several control workers) owe each notification once.
* :meth:`Notifier.push` takes the deliveries that are due, claims each (one poster at a time), POSTs it, and
  either records it delivered or schedules the next attempt with exponential backoff; after ``give_up_after`` it is
  dropped, counted and written to the pulse history (``notify.given_up``). A receiver that is down is therefore
  retried, not lost, and a notification delivered is never delivered again by another loop.

What cannot be ruled out is the duplicate of a loop that dies after the POST and before recording it; every
delivery carries an idempotency key (:func:`continuity.notify.payloads.idempotency_key`) for receivers that care.
The clock and the HTTP call are injected: the tests drive backoff without waiting and the shell posts for real.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from continuity.events import NOTIFY_GIVEN_UP, EventSink
from continuity.notify import conditions
from continuity.notify.conditions import Watch
from continuity.notify.config import Notifications, Retry, url_of
from continuity.notify.payloads import idempotency_key, render
from continuity.notify.topics import Notice, notice_for
from continuity.state import notifications as store
from continuity.state import pulse_stream
from continuity.state.values import object_or_raw

log = logging.getLogger("continuity.notify")

BATCH = 20  # deliveries attempted per push, events read per pull
CLAIM_MARGIN = 10.0  # a claim outlives the request's own timeout by this much

Post = Callable[[str, bytes, Mapping[str, str], float], int]


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body``; the HTTP status (an error status is returned, not raised); raises OSError when unreachable."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "continuity-notify",
                                          **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only, checked in config
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def owed(cfg: Notifications, notice: Notice, now: float) -> dict[str, dict[str, Any]]:
    """The deliveries a notice makes: delivery id -> its first body, one per webhook subscribed to its topic."""
    return {store.delivery_id(webhook, notice.event_id): {
        "webhook": webhook, "notice": notice.as_dict(), "created": now, "attempts": 0, "status": store.PENDING,
        "next_at": now, "last_error": None} for webhook in cfg.subscribers(notice.topic)}


def backoff(retry: Retry, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: ``initial`` doubled per failure, capped at ``max``."""
    return float(min(retry.max, retry.initial * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Outcome:
    delivery: str
    status: str  # delivered | retry | given_up | skipped
    detail: str = ""


class Notifier:
    def __init__(self, client: Any, config: Callable[[], Notifications], fleet: Callable[[], str], *,
                 post: Post = http_post, clock: Callable[[], float] = time.time, pulse: EventSink | None = None,
                 batch: int = BATCH, watch: Callable[[float], Watch] | None = None) -> None:
        self.client = client
        self.config = config
        self.fleet = fleet
        self.post = post
        self.clock = clock
        self.pulse = pulse
        self.batch = batch
        self.watch = watch

    # --- events -> deliveries ------------------------------------------------------------------------------------
    def pull(self, block_ms: int = 0) -> int:
        """Turn new pulse events into deliveries; how many were added. The first call of a fleet starts at the
        stream's end: webhooks are told about what happens from now on, not about the whole history."""
        cursor = store.cursor(self.client)
        if cursor is None:
            store.advance_cursor(self.client, pulse_stream.last_id(self.client))
            return 0
        entries = pulse_stream.after(self.client, cursor, block_ms, self.batch)
        if not entries:
            return 0
        cfg = self.config()
        added = 0
        now = self.clock()
        for _sid, fields in entries:
            event = pulse_stream.parse_entry(fields)
            notice = notice_for(event) if event is not None else None
            if notice is None:
                continue
            for did, body in owed(cfg, notice, now).items():
                added += store.enqueue(self.client, did, body, now)
        store.advance_cursor(self.client, str(entries[-1][0]))
        return added

    # --- watched conditions -> deliveries ------------------------------------------------------------------------
    def check(self) -> tuple[list[Notice], list[Notice]]:
        """Judge the watched conditions if this loop is the one due this interval: open an episode (and owe its
        notice) for each condition that began, close one (and owe its ``resolved`` notice) for each that ended.
        What this loop opened and closed; ([], []) when not due or nothing changed."""
        if self.watch is None:
            return [], []
        cfg = self.config()
        now = self.clock()
        if not store.check_due(self.client, now, cfg.checks.every):
            return [], []
        current = conditions.evaluate(self.watch(now), cfg.checks.limits())
        raw = store.episodes(self.client)
        episodes = {}
        for key, value in raw.items():
            ep = conditions.episode_of(key, object_or_raw(value))
            if ep is None:  # unreadable: closed silently, so a condition still holding opens a clean episode
                store.close_episode(self.client, key, value, {}, now)
            else:
                episodes[key] = ep
        begin, end = conditions.changes(episodes, current, now)
        opened = [n for key, n in begin
                  if store.open_episode(self.client, key, conditions.episode_body(n), owed(cfg, n, now), now)]
        closed = [n for ep, n in end if store.close_episode(self.client, ep.key, raw[ep.key], owed(cfg, n, now), now)]
        return opened, closed

    # --- deliveries -> POSTs ------------------------------------------------------------------------------------
    def push(self) -> list[Outcome]:
        """Attempt every due delivery once (those another loop holds are left to it)."""
        cfg = self.config()
        return [self._attempt(cfg, did) for did in store.due(self.client, self.clock(), self.batch)]

    def _attempt(self, cfg: Notifications, did: str) -> Outcome:
        token = uuid.uuid4().hex
        hook = cfg.webhooks.get(store.webhook_of(did))
        timeout = hook.timeout if hook is not None else 5.0
        if not store.claim(self.client, did, token, timeout + CLAIM_MARGIN):
            return Outcome(did, "skipped", "another loop holds it")
        body = store.read(self.client, did)
        if body is None or body.get("status") != store.PENDING:
            store.release(self.client, did, token)
            return Outcome(did, "skipped", "not pending")
        attempts = int(body.get("attempts") or 0) + 1
        if hook is None:
            return self._give_up(did, token, body, attempts, "webhook no longer configured")
        notice = Notice.from_dict(body["notice"])
        webhook = store.webhook_of(did)
        error = self._send(cfg, webhook, hook, notice)
        now = self.clock()
        if error is None:
            store.finish(self.client, did, token, {**body, "attempts": attempts, "status": store.DELIVERED,
                                                   "delivered_at": now, "last_error": None}, now)
            return Outcome(did, "delivered")
        if now - float(body.get("created") or now) >= cfg.retry.give_up_after:
            return self._give_up(did, token, body, attempts, error)
        next_at = now + backoff(cfg.retry, attempts)
        store.reschedule(self.client, did, token, {**body, "attempts": attempts, "next_at": next_at,
                                                   "last_error": error}, next_at)
        return Outcome(did, "retry", error)

    def _send(self, cfg: Notifications, webhook: str, hook: Any, notice: Notice) -> str | None:
        """POST the notice; None when the receiver accepted it (2xx), else why not."""
        fleet = cfg.model.fleet or self.fleet()
        payload = json.dumps(render(hook.format, notice, webhook, fleet), sort_keys=True).encode()
        headers = {"Idempotency-Key": idempotency_key(webhook, notice.event_id), **hook.headers}
        try:
            status = self.post(url_of(webhook, hook), payload, headers, hook.timeout)
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out, URL unset: all retried
            return f"{type(exc).__name__}: {exc}"[:300]
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _give_up(self, did: str, token: str, body: Mapping[str, Any], attempts: int, error: str) -> Outcome:
        now = self.clock()
        store.finish(self.client, did, token, {**body, "attempts": attempts, "status": store.GIVEN_UP,
                                               "given_up_at": now, "last_error": error}, now)
        notice = body.get("notice") or {}
        if self.pulse is not None:
            try:
                self.pulse.emit(NOTIFY_GIVEN_UP, data={"webhook": store.webhook_of(did), "topic": notice.get("topic"),
                                                       "event": notice.get("event_id"), "attempts": attempts,
                                                       "error": error})
            except Exception:  # noqa: BLE001 - the give-up is recorded in Redis either way
                log.warning("could not write the notify.given_up event of %s", did)
        log.warning("notification %s given up after %d attempts: %s", did, attempts, error)
        return Outcome(did, "given_up", error)

    # --- the loop -----------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, block_ms: int = 1000, pause_on_error: float = 5.0) -> None:
        """Pull and push until ``stop`` is set; new events wake it at once, retries are checked every ``block_ms``.
        A Redis outage or a broken config file is logged and waited out, never fatal."""
        while not stop.is_set():
            try:
                self.pull(block_ms)
                self.check()
                self.push()
            except Exception as exc:  # noqa: BLE001 - the loop outlives Redis blips and config mistakes
                log.warning("notification loop: %s", exc)
                stop.wait(pause_on_error)
