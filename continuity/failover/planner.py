"""Where failover is decided: which services move, to which node, in which steps, and not before when.

Pure: a function of the blueprint, the detector's view of the fleet and a clock
value passed in. It never reads Redis and never sleeps, so every rule below is
unit-tested with plain data:

* only services whose *current* primary (lease holder, else route, else the
  blueprint's placement) is dead are touched;
* nothing moves while failover is paused (globally or for the service) or while
  the service is cooling down from its last failover (flapping nodes would
  otherwise bounce a role back and forth);
* candidates are the service's other placement nodes in declared order, alive
  only; a node that holds every record of the role's committed position before
  one that does not (``behind``: a node behind never takes the role while one
  that is not can; among those behind, the one lacking least first, and its
  prepare step catches it up before it is promoted — issue 10 item 5); then
  healthy before unhealthy, and a node whose verified data lags more than the
  service's RPO after one that does not (Patroni's ``maximum_lag`` idea); the
  rest become fallbacks tried in turn if a step fails;
* the plan never allows promotion before the old lease has expired plus the
  policy's safety margin: it says "not before T" and the fence step enforces it;
* a service with no usable candidate is escalated (an incident), never dropped;
* a service its (live) primary gave up on after failed local restarts (``failed_services``, from the
  node agent's ``keys.service_failed`` marker) moves like one whose primary died, to another node when
  there is one; its lease was released on purpose, so there is no lease to wait out.

Pure decider: no Redis, no disk, no clock of its own. Its I/O shells are the
sweep (:mod:`continuity.detect.sweep`, which gets it injected by ``workers/control.py``), the
Celery chains in ``workers/failover.py`` and the steps in :mod:`continuity.failover.steps`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from continuity.blueprint import Blueprint
from continuity.errors import UsageError
from continuity.state.routes import Route, primary_of

STEPS: tuple[str, ...] = ("fence", "prepare", "promote", "repoint", "verify", "record")
SWITCHOVER_STEPS: tuple[str, ...] = ("demote",) + STEPS
# where each step runs: on the control queue, on the candidate's own queue, or on the old primary's queue
STEP_TARGET: dict[str, str] = {
    "demote": "old", "fence": "control", "prepare": "candidate", "promote": "candidate",
    "repoint": "control", "verify": "candidate", "record": "control",
}
ALIVE = "alive"

Kind = Literal["failover", "switchover", "forced"]
Action = Literal["failover", "escalate", "skip"]


class LeaseLike(Protocol):
    node: str
    epoch: int
    ttl: float


@dataclass(frozen=True)
class FailoverPlan:
    """One service's move: JSON-safe (it travels in task arguments) via :meth:`to_dict`."""

    service: str
    old_primary: str | None
    candidate: str | None
    fallbacks: tuple[str, ...] = ()
    not_before: float = 0.0
    expected_epoch: int | None = None
    kind: Kind = "failover"
    action: Action = "failover"
    reason: str = ""
    steps: tuple[str, ...] = STEPS
    planned_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fallbacks"] = list(self.fallbacks)
        d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FailoverPlan:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in known}
        data["fallbacks"] = tuple(data.get("fallbacks") or ())
        data["steps"] = tuple(data.get("steps") or STEPS)
        return cls(**data)

    def wait(self, now: float) -> float:
        """Seconds still to wait before the fence may run."""
        return max(0.0, self.not_before - now)


@dataclass(frozen=True)
class Decision:
    """What the planner concluded for one affected service, including why it did nothing."""

    service: str
    action: Action
    reason: str
    plan: FailoverPlan | None = None
    details: dict[str, Any] = field(default_factory=dict)


def node_state_name(value: Any) -> str:
    """The detector stores a JSON object per node; accept it, or a bare state string."""
    if isinstance(value, Mapping):
        return str(value.get("state", "unknown"))
    return str(value) if value is not None else "unknown"


def node_healthy(value: Any, service: str | None = None) -> bool:
    """A node's own health report (from its heartbeat) when the detector passes one; unknown counts as healthy."""
    if isinstance(value, Mapping):
        if value.get("healthy") is False:
            return False
        services = value.get("services")
        if service and isinstance(services, Mapping) and isinstance(services.get(service), Mapping):
            return services[service].get("healthy", True) is not False
    return True


def current_primary(bp: Blueprint, service: str, lease: LeaseLike | None, route: Route | None = None) -> str:
    """Who holds the role now: the fleet's one rule (:func:`continuity.state.routes.primary_of`)."""
    return primary_of(bp, service, lease, route).node


