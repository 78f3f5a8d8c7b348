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

import logging
import time
from datetime import timedelta
from typing import Any

from celery import chain, group
from celery.exceptions import Ignore

from continuity import settings, task_auth
from continuity.blueprint import Blueprint
from continuity.errors import UsageError
from continuity.events import FAILOVER_CHAIN_RESUMED, FAILOVER_RETRY
from continuity.failover import control, records, retry, steps
from continuity.failover.admission import admit
from continuity.failover.context import FailoverContext, InvalidContext
from continuity.failover.mandate import Mandate, NoMandate, grant
from continuity.failover.planner import (
    STEP_TARGET,
    FailoverPlan,
    node_state_name,
    plan_forced,
    plan_switchover,
)
from continuity.failover.watchdog import STALL_AFTER, Pending, Verdict, decide, pending_step
from continuity.signing import SigningKey
from continuity.state import controls, epochs, failover_records, leases, routes, step_markers
from workers.app import CONTROL_QUEUE
from workers.task import blueprint as _blueprint
from workers.task import continuity_task, redis_client, report_rejection

log = logging.getLogger("continuity.failover")
MAX_FENCE_RETRIES = 60


def _redis() -> Any:
    return redis_client()


def _node() -> str | None:
    return settings.NODE.get()


def _progress(task: Any, ctx: FailoverContext, step: str) -> None:
    if task.request.id:
        task.update_state(state="PROGRESS", meta={"service": ctx.service, "epoch": ctx.epoch, "step": step,
                                                  "record": ctx.record_id, "candidate": ctx.candidate,
                                                  "node": _node()})


EFFECTS = {
    "demote": lambda client, bp, ctx: steps.demote(client, bp, ctx),
    "fence": lambda client, bp, ctx: steps.fence(client, bp, ctx, time.time()),
    "prepare": lambda client, bp, ctx: steps.prepare(client, bp, ctx),
    "promote": lambda client, bp, ctx: steps.promote(client, bp, ctx),
    "repoint": lambda client, bp, ctx: steps.repoint(client, bp, ctx, time.time()),
    "verify": lambda client, bp, ctx: steps.verify(client, bp, ctx),
    "record": lambda client, bp, ctx: steps.record(client, bp, ctx, time.time()),
}


def _execute(task: Any, step: str, raw: Any, client: Any, bp: Blueprint) -> dict[str, Any]:
    try:
        ctx = FailoverContext.from_dict(raw, bp)  # a message naming anything outside the blueprint stops here
        admit(client, ctx, time.time())  # ...one its open record does not name, or a manual move with no mandate
    except (InvalidContext, NoMandate) as exc:
        envelope = getattr(task.request, task_auth.HEADER, None)
        report_rejection(f"continuity.failover.{step}", task.request.id, str(exc),
                         envelope.get("signer") if isinstance(envelope, dict) else None)
        raise
    _progress(task, ctx, step)
    where = ctx.old_primary if step == "demote" else (ctx.candidate if STEP_TARGET[step] == "candidate"
                                                      else _node())
    try:
        detail = steps.run_step(client, ctx, step, where, lambda: EFFECTS[step](client, bp, ctx),
                                self_marking=(step == "fence"))
    except steps.NotYet as exc:
        raise task.retry(countdown=max(0.05, min(exc.wait, 10.0)), max_retries=MAX_FENCE_RETRIES) from None
    except steps.Superseded as exc:
        records.finish(client, ctx.record_id, "superseded", time.time(), {"reason": str(exc), "step": step},
                       service=ctx.service)
        task.update_state(state="SUPERSEDED", meta={"service": ctx.service, "step": step, "reason": str(exc)})
        raise Ignore() from None
    except steps.AlreadyHandled as exc:
        task.update_state(state="DUPLICATE", meta={"service": ctx.service, "step": step, "reason": str(exc)})
        raise Ignore() from None
    except steps.StepFailed as exc:
        _after_failure(client, bp, ctx, step, str(exc))
        raise
    if step == "record":
        steps.close_record(client, ctx, time.time())
    return {"service": ctx.service, "epoch": ctx.epoch, "step": step, "node": where, "detail": detail}


