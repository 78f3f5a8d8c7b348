"""The continuity mode: normal, degraded or critical — derived, never set by hand.

Operators and schedulers need one word for "how bad is it": beat sheds the
lowest tiers' routine jobs while degraded, drills refuse to start, and
``continuity status`` leads with it. It follows purely from which services are
healthy where their lease says they run:

* critical: a service of the minimal continuity set (tier 0 and what it needs)
  is unhealthy or has no primary;
* degraded: any other service is down;
* normal: everything declared is up.

A satellite's service inside its planned blackout is *dormant*, not down: a
daily blackout must not put the fleet into degraded mode every day.

Pure decider: no Redis, no disk, no clock of its own. Its I/O shell is
:mod:`continuity.detect.sweep`, which stores the result through :mod:`continuity.state.mode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity.blueprint import Blueprint
from continuity.detect.detector import ALIVE, EXPECTED_OFFLINE, SUSPECT, NodeState

NORMAL = "normal"
DEGRADED = "degraded"
CRITICAL = "critical"
SHED_TIERS = {NORMAL: [], DEGRADED: [3, 2], CRITICAL: [3, 2, 1]}


@dataclass(frozen=True)
class ServiceHealth:
    service: str
    node: str | None
    healthy: bool
    reason: str
    dormant: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "healthy": self.healthy, "reason": self.reason, "dormant": self.dormant}


@dataclass
class Mode:
    mode: str
    since: float
    unhealthy: list[str] = field(default_factory=list)
    dormant: list[str] = field(default_factory=list)
    shed_tiers: list[int] = field(default_factory=list)
    shed_services: list[str] = field(default_factory=list)
    services: dict[str, ServiceHealth] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "since": self.since, "unhealthy": self.unhealthy, "dormant": self.dormant,
                "shed_tiers": self.shed_tiers, "shed_services": self.shed_services,
                "services": {s: h.as_dict() for s, h in self.services.items()}}


def service_health(bp: Blueprint, service: str, holder: str | None,
                   states: Mapping[str, NodeState]) -> ServiceHealth:
    """Is ``service`` up on ``holder`` (its lease holder), judging by the detector and the holder's own probe?"""
    if holder is None:
        return ServiceHealth(service, None, False, "no primary holds the lease")
    state = states.get(holder)
    if state is None:
        return ServiceHealth(service, holder, False, f"holder {holder!r} is not a known node")
    if state.state == EXPECTED_OFFLINE:
        return ServiceHealth(service, holder, False, f"{holder} is in a planned blackout", dormant=True)
    if state.state not in (ALIVE, SUSPECT):
        return ServiceHealth(service, holder, False, f"{holder} is {state.state}")
    report = state.services.get(service)
    if not isinstance(report, Mapping):
        return ServiceHealth(service, holder, False, f"{holder} does not report {service}")
    if report.get("healthy") is not True:
        return ServiceHealth(service, holder, False, str(report.get("detail") or "probe failed"))
    return ServiceHealth(service, holder, True, "ok")


def compute(bp: Blueprint, holders: Mapping[str, str | None], states: Mapping[str, NodeState], now: float,
            previous: Mapping[str, Any] | None = None) -> Mode:
    """The mode for this instant; ``since`` carries over from ``previous`` while the mode is unchanged."""
    health = {s: service_health(bp, s, holders.get(s), states) for s in sorted(bp.services)}
    unhealthy = [s for s, h in health.items() if not h.healthy and not h.dormant]
    dormant = [s for s, h in health.items() if h.dormant]
    core = set(bp.minimal_continuity_set())
    if any(s in core for s in unhealthy):
        mode = CRITICAL
    elif unhealthy:
        mode = DEGRADED
    else:
        mode = NORMAL
    since = now
    if previous and previous.get("mode") == mode and isinstance(previous.get("since"), int | float):
        since = float(previous["since"])
    tiers = SHED_TIERS[mode]
    shed = [s for group in bp.degradation_order() for s in group if bp.services[s].tier in tiers]
    return Mode(mode=mode, since=since, unhealthy=unhealthy, dormant=dormant, shed_tiers=list(tiers),
                shed_services=shed, services=health)
