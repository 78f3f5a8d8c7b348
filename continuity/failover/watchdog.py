"""The chain watchdog's decision: which step of an open failover record is pending, and what to do about it.

Pure: a function of the record as read (:class:`~continuity.state.failover_records.RawRecord`), two flags the
shell reads from the step's keys (a copy holds the step lock, or the step's failure was already acted on), the
lease timing of the policy and a clock value. ``workers/failover.py`` (``supervise``) does the I/O: it scans
the recent records, reads the flags, and carries out the :class:`Verdict`.

Why a watchdog at all: the broker hands a dead worker's unacked task out again only after its visibility
timeout (minutes), far beyond any recovery objective. Steps are idempotent per (service, epoch) and serialised
by a step lock, so sending the pending step again is always safe; a step that makes no progress for long means
its node is gone, and is treated as failed (next candidate, or escalation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from continuity.failover.context import FailoverContext, Fleet
from continuity.state.failover_records import RawRecord

STALL_AFTER = 5.0  # no progress and no live step lock this long: send the pending step again
GIVE_UP_AFTER = 45.0  # still nothing: the step's node is gone; treat the step as failed (next candidate)

Action = Literal["wait", "resend", "give_up"]


@dataclass(frozen=True)
class Pending:
    """The first step of the newest attempt that has not succeeded."""

    attempt: int
    ctx: FailoverContext
    index: int

    @property
    def step(self) -> str:
        return self.ctx.steps[self.index]


@dataclass(frozen=True)
class Verdict:
    """What to do with a pending step: leave it (``wait``), send the chain again from it, or fail it."""

    action: Action
    idle: float = 0.0
    resume: FailoverContext | None = None  # for ``resend``: the chain from the pending step on
    why: str = ""  # for ``give_up``: said instead of the idle time when there is a better reason

    @property
    def reason(self) -> str:
        return self.why or f"no progress for {self.idle:.0f}s"


def pending_step(rec: RawRecord, fleet: Fleet | None = None) -> Pending | None:
    """The pending step of an open record's newest attempt; None when closed, never started or all done.

    The stored context is checked (:meth:`FailoverContext.from_dict`, against ``fleet`` when given): a
    crafted ``c:<attempt>`` field raises :class:`~continuity.failover.context.InvalidContext`.
    """
    if not rec.is_open:
        return None
    latest = rec.latest_attempt()
    if latest is None:
        return None
    attempt, raw = latest
    ctx = FailoverContext.from_dict(raw, fleet)
    index = next((i for i, st in enumerate(ctx.steps) if not rec.step_ok(attempt, st)), None)
    return None if index is None else Pending(attempt, ctx, index)


def decide(rec: RawRecord, pending: Pending, *, busy: bool, lease_ttl: float, lease_margin: float,
           now: float, candidate_dead: bool = False) -> Verdict:
    """Resend, give up or wait.

    ``busy``: a copy of the step holds its lock (running right now) or its failure was already handled.
    A step that ended (failed: a successful one is not pending) was handled by whoever ran it. Idle time
    counts from the latest sign of progress of the attempt (record start, the chain's ``not_before``, any
    step's start or end); a fence that started waits for the old lease (twice its TTL plus the margin), so
    that wait is not idleness.

    ``candidate_dead``: the detector declared the chain's candidate dead. Its steps (and, by default, the control
    steps queued with them) will never run there, so waiting out :data:`GIVE_UP_AFTER` would only lengthen the
    outage: the step is failed at once and the chain moves to the next candidate within the detection time.
    """
    attempt, ctx, step = pending.attempt, pending.ctx, pending.step
    if busy or rec.step_end(attempt, step) is not None:
        return Verdict("wait")
    not_before = float(ctx.not_before or 0)
    last = max(float(rec.meta["started"]), not_before, rec.last_progress(attempt))
    if step == "fence" and rec.step_start(attempt, "fence") is not None:
        last = max(last, not_before + 2 * lease_ttl + lease_margin)
    idle = now - last
    if candidate_dead and step != "demote":
        return Verdict("give_up", idle, why=f"candidate {ctx.candidate} is dead")
    if idle >= GIVE_UP_AFTER:
        return Verdict("give_up", idle)
    if idle >= STALL_AFTER:
        return Verdict("resend", idle, ctx.from_step(pending.index))
    return Verdict("wait", idle)
