"""Failover chains on Celery: thin tasks around :mod:`continuity.failover.steps`.

One chain per affected service (fence → prepare → promote → repoint → verify →
record; a switchover starts with demote on the old primary's queue), fanned
out as a group. Steps that act on the candidate run on the candidate's own
queue ``node.<id>``, so they happen on that node; fence, repoint and record run
on ``continuity.control`` (or, by default, on the candidate's queue too: see
``_queue_for``). Tasks are late-acked and each step's effect is keyed
by (service, epoch), so a redelivered task changes nothing. A failed candidate
step launches a new chain for the next candidate, or escalates (incident +
pulse event) when none is left. Task states carry {service, epoch, step} so
Flower shows where each failover stands.
"""

from __future__ import annotations

import time
from typing import Any

from celery import chain, group
from celery.exceptions import Ignore

from continuity import paths, settings
from continuity.blueprint import Blueprint, load_blueprint
from continuity.errors import UsageError
from continuity.events import FAILOVER_CHAIN_RESUMED, FAILOVER_RETRY
from continuity.failover import control, records, steps
from continuity.failover.planner import (
    STEP_TARGET,
    FailoverPlan,
    node_state_name,
    plan_forced,
    plan_switchover,
)
from continuity.redisd import connect
from continuity.state import controls, epochs, failover_records, leases, routes
from workers.app import CONTROL_QUEUE, app

MAX_FENCE_RETRIES = 60
_client: Any = None
_bp_cache: tuple[str, float, Blueprint] | None = None


def _redis() -> Any:
    global _client
    if _client is None:
        _client = connect(socket_timeout=5)
    return _client


def _blueprint() -> Blueprint:
    """Cached per file and mtime: a step must not pay for validation, but an edited blueprint is seen."""
    global _bp_cache
    path = paths.blueprint_path()
    mtime = path.stat().st_mtime
    if _bp_cache is None or _bp_cache[0] != str(path) or _bp_cache[1] != mtime:
        _bp_cache = (str(path), mtime, load_blueprint(path))
    return _bp_cache[2]


def _node() -> str | None:
    return settings.NODE.get()


def _progress(task: Any, ctx: dict[str, Any], step: str) -> None:
    if task.request.id:
        task.update_state(state="PROGRESS", meta={"service": ctx["service"], "epoch": ctx.get("epoch"),
                                                  "step": step, "record": ctx["record_id"],
                                                  "candidate": ctx.get("candidate"), "node": _node()})


def _execute(task: Any, step: str, ctx: dict[str, Any]) -> dict[str, Any]:
    client, bp = _redis(), _blueprint()
    _progress(task, ctx, step)
    where = ctx["old_primary"] if step == "demote" else (ctx["candidate"] if STEP_TARGET[step] == "candidate"
                                                           else _node())
    effects = {
        "demote": lambda: steps.demote(client, bp, ctx),
        "fence": lambda: steps.fence(client, bp, ctx, time.time()),
        "prepare": lambda: steps.prepare(client, bp, ctx),
        "promote": lambda: steps.promote(client, bp, ctx),
        "repoint": lambda: steps.repoint(client, bp, ctx, time.time()),
        "verify": lambda: steps.verify(client, bp, ctx),
        "record": lambda: steps.record(client, bp, ctx, time.time()),
    }
    try:
        detail = steps.run_step(client, ctx, step, where, effects[step], self_marking=(step == "fence"))
    except steps.NotYet as exc:
        raise task.retry(countdown=max(0.05, min(exc.wait, 10.0)), max_retries=MAX_FENCE_RETRIES) from None
    except steps.Superseded as exc:
        records.finish(client, ctx["record_id"], "superseded", time.time(), {"reason": str(exc), "step": step},
                       service=ctx["service"])
        task.update_state(state="SUPERSEDED", meta={"service": ctx["service"], "step": step, "reason": str(exc)})
        raise Ignore() from None
    except steps.AlreadyHandled as exc:
        task.update_state(state="DUPLICATE", meta={"service": ctx["service"], "step": step, "reason": str(exc)})
        raise Ignore() from None
    except steps.StepFailed as exc:
        _after_failure(client, bp, ctx, step, str(exc))
        raise
    if step == "record":
        steps.close_record(client, ctx, time.time())
    return {"service": ctx["service"], "epoch": ctx.get("epoch"), "step": step, "node": where, "detail": detail}