def _task(step: str, time_limit: int) -> Any:
    @continuity_task(f"continuity.failover.{step}", bind=True, time_limit=time_limit,
                     max_retries=MAX_FENCE_RETRIES)
    def run(self: Any, ctx: dict[str, Any], *, client: Any, bp: Blueprint) -> dict[str, Any]:
        return _execute(self, step, ctx, client, bp)

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


def _queue_for(bp: Blueprint, step: str, ctx: FailoverContext) -> str:
    target = STEP_TARGET[step]
    if target == "candidate" or (target == "control" and settings.FAILOVER_CONTROL_STEPS.get() == "candidate"):
        return bp.queue(ctx.candidate)
    if target == "old":
        return bp.queue(ctx.old_primary)
    return CONTROL_QUEUE


def build_chain(bp: Blueprint, ctx: FailoverContext, now: float) -> Any:
    wire = ctx.to_dict()
    sigs = [TASKS[step].si(wire).set(queue=_queue_for(bp, step, ctx)) for step in ctx.steps]
    wait = float(ctx.not_before or 0) - now
    if wait > 0 and ctx.steps[0] == "fence":
        sigs[0] = sigs[0].set(countdown=round(wait, 3))
    return chain(*sigs)


def _context(plan: FailoverPlan, rid: str, expected: int, attempt: int = 0,
             mandate: Mandate | None = None) -> FailoverContext:
    assert plan.candidate is not None
    return FailoverContext(record_id=rid, service=plan.service, kind=plan.kind, candidate=plan.candidate,
                           fallbacks=tuple(plan.fallbacks), old_primary=plan.old_primary, expected_epoch=expected,
                           epoch=expected + 1, attempt=attempt, not_before=plan.not_before, steps=tuple(plan.steps),
                           mandate=mandate)


