"""Drill scenarios: the schema of ``ops/drills/continuity_scenarios.yaml`` and its loader.

A scenario is an experiment in the Chaos Toolkit sense (steady state, method,
rollbacks) plus what those tools leave out: a target resolved against the
blueprint with a blast-radius cap, expectations that default to the
blueprint's RTO/RPO, and the calendar a game day may run in. A typo here would
inject the wrong fault into a real fleet, so the file is validated against the
blueprint at load time: an unknown fault, a bad duration or a target that
matches nothing is a ConfigError naming file, line and key path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from continuity.blueprint import WEEKDAYS, Blueprint, ContactWindow
from continuity.config import Argv, Document, Duration, Strict, load_document, validate
from continuity.errors import UsageError

FAULT_TYPES = (
    "node-kill",          # kill -9 of the node's worker process group and the services it runs
    "node-loss",          # node-kill and the node's data root deleted in the same instant (a replaced machine)
    "service-crash",      # kill -9 of one service process on its current primary
    "node-stop",          # SIGSTOP of the node's worker: heartbeats stop, the process lingers
    "link-partition",     # the node's Redis link proxy drops every connection
    "link-latency",       # the node's Redis link proxy delays every chunk
    "file-corruption",    # bytes of a data file on the primary flipped in place
    "backup-corruption",  # bytes of a backup repository file flipped in place
    "redis-restart",      # the broker shut down (AOF fsync) and started again
    "satellite-blackout",  # a satellite goes silent (worker stopped) as in a loss of contact
)
FaultType = Literal[
    "node-kill", "node-loss", "service-crash", "node-stop", "link-partition", "link-latency",
    "file-corruption", "backup-corruption", "redis-restart", "satellite-blackout",
]
PROBE_KINDS = ("http-health", "route", "mode", "ledger-count", "ledger-integrity", "command",
               "node-alive", "no-incident", "redis")
ProbeKind = Literal["http-health", "route", "mode", "ledger-count", "ledger-integrity", "command",
                    "node-alive", "no-incident", "redis", "replication-lag"]
SELECTION_RE = re.compile(r"^(all|count\((\d+)\)|percent\((\d+)\))$")


def parse_selection(text: str) -> tuple[str, int]:
    """``all`` | ``count(n)`` | ``percent(n)`` (AWS FIS's selection modes) as (mode, n)."""
    m = SELECTION_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"not a selection: {text!r} (use all, count(N) or percent(N))")
    if m.group(2) is not None:
        n = int(m.group(2))
        if n < 1:
            raise ValueError("count(N) needs N >= 1")
        return "count", n
    if m.group(3) is not None:
        n = int(m.group(3))
        if not 1 <= n <= 100:
            raise ValueError("percent(N) needs 1 <= N <= 100")
        return "percent", n
    return "all", 0


class BlastRadius(Strict):
    """Upper bounds on what one drill may touch; exceeding them refuses the drill."""

    max_nodes: int = Field(default=1, ge=0)
    max_services: int = Field(default=4, ge=1)
    max_tier0_services: int = Field(default=2, ge=0)


class Target(Strict):
    kind: Literal["node", "service", "tier", "broker", "repository"]
    nodes: list[str] | None = None
    node_kind: Literal["core", "satellite", "edge"] | None = None
    service: str | None = None
    services: list[str] | None = None
    role: Literal["primary", "standby"] = "primary"
    tier: int | None = Field(default=None, ge=0, le=3)
    repository: str | None = None
    selection: str = "all"
    blast_radius: BlastRadius = Field(default_factory=BlastRadius)

    @field_validator("selection")
    @classmethod
    def _selection(cls, v: str) -> str:
        parse_selection(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> Target:
        if self.kind == "tier" and self.tier is None:
            raise ValueError("a tier target needs `tier`")
        if self.kind == "repository" and not self.repository:
            raise ValueError("a repository target needs `repository` (a path)")
        return self


class Fault(Strict):
    type: FaultType
    params: dict[str, Any] = Field(default_factory=dict)


class ProbeSpec(Strict):
    """A steady-state probe; ``during`` says what the fault is allowed to do to it.

    hold: must pass at every sample while the fault is active (a latency spike must not hurt);
    recover: may fail, but must pass again before the fault window ends (what RTO measures);
    detect: must fail at least once (the fault must be visible, e.g. corruption caught);
    ignore: not checked during the fault. Every probe must pass before injection and after rollback.
    """

    name: str
    probe: ProbeKind
    service: str | None = None
    node: str | None = None
    url: str | None = None
    argv: Argv | None = None
    path: str | None = None
    tolerance: Any = None
    timeout: Duration = 2.0
    during: Literal["hold", "recover", "detect", "ignore"] = "recover"
    before: bool = True
    after: bool = True

    @model_validator(mode="after")
    def _fields(self) -> ProbeSpec:
        need = {"http-health": ["service"], "route": ["service"], "ledger-count": ["service"],
                "ledger-integrity": ["service"], "command": ["argv"],
                "replication-lag": ["service"]}.get(self.probe, [])
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.probe} probe needs {', '.join(missing)}")
        return self


class LoadSpec(Strict):
    service: str
    interval: Duration = 0.05
    timeout: Duration = 1.0