def _task(step: str, time_limit: int) -> Any:
    @app.task(name=f"continuity.failover.{step}", bind=True, acks_late=True, reject_on_worker_lost=True,
              time_limit=time_limit, soft_time_limit=time_limit - 5, max_retries=MAX_FENCE_RETRIES)
    def run(self: Any, ctx: dict[str, Any]) -> dict[str, Any]:
        return _execute(self, step, ctx)

    run.__doc__ = f"Failover step {step!r} for one (service, epoch); a redelivery is a no-op."
    return run


demote = _task("demote", 60)
fence = _task("fence", 30)
prepare = _task("prepare", 300)
promote = _task("promote", 60)
repoint = _task("repoint", 30)
verify = _task("verify", 30)
record = _task("record", 30)
TASKS = {"demote": demote, "fence": fence, "prepare": prepare, "promote": promote, "repoint": repoint,
         "verify": verify, "record": record}


# --- building and launching chains --------------------------------------------------------------------------------
# Where the control steps (fence, repoint, record) of a chain run. "candidate" (default): on the candidate's own
# queue. The shared continuity.control queue is also consumed by the failing node itself while it is frozen or
# partitioned, and Redis hands a message to a client blocked in BRPOP even if that client will never read it: the
# fence would sit in the frozen worker (or be lost with a partitioned one) exactly when it matters. The candidate
# is alive by construction, and the chain cannot finish without it anyway. "control" restores the shared queue.
# Read per chain from $CONTINUITY_FAILOVER_CONTROL_STEPS (settings.FAILOVER_CONTROL_STEPS).


def _queue_for(bp: Blueprint, step: str, ctx: dict[str, Any]) -> str:
    target = STEP_TARGET[step]
    if target == "candidate" or (target == "control" and settings.FAILOVER_CONTROL_STEPS.get() == "candidate"):
        return bp.queue(ctx["candidate"])
    if target == "old":
        return bp.queue(ctx["old_primary"])
    return CONTROL_QUEUE


def build_chain(bp: Blueprint, ctx: dict[str, Any], now: float) -> Any:
    sigs = [TASKS[step].si(ctx).set(queue=_queue_for(bp, step, ctx)) for step in ctx["steps"]]
    wait = float(ctx.get("not_before") or 0) - now
    if wait > 0 and ctx["steps"][0] == "fence":
        sigs[0] = sigs[0].set(countdown=round(wait, 3))
    return chain(*sigs)


def _context(plan: FailoverPlan, rid: str, expected: int, attempt: int = 0) -> dict[str, Any]:
    return {"record_id": rid, "service": plan.service, "kind": plan.kind, "candidate": plan.candidate,
            "fallbacks": list(plan.fallbacks), "old_primary": plan.old_primary, "expected_epoch": expected,
            "epoch": expected + 1, "attempt": attempt, "not_before": plan.not_before, "steps": list(plan.steps)}


def launch_failovers(plans: list[FailoverPlan | dict[str, Any]], trigger: dict[str, Any], *,
                     who: str = "detector", client: Any = None, manual: bool = False) -> list[str]:
    """Open a record and start a chain for each plan; escalate plans without a candidate. Returns record ids.

    The cool-down key is claimed with SET NX before anything starts, so two
    sweeps racing on the same death launch one failover, not two (manual
    actions override the cool-down and restart it).
    """
    client = client or _redis()
    bp = _blueprint()
    now = time.time()
    ids: list[str] = []
    chains = []
    for item in plans:
        plan = item if isinstance(item, FailoverPlan) else FailoverPlan.from_dict(item)
        until = now + bp.policy.failover_cooldown
        claimed = controls.claim_cooldown(client, plan.service, until, bp.policy.failover_cooldown, force=manual)
        if not claimed:
            continue
        expected = epochs.current_epoch(client, plan.service)
        rid = records.open_record(client, dict(plan.to_dict(), expected_epoch=expected), trigger, who, now)
        ids.append(rid)
        if plan.action == "escalate" or plan.candidate is None:
            _escalate(client, plan.service, rid, plan.reason or "no usable candidate", who)
            continue
        ctx = _context(plan, rid, expected)
        records.set_attempt(client, rid, 0, plan.candidate, expected, ctx)
        chains.append(build_chain(bp, ctx, now))
    if chains:
        group(chains).apply_async()
    return ids


