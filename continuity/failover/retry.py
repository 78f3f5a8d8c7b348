"""After a failed step: undo what the candidate started, then the next live candidate, or a human.

Pure: a function of the chain context, the step that failed and the detector's node states. The shell
(``workers/failover.py``, ``_after_failure``) reads the states, runs the undo, and either escalates or
opens the next attempt (:meth:`~continuity.failover.context.FailoverContext.next_attempt`, at the epoch it
reads then) and launches its chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from continuity.failover.context import FailoverContext
from continuity.failover.planner import ALIVE, node_state_name

# steps whose failure is not the candidate's fault: retrying on another node would not help
NOT_THE_CANDIDATES_FAULT = ("demote", "fence", "repoint", "record")
# steps after which the candidate may be running the service: stop it (the new epoch fences it anyway)
UNDO_AFTER = ("promote", "verify")


@dataclass(frozen=True)
class Escalate:
    reason: str


@dataclass(frozen=True)
class Retry:
    candidate: str
    fallbacks: tuple[str, ...]


def undo_promote(step: str) -> bool:
    """Whether a failed attempt's promotion is undone (its lease given back): after promote/verify. The stop hook
    is run only on the candidate itself (:func:`continuity.failover.steps.undo_promote`)."""
    return step in UNDO_AFTER


def next_candidate(ctx: FailoverContext, step: str, error: str,
                   node_states: Mapping[str, Any]) -> Escalate | Retry:
    """The first fallback the detector sees alive (the rest stay fallbacks, in order), or why a human must act."""
    if step in NOT_THE_CANDIDATES_FAULT:
        return Escalate(f"{step} failed: {error}")
    alive = tuple(n for n in ctx.fallbacks if node_state_name(node_states.get(n)) == ALIVE)
    if not alive:
        return Escalate(f"{step} failed on {ctx.candidate} ({error}) and no other candidate is alive")
    return Retry(alive[0], alive[1:])