def placement_order(bp: Blueprint, service: str) -> list[str]:
    """Declared preference: the blueprint's primary, then its standbys in order."""
    sv = bp.services[service]
    return [sv.primary, *sv.standbys]


def rank_candidates(bp: Blueprint, service: str, exclude: Iterable[str], node_states: Mapping[str, Any],
                    now: float, freshness: Mapping[str, float] | None = None,
                    behind: Mapping[str, int] | None = None) -> tuple[list[str], dict[str, str]]:
    """Alive candidates best first, and why each other placement node was left out.

    ``behind``: node -> committed records it lacks (:func:`continuity.failover.survivors.shortfalls`).
    """
    excluded = set(exclude)
    rpo = bp.services[service].rpo
    behind = behind or {}
    ranked: list[tuple[tuple[int, int, int, int, int], str]] = []
    rejected: dict[str, str] = {}
    for index, node in enumerate(placement_order(bp, service)):
        if node in excluded:
            continue
        state = node_state_name(node_states.get(node))
        if state != ALIVE:
            rejected[node] = f"node is {state}"
            continue
        unhealthy = 0 if node_healthy(node_states.get(node), service) else 1
        lagging = 0
        if freshness and node in freshness and freshness[node] is not None:
            lagging = 1 if now - float(freshness[node]) > rpo else 0
        short = max(0, int(behind.get(node, 0)))
        ranked.append(((1 if short else 0, unhealthy, lagging, short, index), node))
    ranked.sort()
    return [n for _, n in ranked], rejected


def _behind_detail(short: Mapping[str, int] | None) -> dict[str, Any]:
    lacking = {n: v for n, v in (short or {}).items() if v}
    return {"behind": lacking} if lacking else {}


def _not_before(bp: Blueprint, lease: LeaseLike | None, candidate: str, now: float) -> float:
    margin = bp.policy.lease_margin
    if lease is None:
        # it expired at some unknown moment before now: the margin still has to pass from here
        return now + margin
    if lease.node == candidate:
        return now
    return now + max(0.0, float(lease.ttl)) + margin


def decide(bp: Blueprint, dead_nodes: set[str], node_states: Mapping[str, Any],
           leases: Mapping[str, LeaseLike | None], now: float, paused: set[str], global_pause: bool,
           cooldowns: Mapping[str, float], *, routes: Mapping[str, Route] | None = None,
           freshness: Mapping[str, Mapping[str, float]] | None = None,
           failed_services: Mapping[str, str] | None = None,
           behind: Mapping[str, Mapping[str, int]] | None = None) -> list[Decision]:
    """Every affected service's decision, in dependency order (a dependency is restored first).

    ``cooldowns`` maps a service to the unix time its cool-down ends; ``routes``
    (service → {node, epoch}) and ``freshness`` (service → node → time of its last
    verified data) are optional refinements; ``failed_services`` (service → reason)
    names services whose live primary gave them up; ``behind`` (service → node →
    committed records it lacks) puts nodes that hold everything acknowledged first.
    """
    out: list[Decision] = []
    routes = routes or {}
    freshness = freshness or {}
    failed_services = failed_services or {}
    behind = behind or {}
    for service in bp.topo_order():
        lease = leases.get(service)
        route = routes.get(service)
        holder = primary_of(bp, service, lease, route)
        primary = holder.node
        failed = primary not in dead_nodes and service in failed_services
        if primary not in dead_nodes and not failed:
            continue
        if failed and lease is not None:
            # the node that gave up released the lease: whoever holds one now took the role since
            out.append(Decision(service, "skip", f"{lease.node} holds the role again (epoch {lease.epoch})"))
            continue
        epoch = holder.epoch
        if global_pause:
            out.append(Decision(service, "skip", "failover is paused fleet-wide (maintenance)"))
            continue
        if service in paused:
            out.append(Decision(service, "skip", "failover is paused for this service (maintenance)"))
            continue
        until = cooldowns.get(service)
        if until is not None and until > now:
            out.append(Decision(service, "skip", f"cooling down for {until - now:.1f}s after the last failover",
                                details={"until": until}))
            continue
        ranked, rejected = rank_candidates(bp, service, set(dead_nodes) | {primary}, node_states, now,
                                           freshness.get(service), behind.get(service))
        details = {"rejected": rejected, **_behind_detail(behind.get(service))}
        if failed and not ranked and node_state_name(node_states.get(primary)) == ALIVE:
            ranked = [primary]  # nowhere else to go: a new epoch on the same node beats no primary at all
        if not ranked:
            why = "; ".join(f"{n}: {r}" for n, r in rejected.items()) or "no standby is declared"
            plan = FailoverPlan(service=service, old_primary=primary, candidate=None, action="escalate",
                                reason=f"no usable candidate ({why})", expected_epoch=epoch, planned_at=now)
            out.append(Decision(service, "escalate", plan.reason, plan, details=details))
            continue
        candidate, fallbacks = ranked[0], tuple(ranked[1:])
        if failed:
            # released on purpose (stop hook first, then the lease, in one step with the marker): no wait
            plan = FailoverPlan(service=service, old_primary=primary, candidate=candidate, fallbacks=fallbacks,
                                not_before=now, expected_epoch=epoch,
                                reason=f"service failed on {primary}: {failed_services[service]}", planned_at=now)
            out.append(Decision(service, "failover", plan.reason, plan, details=details))
            continue
        plan = FailoverPlan(service=service, old_primary=primary, candidate=candidate, fallbacks=fallbacks,
                            not_before=_not_before(bp, lease, candidate, now), expected_epoch=epoch,
                            reason=f"primary {primary} is dead", planned_at=now)
        out.append(Decision(service, "failover", plan.reason, plan, details=details))
    return out