class Expectations(Strict):
    """What must hold for the drill to pass; rto/rpo ``default`` means the blueprint's objective."""

    rto: Duration | Literal["default"] | None = "default"
    rpo: Duration | Literal["default"] | None = "default"
    detection: Duration | None = None
    data_lost: int | None = Field(default=0, ge=0)
    failovers: Literal["required", "forbidden", "any"] = "any"
    integrity: bool = True


class Window(Strict):
    start: str
    end: str

    @model_validator(mode="after")
    def _times(self) -> Window:
        ContactWindow(start=self.start, end=self.end)
        return self


class Calendar(Strict):
    """When game days may run (UTC): weekdays inside a window, like Chaos Monkey's work hours."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(WEEKDAYS[:5])
    window: Window = Field(default_factory=lambda: Window(start="10:00", end="16:00"))
    every: Literal["day", "week"] = "week"
    at: str | None = None

    def contains(self, when: Any) -> bool:
        return ContactWindow(start=self.window.start, end=self.window.end, days=self.days).contains(when)


class Scenario(Strict):
    title: str
    description: str = ""
    target: Target
    fault: Fault
    steady_state: list[ProbeSpec] = Field(default_factory=list)
    stop_conditions: list[ProbeSpec] = Field(default_factory=list)
    duration: Duration = 10.0
    recovery_timeout: Duration | None = None
    rollbacks: list[Literal["fault", "restart-node", "restart-service"]] = Field(default_factory=lambda: ["fault"])
    load: LoadSpec | None = None
    expectations: Expectations = Field(default_factory=Expectations)
    environments: list[str] | None = None
    schedule: Calendar | None = None
    game_day: bool = False

    @field_validator("duration")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("duration must be positive")
        return v


class Defaults(Strict):
    environments: list[str] = Field(default_factory=lambda: ["development", "test", "staging"])
    probe_interval: Duration = 0.25
    recovery_timeout: Duration = 60.0


class ScenarioFile(Strict):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    calendar: Calendar = Field(default_factory=Calendar)
    scenarios: dict[str, Scenario]


@dataclass(frozen=True)
class Scenarios:
    """A validated scenario file (schema and references checked against one blueprint)."""

    source: str
    model: ScenarioFile
    doc: Document

    @property
    def defaults(self) -> Defaults:
        return self.model.defaults

    @property
    def calendar(self) -> Calendar:
        return self.model.calendar

    def names(self) -> list[str]:
        return list(self.model.scenarios)

    def get(self, name: str) -> Scenario:
        try:
            return self.model.scenarios[name]
        except KeyError:
            raise UsageError(f"no scenario {name!r} in {self.source}; known: {', '.join(self.names())}") from None

    def environments(self, name: str) -> list[str]:
        sc = self.get(name)
        return sc.environments if sc.environments is not None else self.model.defaults.environments

    def recovery_timeout(self, name: str) -> float:
        sc = self.get(name)
        return sc.recovery_timeout if sc.recovery_timeout is not None else self.model.defaults.recovery_timeout


def _check_refs(doc: Document, model: ScenarioFile, bp: Blueprint) -> None:
    """References to nodes/services must exist and every target must select something."""
    from continuity.drills.targets import resolve_static  # targets imports this module's Target: a cycle

    for name, sc in model.scenarios.items():
        base: tuple[str | int, ...] = ("scenarios", name)
        t = sc.target
        for i, n in enumerate(t.nodes or []):
            if n not in bp.nodes:
                raise doc.error(base + ("target", "nodes", i),
                                f"unknown node {n!r} (declared nodes: {', '.join(sorted(bp.nodes))})")
        for key, sid in [("service", t.service)] + [(("services", i), s) for i, s in enumerate(t.services or [])]:
            if sid is not None and sid not in bp.services:
                path = base + ("target",) + (key if isinstance(key, tuple) else (key,))
                raise doc.error(path, f"unknown service {sid!r} (declared: {', '.join(sorted(bp.services))})")
        for section in ("steady_state", "stop_conditions"):
            for i, p in enumerate(getattr(sc, section)):
                if p.service is not None and p.service not in bp.services:
                    raise doc.error(base + (section, i, "service"), f"unknown service {p.service!r}")
                if p.node is not None and p.node not in bp.nodes:
                    raise doc.error(base + (section, i, "node"), f"unknown node {p.node!r}")
        if sc.load is not None and sc.load.service not in bp.services:
            raise doc.error(base + ("load", "service"), f"unknown service {sc.load.service!r}")
        if sc.load is not None and bp.services[sc.load.service].spec.port is None:
            raise doc.error(base + ("load", "service"), f"service {sc.load.service!r} has no port to write to")
        try:
            plan = resolve_static(sc.target, bp)
        except ValueError as exc:
            raise doc.error(base + ("target",), str(exc)) from None
        if not plan.nodes and not plan.services and t.kind not in ("broker", "repository"):
            raise doc.error(base + ("target",), "target matches nothing in the blueprint")


def parse_scenarios(doc: Document, bp: Blueprint) -> Scenarios:
    if not isinstance(doc.data, dict):
        raise doc.error((), "a scenarios file is a mapping with key `scenarios`")
    model = validate(doc, ScenarioFile)
    for name in model.scenarios:
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,62}$", name):
            raise doc.error(("scenarios", name), f"invalid scenario name {name!r}: lower-case, digits, '-', '_'")
    _check_refs(doc, model, bp)
    return Scenarios(source=doc.file, model=model, doc=doc)


def load_scenarios(path: str | Path, bp: Blueprint) -> Scenarios:
    return parse_scenarios(load_document(path), bp)