def _escalate(client: Any, service: str, rid: str, reason: str, who: str = "detector") -> None:
    now = time.time()
    records.open_incident(client, service, reason, now, record_id=rid, who=who)
    records.finish(client, rid, "escalated", now, {"reason": reason}, service=service)


def _after_failure(client: Any, bp: Blueprint, ctx: dict[str, Any], step: str, error: str,
                   local: bool = True) -> None:
    """A candidate step failed: clean up after the candidate, then the next live candidate, or a human.

    ``local`` is False when called by the watchdog on another node: the stop hook then is not ours to run
    (the epoch already fences whatever the candidate started).
    """
    if local and step in ("promote", "verify"):
        steps.undo_promote(client, bp, ctx)
    if step in ("demote", "fence", "repoint", "record"):
        # not the candidate's fault: retrying elsewhere would not help
        _escalate(client, ctx["service"], ctx["record_id"], f"{step} failed: {error}")
        return
    states = control.read_node_states(client, bp)
    fallbacks = [n for n in ctx.get("fallbacks", []) if node_state_name(states.get(n)) == "alive"]
    if not fallbacks:
        _escalate(client, ctx["service"], ctx["record_id"],
                  f"{step} failed on {ctx['candidate']} ({error}) and no other candidate is alive")
        return
    now = time.time()
    expected = epochs.current_epoch(client, ctx["service"])
    attempt = int(ctx.get("attempt", 0)) + 1
    nxt = dict(ctx, candidate=fallbacks[0], fallbacks=fallbacks[1:], attempt=attempt, expected_epoch=expected,
               epoch=expected + 1, not_before=now, old_primary=ctx.get("old_primary"),
               steps=[s for s in ctx["steps"] if s != "demote"])
    records.set_attempt(client, ctx["record_id"], attempt, fallbacks[0], expected, nxt)
    records.pulse_for(client).emit(FAILOVER_RETRY, service=ctx["service"], epoch=expected,
                                   data={"record": ctx["record_id"], "failed": ctx["candidate"], "step": step,
                                         "error": error, "next": fallbacks[0], "attempt": attempt})
    build_chain(bp, nxt, now).apply_async()


# --- watchdog: chains whose worker died mid-step -------------------------------------------------------------------
WATCHDOG_TASK = "continuity.failover.watchdog"
WATCHDOG_INTERVAL = 2.0
STALL_AFTER = 5.0  # no progress and no live step lock this long: send the pending step again
GIVE_UP_AFTER = 45.0  # still nothing: the step's node is gone; treat the step as failed (next candidate)


def supervise(client: Any, bp: Blueprint, now: float) -> dict[str, list[str]]:
    """Resume or fail over chains that stopped moving.

    The broker hands a dead worker's unacked task out again only after its
    visibility timeout (minutes), far beyond any recovery objective. Steps are
    idempotent per (service, epoch) and serialised by a step lock, so sending
    the pending step again is always safe: if the original is alive, the copy
    waits for it and then does nothing.
    """
    resumed: list[str] = []
    failed: list[str] = []
    for rid in failover_records.recent_ids(client, now - 3600):
        rec = failover_records.read(client, rid)
        if rec is None or not rec.is_open:
            continue
        latest = rec.latest_attempt()
        if latest is None:
            continue
        attempt, ctx = latest
        pending = next((i for i, st in enumerate(ctx["steps"]) if not rec.step_ok(attempt, st)), None)
        if pending is None:
            continue
        step = ctx["steps"][pending]
        key = steps.marker(ctx, step)
        if rec.step_end(attempt, step) is not None or client.exists(key + ":lock") or client.exists(key + ":failed"):
            continue  # failed and handled, or running right now
        last = max(rec.meta["started"], float(ctx.get("not_before") or 0), rec.last_progress(attempt))
        if step == "fence" and rec.step_start(attempt, "fence") is not None:
            # it ran and waits for the old lease (steps.fence)
            last = max(last, float(ctx.get("not_before") or 0) + 2 * bp.policy.lease_ttl + bp.policy.lease_margin)
        idle = now - last
        if idle >= GIVE_UP_AFTER:
            client.set(key + ":failed", f"no progress for {idle:.0f}s")
            records.step_finished(client, rid, attempt, step, False, now,
                                  {"error": f"no progress for {idle:.0f}s (its worker is gone)"},
                                  service=ctx["service"], epoch=ctx.get("epoch"))
            _after_failure(client, bp, ctx, step, f"no progress for {idle:.0f}s", local=False)
            failed.append(rid)
        elif idle >= STALL_AFTER and client.set(key + ":resent", f"{now:.3f}", nx=True,
                                                px=int(STALL_AFTER * 1000)):
            build_chain(bp, dict(ctx, steps=ctx["steps"][pending:]), now).apply_async()
            records.pulse_for(client).emit(FAILOVER_CHAIN_RESUMED, service=ctx["service"], epoch=ctx.get("epoch"),
                                           data={"record": rid, "attempt": attempt, "step": step,
                                                 "idle": round(idle, 3)})
            resumed.append(rid)
    return {"resumed": resumed, "failed": failed}