def plan_failovers(blueprint: Blueprint, dead_nodes: set[str], node_states: dict, leases: dict, now: float,
                   paused: set[str], global_pause: bool, cooldowns: dict[str, float], *,
                   routes: Mapping[str, Route] | None = None,
                   freshness: Mapping[str, Mapping[str, float]] | None = None,
                   failed_services: Mapping[str, str] | None = None,
                   behind: Mapping[str, Mapping[str, int]] | None = None) -> list[FailoverPlan]:
    """The plans to launch (failovers and escalations); skipped services are left out (see :func:`decide`)."""
    return [d.plan for d in decide(blueprint, dead_nodes, node_states, leases, now, paused, global_pause,
                                   cooldowns, routes=routes, freshness=freshness, failed_services=failed_services,
                                   behind=behind)
            if d.plan is not None]


# --- manual control ---------------------------------------------------------------------------------------------
def _check_target(bp: Blueprint, service: str, target: str, primary: str, node_states: Mapping[str, Any]) -> None:
    """Refuse moves that cannot be right, before anything is touched (exit 2 at the CLI)."""
    if service not in bp.services:
        raise UsageError(f"unknown service {service!r}; the blueprint declares: {', '.join(sorted(bp.services))}")
    if target not in bp.nodes:
        raise UsageError(f"unknown node {target!r}; the blueprint declares: {', '.join(sorted(bp.nodes))}")
    if target not in placement_order(bp, service):
        raise UsageError(f"{target!r} is not a placement node of {service!r} "
                         f"(primary/standbys: {', '.join(placement_order(bp, service))})")
    if target == primary:
        raise UsageError(f"{target!r} is already the primary of {service!r}")
    state = node_state_name(node_states.get(target))
    if state != ALIVE:
        raise UsageError(f"target {target!r} is {state}: promote only onto a live node")


def plan_switchover(bp: Blueprint, service: str, target: str, primary: str, node_states: Mapping[str, Any],
                    now: float, epoch: int | None = None) -> FailoverPlan:
    """Coordinated move of a healthy primary: demote it first (lease released), then promote — no overlap."""
    _check_target(bp, service, target, primary, node_states)
    old_state = node_state_name(node_states.get(primary))
    if old_state != ALIVE:
        raise UsageError(f"current primary {primary!r} is {old_state}: it cannot demote itself; "
                         f"use `continuity failover failover {service} --to {target} --force`")
    return FailoverPlan(service=service, old_primary=primary, candidate=target, not_before=now,
                        expected_epoch=epoch, kind="switchover", reason="operator switchover",
                        steps=SWITCHOVER_STEPS, planned_at=now)


def plan_forced(bp: Blueprint, service: str, target: str, primary: str, node_states: Mapping[str, Any],
                lease: LeaseLike | None, now: float, epoch: int | None = None) -> FailoverPlan:
    """Operator-forced failover with the old primary unreachable: still waits out its lease plus the margin."""
    _check_target(bp, service, target, primary, node_states)
    return FailoverPlan(service=service, old_primary=primary, candidate=target,
                        not_before=_not_before(bp, lease, target, now), expected_epoch=epoch, kind="forced",
                        reason="operator forced failover", planned_at=now)