def launch_failovers(plans: list[FailoverPlan | dict[str, Any]], trigger: dict[str, Any], *,
                     who: str = "detector", client: Any = None, manual: bool = False,
                     operator: SigningKey | None = None) -> list[str]:
    """Open a record and start a chain for each plan; escalate plans without a candidate. Returns record ids.

    ``operator``: the key of the person moving a role by hand; each record gets that operator's mandate
    (:mod:`continuity.failover.mandate`), which every step of a switchover or forced failover requires.

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
        rid = records.new_record_id(plan.service, now)
        mandate = None
        if operator is not None and plan.candidate is not None:
            mandate = grant(operator, rid, plan.service, plan.kind, plan.candidate, plan.old_primary, now)
        meta = dict(plan.to_dict(), expected_epoch=expected)
        if mandate is not None:
            meta["mandate"] = mandate.to_dict()
        records.open_record(client, meta, trigger, who, now, record_id=rid)
        ids.append(rid)
        if plan.action == "escalate" or plan.candidate is None:
            _escalate(client, plan.service, rid, plan.reason or "no usable candidate", who)
            continue
        ctx = _context(plan, rid, expected, mandate=mandate)
        records.set_attempt(client, rid, 0, ctx.candidate, expected, ctx.to_dict())
        chains.append(build_chain(bp, ctx, now))
    if chains:
        group(chains).apply_async()
    return ids


def _escalate(client: Any, service: str, rid: str, reason: str, who: str = "detector") -> None:
    now = time.time()
    records.open_incident(client, service, reason, now, record_id=rid, who=who)
    records.finish(client, rid, "escalated", now, {"reason": reason}, service=service)


def _after_failure(client: Any, bp: Blueprint, ctx: FailoverContext, step: str, error: str,
                   local: bool = True) -> None:
    """A candidate step failed: clean up after the candidate, then the next live candidate, or a human
    (the choice is :mod:`continuity.failover.retry`'s).

    ``local`` is False when called by the watchdog on another node: the stop hook then is not ours to run
    (the epoch already fences whatever the candidate started).
    """
    if retry.undo_promote(step):
        steps.undo_promote(client, bp, ctx, local=local)
    states = {} if step in retry.NOT_THE_CANDIDATES_FAULT else control.read_node_states(client, bp)
    choice = retry.next_candidate(ctx, step, error, states)
    if isinstance(choice, retry.Escalate):
        _escalate(client, ctx.service, ctx.record_id, choice.reason)
        return
    now = time.time()
    expected = epochs.current_epoch(client, ctx.service)
    nxt = ctx.next_attempt(choice.candidate, choice.fallbacks, expected, now)
    records.set_attempt(client, ctx.record_id, nxt.attempt, nxt.candidate, expected, nxt.to_dict())
    records.pulse_for(client).emit(FAILOVER_RETRY, service=ctx.service, epoch=expected,
                                   data={"record": ctx.record_id, "failed": ctx.candidate, "step": step,
                                         "error": error, "next": nxt.candidate, "attempt": nxt.attempt})
    build_chain(bp, nxt, now).apply_async()


# --- watchdog: chains whose worker died mid-step -------------------------------------------------------------------
WATCHDOG_TASK = "continuity.failover.watchdog"
WATCHDOG_INTERVAL = 2.0


def supervise(client: Any, bp: Blueprint, now: float) -> dict[str, list[str]]:
    """Resume or fail over chains that stopped moving (the decision is :mod:`continuity.failover.watchdog`'s).

    Sending a step again is safe: steps are idempotent per (service, epoch) and serialised by a step lock,
    so if the original is alive, the copy waits for it and then does nothing.
    """
    out: dict[str, list[str]] = {"resumed": [], "failed": []}
    states: dict[str, Any] | None = None  # the detector's view, read once and only when a chain is open
    for rid in failover_records.recent_ids(client, now - 3600):
        rec = failover_records.read(client, rid)
        try:
            pending = None if rec is None else pending_step(rec, bp)
        except InvalidContext as exc:
            log.warning("watchdog: failover record %s: %s; left alone", rid, exc)
            continue
        if rec is None or pending is None:
            continue
        busy = rec.step_end(pending.attempt, pending.step) is None and step_markers.busy(
            client, pending.ctx.service, pending.ctx.epoch, pending.step)
        states = control.read_node_states(client, bp, now) if states is None else states
        dead = node_state_name(states.get(pending.ctx.candidate)) == "dead"
        verdict = decide(rec, pending, busy=busy, lease_ttl=bp.policy.lease_ttl,
                         lease_margin=bp.policy.lease_margin, now=now, candidate_dead=dead)
        if verdict.action == "give_up":
            _give_up(client, bp, rid, pending, verdict, now)
            out["failed"].append(rid)
        elif verdict.action == "resend" and _resend(client, bp, rid, pending, verdict, now):
            out["resumed"].append(rid)
    return out


def _give_up(client: Any, bp: Blueprint, rid: str, pending: Pending, verdict: Verdict, now: float) -> None:
    """The step's worker is gone: mark the step failed (so a late copy does nothing) and move on."""
    ctx, step = pending.ctx, pending.step
    step_markers.mark_failed(client, ctx.service, ctx.epoch, step, verdict.reason)
    records.step_finished(client, rid, pending.attempt, step, False, now,
                          {"error": f"{verdict.reason} (its worker is gone)"}, service=ctx.service, epoch=ctx.epoch)
    _after_failure(client, bp, ctx, step, verdict.reason, local=False)


def _resend(client: Any, bp: Blueprint, rid: str, pending: Pending, verdict: Verdict, now: float) -> bool:
    """Send the chain again from the pending step, once per stall window (SET NX: one watchdog wins)."""
    if verdict.resume is None or not step_markers.claim_resend(client, pending.ctx.service, pending.ctx.epoch,
                                                               pending.step, now, STALL_AFTER):
        return False
    build_chain(bp, verdict.resume, now).apply_async()
    records.pulse_for(client).emit(FAILOVER_CHAIN_RESUMED, service=pending.ctx.service, epoch=pending.ctx.epoch,
                                   data={"record": rid, "attempt": pending.attempt, "step": pending.step,
                                         "idle": round(verdict.idle, 3)})
    return True


def reconcile_routes(client: Any, bp: Blueprint, now: float) -> list[str]:
    """Publish a route for every service whose lease holder has none at its epoch (a bootstrapped service).

    Routes normally move only in a chain's repoint step; a service placed by the
    node agent at first start has a primary but no route yet, and clients need one.
    The route is compare-and-set by epoch, so this can never point clients back. A service with a chain
    running is left to it: its lease may name a candidate whose start is still to fail, and a route published
    to it would outlive the failed attempt (clients sent to a node that never served, and every caller naming it
    the primary once the lease is given back).
    """
    route_map = routes.read_many(client, sorted(bp.services))
    in_chain: set[str] | None = None  # read only when some lease lacks its route: rarely, not every 2 s
    published = []
    for service, lease in leases.read_many(client, sorted(bp.services)).items():
        route = route_map.get(service)
        if lease is None or (route is not None and route.epoch >= lease.epoch):
            continue
        if in_chain is None:
            in_chain = failover_records.open_services(client, now - 3600)
        if service in in_chain:
            continue
        if epochs.current_epoch(client, service) != lease.epoch:
            continue  # a stale holder: never route to it
        if steps.publish_route(client, bp, service, lease.node, lease.epoch, now) is not None:
            published.append(service)
    return published


@continuity_task(WATCHDOG_TASK, time_limit=20, acks_late=False, ignore_result=True)
def watchdog(*, client: Any, bp: Blueprint) -> dict[str, list[str]]:
    """Every few seconds on the control queue: resume stalled chains, publish missing routes."""
    now = time.time()
    return {**supervise(client, bp, now), "routes": reconcile_routes(client, bp, now)}


def beat_entries(bp: Blueprint) -> dict[str, dict[str, Any]]:
    """The watchdog's beat entry (collected by beat_schedule.build_schedule)."""
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


def _launch_as(operator: SigningKey | None, plan: FailoverPlan, trigger: dict[str, Any], who: str,
               client: Any) -> str:
    """Launch a manual move with the operator's mandate, its first message signed by the operator key too."""
    if operator is None:
        return launch_failovers([plan], trigger, who=who, client=client, manual=True)[0]
    with task_auth.signing_as(operator):
        return launch_failovers([plan], trigger, who=who, client=client, manual=True, operator=operator)[0]


def switchover(service: str, target: str, who: str, client: Any = None, operator: SigningKey | None = None) -> str:
    """Coordinated: the old primary demotes itself (stop hook, lease released) before the target is promoted.
    Without ``operator`` (an operator key) the steps carry no mandate and every worker refuses them."""
    client = client or _redis()
    bp = _blueprint()
    primary, _, epoch = _current(client, bp, service)
    plan = plan_switchover(bp, service, target, primary, control.read_node_states(client, bp), time.time(), epoch)
    trigger = {"reason": "switchover", "who": who, "requested_at": time.time()}
    return _launch_as(operator, plan, trigger, who, client)


def force_failover(service: str, target: str, who: str, client: Any = None,
                   operator: SigningKey | None = None) -> str:
    """Old primary unreachable: wait out its lease plus the margin, then fence and promote the target.
    Needs ``operator`` as :func:`switchover` does."""
    client = client or _redis()
    bp = _blueprint()
    primary, lease, epoch = _current(client, bp, service)
    plan = plan_forced(bp, service, target, primary, control.read_node_states(client, bp), lease, time.time(),
                       epoch)
    trigger = {"reason": "forced failover", "who": who, "requested_at": time.time()}
    return _launch_as(operator, plan, trigger, who, client)


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
