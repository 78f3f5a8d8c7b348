"""Resolve a scenario's target to concrete nodes and services, inside its blast radius.

Targets are declared by role ("the primary of ledger"), not by host, because
after the last failover the primary may be another node: resolution takes the
live placement (routes) when the runner has it and the blueprint's otherwise.
The blast-radius cap is checked on the resolved set, so a selection that would
grow with the fleet (``percent(50)`` of a tier) cannot silently hit more than
the operator allowed. Pure: no Redis, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity.blueprint import Blueprint
from continuity.drills.scenarios import Target, parse_selection


@dataclass(frozen=True)
class TargetPlan:
    kind: str
    nodes: tuple[str, ...]
    services: tuple[str, ...]
    placements: Mapping[str, str] = field(default_factory=dict)
    repository: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "nodes": list(self.nodes), "services": list(self.services),
                "placements": dict(self.placements), "repository": self.repository}


def select(items: list[str], selection: str) -> list[str]:
    """Apply all / count(n) / percent(n) to a sorted candidate list (deterministic: a plan can be reviewed)."""
    mode, n = parse_selection(selection)
    if mode == "all" or not items:
        return list(items)
    if mode == "count":
        return items[:n]
    return items[:max(1, math.ceil(len(items) * n / 100))]


def _primary(bp: Blueprint, service: str, primaries: Mapping[str, str]) -> str:
    return primaries.get(service) or bp.services[service].primary


def _standby(bp: Blueprint, service: str, primaries: Mapping[str, str]) -> str | None:
    current = _primary(bp, service, primaries)
    view = bp.services[service]
    for node in (view.primary, *view.standbys):
        if node != current:
            return node
    return None


def resolve(target: Target, bp: Blueprint, primaries: Mapping[str, str] | None = None) -> TargetPlan:
    """Concrete nodes and services for ``target``; ValueError when it matches nothing or exceeds its radius."""
    prim = dict(primaries or {})
    nodes: list[str] = []
    services: list[str] = []
    if target.kind == "node":
        if target.nodes:
            candidates = sorted(target.nodes)
        elif target.service:
            node = (_primary(bp, target.service, prim) if target.role == "primary"
                    else _standby(bp, target.service, prim))
            if node is None:
                raise ValueError(f"service {target.service!r} has no {target.role} node")
            candidates = [node]
        else:
            candidates = sorted(bp.nodes)
        if target.node_kind:
            candidates = [n for n in candidates if bp.nodes[n].kind == target.node_kind]
        nodes = select(candidates, target.selection)
        services = sorted(s for s in bp.services if _primary(bp, s, prim) in nodes)
    elif target.kind in ("service", "tier"):
        if target.kind == "tier":
            candidates = bp.tier_services([target.tier or 0])
        else:
            candidates = sorted(set(target.services or []) | ({target.service} if target.service else set()))
        services = select(candidates, target.selection)
        nodes = sorted({_primary(bp, s, prim) for s in services})
    else:  # broker / repository: the fault is not on a node; services are the ones the drill watches
        services = sorted(set(target.services or []) | ({target.service} if target.service else set()))
        nodes = list(target.nodes or [])
    placements = {s: _primary(bp, s, prim) for s in services}
    plan = TargetPlan(kind=target.kind, nodes=tuple(nodes), services=tuple(services), placements=placements,
                      repository=target.repository)
    check_blast_radius(plan, target, bp)
    return plan


def resolve_static(target: Target, bp: Blueprint) -> TargetPlan:
    """Resolution against the blueprint's declared placement (used to validate the scenarios file)."""
    return resolve(target, bp, {})


def check_blast_radius(plan: TargetPlan, target: Target, bp: Blueprint) -> None:
    br = target.blast_radius
    if len(plan.nodes) > br.max_nodes:
        raise ValueError(f"target selects {len(plan.nodes)} nodes ({', '.join(plan.nodes)}), "
                         f"over its blast radius max_nodes={br.max_nodes}")
    if len(plan.services) > br.max_services:
        raise ValueError(f"target affects {len(plan.services)} services ({', '.join(plan.services)}), "
                         f"over its blast radius max_services={br.max_services}")
    tier0 = [s for s in plan.services if bp.services[s].tier == 0]
    if len(tier0) > br.max_tier0_services:
        raise ValueError(f"target affects {len(tier0)} tier-0 services ({', '.join(tier0)}), "
                         f"over its blast radius max_tier0_services={br.max_tier0_services}")
