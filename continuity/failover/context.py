"""The failover chain context: what one attempt of one service's failover carries from step to step.

A :class:`FailoverContext` travels as JSON in every chain task's arguments and is stored in the failover
record's ``c:<attempt>`` field, where the watchdog reads it back to resume a stalled chain. Both are places
anyone with access to Redis can write, and the context names nodes that become queues, hook targets and
directories (``service_dir(candidate, service)``). So :meth:`FailoverContext.from_dict` is the one way in,
and it checks every field: types, step names, and node and service names against the blueprint (or, when no
blueprint is at hand, against the blueprint's id syntax, which alone refuses anything path-like).

The wire format is the dict the chain has always carried (:meth:`FailoverContext.to_dict`):
``record_id, service, kind, candidate, fallbacks, old_primary, expected_epoch, epoch, attempt, not_before,
steps`` and, only when set, ``prepare`` (a per-chain override of ``$CONTINUITY_FAILOVER_PREPARE``). Keys it
does not know are ignored, so a newer sender does not break an older worker.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from continuity.errors import ContinuityError
from continuity.failover.mandate import Mandate, NoMandate
from continuity.failover.planner import STEPS, SWITCHOVER_STEPS

KINDS = ("failover", "switchover", "forced")
# the blueprint's id syntax (continuity.blueprint.ID_RE), matched in full: no '/', '.', '..' or newline
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
RECORD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
PREPARE_MODES = ("auto", "backup")


class InvalidContext(ContinuityError):
    """A chain context that is malformed or names a service, node or step the fleet does not have."""


class Fleet(Protocol):
    """What validation needs of a blueprint: its node and service names."""

    @property
    def nodes(self) -> Mapping[str, Any]: ...

    @property
    def services(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class FailoverContext:
    """One attempt of one service's failover chain (immutable: a next attempt is a new value)."""

    record_id: str
    service: str
    candidate: str
    epoch: int
    expected_epoch: int | None = None
    old_primary: str | None = None
    fallbacks: tuple[str, ...] = ()
    attempt: int = 0
    not_before: float | None = None
    steps: tuple[str, ...] = STEPS
    kind: str = "failover"
    prepare: str | None = None
    mandate: Mandate | None = None  # the operator's signed go-ahead of a switchover / forced failover

    # --- the wire ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe dict of the chain messages and the record's ``c:<attempt>`` field."""
        out: dict[str, Any] = {
            "record_id": self.record_id, "service": self.service, "kind": self.kind, "candidate": self.candidate,
            "fallbacks": list(self.fallbacks), "old_primary": self.old_primary,
            "expected_epoch": self.expected_epoch, "epoch": self.epoch, "attempt": self.attempt,
            "not_before": self.not_before, "steps": list(self.steps),
        }
        if self.prepare is not None:
            out["prepare"] = self.prepare
        if self.mandate is not None:
            out["mandate"] = self.mandate.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, fleet: Fleet | None = None) -> FailoverContext:
        """Parse and check a context read from a message or a record; :class:`InvalidContext` says what is wrong.

        With ``fleet`` (the blueprint) the service, candidate, old primary and fallbacks must be declared in
        it; without, they must at least have the blueprint's id syntax. Always pass the blueprint where the
        context came from outside the process (a task argument, Redis).
        """
        if isinstance(data, FailoverContext):
            data = data.to_dict()
        if not isinstance(data, Mapping):
            raise InvalidContext(f"failover context must be a JSON object, got {type(data).__name__}")
        service = _name(data, "service", fleet.services if fleet is not None else None, "service")
        nodes = fleet.nodes if fleet is not None else None
        candidate = _name(data, "candidate", nodes, "node")
        old_primary = None if data.get("old_primary") is None else _name(data, "old_primary", nodes, "node")
        fallbacks = data.get("fallbacks") or ()
        if not isinstance(fallbacks, list | tuple):
            raise InvalidContext(f"failover context: fallbacks must be a list of nodes, got {fallbacks!r}")
        fb = tuple(_check_name(f"fallbacks[{i}]", n, nodes, "node") for i, n in enumerate(fallbacks))
        steps = data.get("steps")
        if steps is None:
            steps = STEPS
        if not isinstance(steps, list | tuple) or not all(isinstance(s, str) for s in steps):
            raise InvalidContext(f"failover context: steps must be a list of step names, got {steps!r}")
        unknown = [s for s in steps if s not in SWITCHOVER_STEPS]
        if unknown:
            raise InvalidContext(f"failover context: unknown step(s) {', '.join(map(repr, unknown))}"
                                 f" (steps are {', '.join(SWITCHOVER_STEPS)})")
        record_id = data.get("record_id")
        if not isinstance(record_id, str) or not RECORD_ID_RE.fullmatch(record_id):
            raise InvalidContext(f"failover context: invalid record_id {record_id!r}")
        kind = data.get("kind") or "failover"
        if kind not in KINDS:
            raise InvalidContext(f"failover context: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        prepare = data.get("prepare") or None
        if prepare is not None and (not isinstance(prepare, str) or prepare.strip().lower() not in PREPARE_MODES):
            raise InvalidContext(f"failover context: prepare must be one of {', '.join(PREPARE_MODES)},"
                                 f" got {prepare!r}")
        attempt = _int(data, "attempt", default=0)
        if attempt is None or attempt < 0:
            raise InvalidContext(f"failover context: attempt must be a non-negative integer, got {attempt!r}")
        epoch = _int(data, "epoch")
        if epoch is None:
            raise InvalidContext("failover context: epoch is missing")
        not_before = data.get("not_before")
        if not_before is not None:
            if isinstance(not_before, bool) or not isinstance(not_before, int | float | str):
                raise InvalidContext(f"failover context: not_before must be a number, got {not_before!r}")
            try:
                not_before = float(not_before)
            except ValueError:
                raise InvalidContext(f"failover context: not_before must be a number, got {not_before!r}") from None
        mandate = None
        if data.get("mandate") is not None:
            try:
                mandate = Mandate.from_dict(data["mandate"])
            except NoMandate as exc:
                raise InvalidContext(f"failover context: {exc}") from None
        return cls(record_id=record_id, service=service, candidate=candidate, epoch=epoch,
                   expected_epoch=_int(data, "expected_epoch"), old_primary=old_primary, fallbacks=fb,
                   attempt=attempt, not_before=not_before, steps=tuple(steps), kind=kind, prepare=prepare,
                   mandate=mandate)

    # --- derived values ------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> FailoverContext:
        return dataclasses.replace(self, **changes)

    def from_step(self, index: int) -> FailoverContext:
        """The same attempt, from its ``index``-th step on (what the watchdog sends again)."""
        return self.replace(steps=self.steps[index:])

    def next_attempt(self, candidate: str, fallbacks: tuple[str, ...], expected_epoch: int,
                     now: float) -> FailoverContext:
        """The next attempt on ``candidate``: a new epoch above ``expected_epoch``, no wait, no demote step
        (the old primary either demoted already or is not ours to ask again)."""
        return self.replace(candidate=candidate, fallbacks=tuple(fallbacks), attempt=self.attempt + 1,
                            expected_epoch=expected_epoch, epoch=expected_epoch + 1, not_before=now,
                            steps=tuple(s for s in self.steps if s != "demote"))


def check_against_record(ctx: FailoverContext, meta: Mapping[str, Any] | None,
                         attempt: Mapping[str, Any] | None) -> None:
    """A step's context must be the one its failover record opened: same service, kind and old primary as the
    record's ``meta``, and the candidate and epochs that the record's ``a:<attempt>`` names. A message made up
    for a record that does not exist, or naming another candidate than the record chose, stops here
    (:class:`InvalidContext`). The record alone proves nothing (it is in Redis too); it is a second witness
    that a signed message and the state that launched it agree."""
    if meta is None:
        raise InvalidContext(f"failover context: record {ctx.record_id!r} does not exist")
    for field, mine in (("service", ctx.service), ("kind", ctx.kind), ("old_primary", ctx.old_primary)):
        theirs = meta.get(field) if field != "kind" else (meta.get("kind") or "failover")
        if theirs != mine:
            raise InvalidContext(f"failover context: {field} {mine!r} is not the record's ({theirs!r})")
    if attempt is None:
        raise InvalidContext(f"failover context: record {ctx.record_id!r} has no attempt {ctx.attempt}")
    if attempt.get("candidate") != ctx.candidate:
        raise InvalidContext(f"failover context: candidate {ctx.candidate!r} is not the one attempt {ctx.attempt} "
                             f"of the record chose ({attempt.get('candidate')!r})")
    expected = attempt.get("expected_epoch")
    if expected is not None and (ctx.expected_epoch != expected or ctx.epoch != int(expected) + 1):
        raise InvalidContext(f"failover context: epoch {ctx.epoch} (expected {ctx.expected_epoch}) is not the "
                             f"record's attempt {ctx.attempt} (expected epoch {expected})")


def _check_name(field: str, value: Any, declared: Mapping[str, Any] | None, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidContext(f"failover context: {field} {value!r} is not a valid {what} name")
    if declared is not None and value not in declared:
        raise InvalidContext(f"failover context: {field} {value!r} is not a {what} of the blueprint"
                             f" (declared: {', '.join(sorted(declared))})")
    return value


def _name(data: Mapping[str, Any], field: str, declared: Mapping[str, Any] | None, what: str) -> str:
    if data.get(field) is None:
        raise InvalidContext(f"failover context: {field} is missing")
    return _check_name(field, data[field], declared, what)


def _int(data: Mapping[str, Any], field: str, default: int | None = None) -> int | None:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidContext(f"failover context: {field} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        return int(value)
    raise InvalidContext(f"failover context: {field} must be an integer, got {value!r}")
