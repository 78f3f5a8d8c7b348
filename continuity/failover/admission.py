"""Whether a failover step may run: its context agrees with its open record, and a manual one has a mandate.

The task envelope (:mod:`continuity.task_auth`) says *who* sent a step; this says *what* they may ask for.
Two checks, both before the step touches anything:

* the context is the one the failover record opened (:func:`continuity.failover.context.check_against_record`):
  a context made up for a record that does not exist, or naming another candidate, old primary, kind or epoch
  than the record's attempt, is refused;
* a switchover or forced failover carries an operator's mandate for this very record
  (:mod:`continuity.failover.mandate`), verified against the operator keys trusted from files.
"""

from __future__ import annotations

from typing import Any

from continuity.failover.context import FailoverContext, check_against_record
from continuity.failover.mandate import check, trusted_operators
from continuity.state import failover_records


def admit(client: Any, ctx: FailoverContext, now: float) -> None:
    """Raise :class:`~continuity.failover.context.InvalidContext` or :class:`~continuity.failover.mandate.NoMandate`
    when the step of ``ctx`` must not run."""
    rec = failover_records.read(client, ctx.record_id)
    meta = rec.meta if rec is not None else None
    check_against_record(ctx, meta, rec.attempt(ctx.attempt) if rec is not None else None)
    assert meta is not None
    check(ctx.mandate, record_id=ctx.record_id, service=ctx.service, kind=ctx.kind, old_primary=ctx.old_primary,
          target=meta.get("candidate"), operators=trusted_operators() if ctx.kind != "failover" else {}, now=now)