def reconcile_routes(client: Any, bp: Blueprint, now: float) -> list[str]:
    """Publish a route for every service whose lease holder has none at its epoch (a bootstrapped service).

    Routes normally move only in a chain's repoint step; a service placed by the
    node agent at first start has a primary but no route yet, and clients need one.
    The route is compare-and-set by epoch, so this can never point clients back.
    """
    route_map = routes.read_many(client, sorted(bp.services))
    published = []
    for service, lease in leases.read_many(client, sorted(bp.services)).items():
        route = route_map.get(service)
        if lease is None or (route is not None and route.epoch >= lease.epoch):
            continue
        if epochs.current_epoch(client, service) != lease.epoch:
            continue  # a stale holder: never route to it
        if steps.publish_route(client, bp, service, lease.node, lease.epoch, now) is not None:
            published.append(service)
    return published


@app.task(name=WATCHDOG_TASK, time_limit=20, soft_time_limit=15, acks_late=False, ignore_result=True)
def watchdog() -> dict[str, list[str]]:
    """Every few seconds on the control queue: resume stalled chains, publish missing routes."""
    client, bp, now = _redis(), _blueprint(), time.time()
    return {**supervise(client, bp, now), "routes": reconcile_routes(client, bp, now)}


def beat_entries(bp: Blueprint) -> dict[str, dict[str, Any]]:
    """The watchdog's beat entry (collected by beat_schedule.build_schedule)."""
    from datetime import timedelta

    return {WATCHDOG_TASK: {"task": WATCHDOG_TASK, "schedule": timedelta(seconds=WATCHDOG_INTERVAL),
                            "options": {"queue": CONTROL_QUEUE, "routing_key": CONTROL_QUEUE,
                                        "expires": WATCHDOG_INTERVAL}}}


# --- operator entry points (used by the CLI) ----------------------------------------------------------------------
def _current(client: Any, bp: Blueprint, service: str) -> tuple[str, Any, int]:
    if service not in bp.services:
        raise UsageError(f"unknown service {service!r}; the blueprint declares: {', '.join(sorted(bp.services))}")
    lease = leases.read(client, service)
    primary = routes.primary_of(bp, service, lease, routes.read(client, service))
    return primary.node, lease, epochs.current_epoch(client, service)


def switchover(service: str, target: str, who: str, client: Any = None) -> str:
    """Coordinated: the old primary demotes itself (stop hook, lease released) before the target is promoted."""
    client = client or _redis()
    bp = _blueprint()
    primary, _, epoch = _current(client, bp, service)
    plan = plan_switchover(bp, service, target, primary, control.read_node_states(client, bp), time.time(), epoch)
    trigger = {"reason": "switchover", "who": who, "requested_at": time.time()}
    return launch_failovers([plan], trigger, who=who, client=client, manual=True)[0]


def force_failover(service: str, target: str, who: str, client: Any = None) -> str:
    """Old primary unreachable: wait out its lease plus the margin, then fence and promote the target."""
    client = client or _redis()
    bp = _blueprint()
    primary, lease, epoch = _current(client, bp, service)
    plan = plan_forced(bp, service, target, primary, control.read_node_states(client, bp), lease, time.time(),
                       epoch)
    trigger = {"reason": "forced failover", "who": who, "requested_at": time.time()}
    return launch_failovers([plan], trigger, who=who, client=client, manual=True)[0]


def wait_record(rid: str, timeout: float, client: Any = None, poll: float = 0.1) -> dict[str, Any] | None:
    """Block until the record is final or the deadline passes; returns the record as last read."""
    client = client or _redis()
    deadline = time.monotonic() + timeout
    rec = records.get_record(client, rid)
    while time.monotonic() < deadline:
        rec = records.get_record(client, rid)
        if rec and rec["outcome"] in records.FINAL:
            return rec
        time.sleep(poll)
    return rec
