"""The blueprint: what must survive, where it runs, and how fast it must come back.

Everything else (beat schedule, detector, failover planner, drill targets,
scorecard) is derived from this one declaration, so it is validated hard at
load time: a wrong blueprint must never reach the loop that acts on it.
All functions here are pure (no Redis, no clock unless passed in).
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from continuity import passes as pass_model
from continuity.config import Argv, Document, Duration, Strict, load_document, validate
from continuity.errors import ConfigError

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_BLUEPRINT = Path("ops/blueprint.yml")


def _check_id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"invalid id {value!r}: use lower-case letters, digits, '-' or '_'")
    return value


def _hhmm(value: str) -> dt.time:
    """``HH:MM`` in UTC; ``24:00`` is the end of the day (only useful as a window's end)."""
    if value == "24:00":
        return dt.time.max
    try:
        hh, mm = value.split(":")
        return dt.time(int(hh), int(mm))
    except (ValueError, AttributeError):
        raise ValueError(f"not a time of day: {value!r} (use HH:MM from 00:00 to 24:00, UTC)") from None


class ContactWindow(Strict):
    """A span of the day (UTC) in which a satellite is expected to be in contact."""

    start: str
    end: str
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(WEEKDAYS)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320
            raise ValueError(f"write times of day in quotes, e.g. \"{v // 60:02d}:{v % 60:02d}\" "
                             f"(unquoted, YAML reads them as the number {v})")
        if isinstance(v, str):
            _hhmm(v)
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> ContactWindow:
        if _hhmm(self.start) == _hhmm(self.end):
            raise ValueError(f"window starts and ends at {self.start}: it would be empty "
                             "(for a node that is always in contact, declare no contact windows)")
        return self

    def contains(self, when: dt.datetime) -> bool:
        when = when.astimezone(dt.UTC)
        start, end = _hhmm(self.start), _hhmm(self.end)
        t = when.time()
        day = WEEKDAYS[when.weekday()]
        if start <= end:
            return day in self.days and start <= t < end
        # window crosses midnight: the part after midnight belongs to the previous day's window
        if t >= start:
            return day in self.days
        prev = WEEKDAYS[(when.weekday() - 1) % 7]
        return prev in self.days and t < end


def _absolute_pass(value: str) -> str:
    pass_model.parse_interval(value)
    return value


class Node(Strict):
    kind: Literal["core", "satellite", "edge"] = "core"
    queue: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    contact: list[ContactWindow] = Field(default_factory=list)
    # absolute passes (ISO 8601 START/DURATION or START/END) and a pass-schedule file (CSV/JSON, relative to
    # the blueprint's directory): see continuity/passes.py
    passes: list[Annotated[str, AfterValidator(_absolute_pass)]] = Field(default_factory=list)
    pass_schedule: str | None = Field(None, min_length=1)
    address: str = "127.0.0.1"

    @model_validator(mode="after")
    def _contact_only_for_intermittent(self) -> Node:
        if self.scheduled and self.kind == "core":
            raise ValueError("contact windows are for satellite/edge nodes; core nodes are always in contact")
        return self

    @property
    def scheduled(self) -> bool:
        """True when the node declares when it is in contact (weekly windows, passes or a pass schedule)."""
        return bool(self.contact or self.passes or self.pass_schedule)


class DataSource(Strict):
    kind: Literal["directory", "sqlite", "ledger"]
    path: str
    # how often a standby's copy is brought up to date (continuity/replication); a ledger is shipped as it is
    # written and takes none
    interval: Duration | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _interval_not_for_ledgers(self) -> DataSource:
        if self.kind == "ledger" and self.interval is not None:
            raise ValueError("a ledger is shipped to its standbys as it is written: interval applies to "
                             "directory and sqlite sources only")
        return self

    def every(self) -> float:
        """Seconds between two replication rounds of this source (0 for a ledger: streamed)."""
        if self.kind == "ledger":
            return 0.0
        return self.interval if self.interval is not None else DEFAULT_INTERVAL[self.kind]


DEFAULT_INTERVAL = {"sqlite": 1.0, "directory": 10.0}
"""Replication cadence when a source declares none: SQLite like Litestream's default sync interval (1 s);
directories, walked and chunked each round, less often."""


class Replication(Strict):
    """How a service's declared data reaches its standbys (``replication:`` on a service or a tier).

    ``async`` ships every change as soon as it is seen and never holds a write; ``sync`` makes the
    service acknowledge a write only once ``standbys`` standbys hold it durably (the service asks the
    node's replicator, see docs/continuity/replication.md); with fewer standbys reachable it refuses
    writes (``on_no_standby: refuse``, as Patroni's ``synchronous_mode_strict``) or acknowledges them
    asynchronously and says so (``degrade``). ``off`` replicates nothing.
    """

    mode: Literal["async", "sync", "off"] = "async"
    standbys: int | None = Field(default=None, ge=1, le=16, strict=True)
    on_no_standby: Literal["refuse", "degrade"] | None = None
    timeout: Duration = Field(default=2.0, gt=0)  # sync: longest a write waits for its acknowledgements

    @model_validator(mode="after")
    def _sync_only_keys(self) -> Replication:
        if self.mode != "sync":
            extra = [k for k in ("standbys", "on_no_standby") if getattr(self, k) is not None]
            if extra:
                verb = "apply" if len(extra) > 1 else "applies"
                raise ValueError(f"{' and '.join(extra)} only {verb} to mode: sync (this is mode: {self.mode})")
        return self

    @property
    def need(self) -> int:
        """Standbys that must hold a write before it is acknowledged (0 unless sync)."""
        return (self.standbys or 1) if self.mode == "sync" else 0

    @property
    def policy(self) -> str:
        return self.on_no_standby or "refuse"


class ReplicationPolicy(Strict):
    """Fleet-wide replication settings (``policy.replication``)."""

    port: int = Field(default=27900, ge=1, le=65535)  # each node's replicator, plus the node's port_offset
    encrypt: bool = False  # AES-256-GCM on the wire (keys derived from the node keys); else HMAC only
    lag_alert: Duration = Field(default=1.0, gt=0)  # a standby further behind than this is reported (pulse)
    tiers: dict[int, Replication] = Field(default_factory=dict)  # a tier's default, e.g. {0: {mode: sync}}

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, v: dict[int, Replication]) -> dict[int, Replication]:
        bad = [t for t in v if not 0 <= t <= 3]
        if bad:
            raise ValueError(f"tiers are 0 to 3, not {bad[0]}")
        return v


class Placement(Strict):
    primary: str
    standbys: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> Placement:
        if self.primary in self.standbys:
            raise ValueError(f"primary {self.primary!r} is also listed as a standby")
        if len(set(self.standbys)) != len(self.standbys):
            raise ValueError("standbys must be distinct")
        return self


class Probe(Strict):
    """How the node agent decides a local service is healthy."""

    kind: Literal["process", "tcp", "http", "command", "file"]
    url: str | None = None
    host: str | None = None
    port: int | None = None
    argv: Argv | None = None
    path: str | None = None
    pidfile: str | None = None
    max_age: Duration | None = None
    timeout: Duration = 1.0

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Probe:
        need = {"http": ["url"], "tcp": ["port"], "command": ["argv"], "file": ["path", "max_age"],
                "process": ["pidfile"]}[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} probe needs {', '.join(missing)}")
        return self


class Hooks(Strict):
    start: Argv | None = None
    stop: Argv | None = None
    demote: Argv | None = None


class Service(Strict):
    tier: int = Field(ge=0, le=3, strict=True)  # strict: `tier: "1"` or `tier: yes` is a typo, not a tier
    rto: Duration | None = None
    rpo: Duration | None = None
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    data: list[DataSource] = Field(default_factory=list)
    placement: Placement
    probe: Probe | None = None
    hooks: Hooks = Field(default_factory=Hooks)
    port: int | None = Field(default=None, ge=1, le=65535)
    replication: Replication | None = None


class Domain(Strict):
    rto: Duration
    rpo: Duration
    description: str = ""
    services: dict[str, Service]


class Policy(Strict):
    standby_required_tiers: list[int] = Field(default_factory=lambda: [0, 1])
    heartbeat_interval: Duration = 1.0
    lease_ttl: Duration = 3.0
    lease_margin: Duration = 1.0
    # how long a primary that cannot renew because Redis itself is down (refused, loading, failing over) keeps
    # serving before it stops anyway (continuity/detect/outage.py); a node cut off stops after lease_ttl - safety
    redis_outage_tolerance: Duration = 60.0
    suspect_after: Duration = 1.5
    dead_after: Duration = 2.5
    failover_cooldown: Duration = 60.0
    storm_fraction: float = Field(default=0.5, gt=0, le=1)
    tilt_gap: Duration = 2.0
    tilt_grace: Duration = 10.0
    # consecutive timely heartbeats a suspect/dead node must send before it counts as alive again
    recover_beats: int = Field(default=3, ge=1, le=100)
    # local recovery of a crashed service on a live node (continuity/detect/recovery.py): restart it after
    # this many consecutive failed probes, at most max_local_restarts times per restart_window, then give
    # the role up so the detector fails it over
    restart_after_failures: int = Field(default=3, ge=1, le=100)
    max_local_restarts: int = Field(default=2, ge=0, le=100)
    restart_window: Duration = 60.0
    replication: ReplicationPolicy = Field(default_factory=ReplicationPolicy)


class BlueprintModel(Strict):
    version: Literal[1] = 1
    fleet: str
    description: str = ""
    policy: Policy = Field(default_factory=Policy)
    nodes: dict[str, Node]
    domains: dict[str, Domain]


@dataclass(frozen=True)
class ServiceView:
    """A service with its domain's objectives resolved (what callers actually need)."""

    id: str
    domain: str
    tier: int
    rto: float
    rpo: float
    depends_on: tuple[str, ...]
    primary: str
    standbys: tuple[str, ...]
    spec: Service
    replication: Replication = Replication()  # the service's own, else its tier's, else async


class Blueprint:
    """A validated blueprint plus everything derived from it."""

    def __init__(self, model: BlueprintModel, source: str = "<memory>") -> None:
        self.model = model
        self.source = source
        self._passes: dict[str, tuple[pass_model.Pass, ...]] = {
            nid: tuple(sorted(pass_model.parse_interval(p) for p in n.passes))
            for nid, n in model.nodes.items() if n.passes}
        self.services: dict[str, ServiceView] = {}
        for dom_id, dom in model.domains.items():
            for sid, svc in dom.services.items():
                self.services[sid] = ServiceView(
                    id=sid, domain=dom_id, tier=svc.tier,
                    rto=svc.rto if svc.rto is not None else dom.rto,
                    rpo=svc.rpo if svc.rpo is not None else dom.rpo,
                    depends_on=tuple(svc.depends_on), primary=svc.placement.primary,
                    standbys=tuple(svc.placement.standbys), spec=svc,
                    replication=svc.replication or model.policy.replication.tiers.get(svc.tier) or Replication(),
                )

    # --- nodes -----------------------------------------------------------------
    @property
    def nodes(self) -> Mapping[str, Node]:
        return self.model.nodes

    @property
    def policy(self) -> Policy:
        return self.model.policy

    def queue(self, node_id: str) -> str:
        return self.model.nodes[node_id].queue or f"node.{node_id}"

    def queues(self) -> dict[str, str]:
        return {n: self.queue(n) for n in self.model.nodes}

    def in_contact(self, node_id: str, when: dt.datetime) -> bool:
        """False inside a planned blackout: the node is expected to be silent then."""
        node = self.model.nodes[node_id]
        if node.kind == "core" or not node.scheduled:
            return True
        if any(w.contains(when) for w in node.contact):
            return True
        t = when.timestamp()
        return any(p.contains(t) for p in self.absolute_passes(node_id))

    def absolute_passes(self, node_id: str) -> tuple[pass_model.Pass, ...]:
        """The node's inline passes plus those of its pass-schedule file (loaded by :func:`parse_blueprint`)."""
        return self._passes.get(node_id, ())

    def contact_schedule(self, node_id: str) -> pass_model.Schedule:
        """The node's contact as passes (weekly windows and absolute ones); empty for an always-on node."""
        node = self.model.nodes[node_id]
        if node.kind == "core":
            return pass_model.Schedule()
        return pass_model.Schedule(tuple((w.start, w.end, tuple(w.days)) for w in node.contact),
                                   self.absolute_passes(node_id))

    def load_pass_files(self, doc: Document | None = None) -> None:
        """Read each node's ``pass_schedule`` file (relative to the blueprint's directory); errors name that
        file and line, or the blueprint's key when the file cannot be read."""
        base = Path(self.source).parent if self.source != "<memory>" else Path.cwd()
        for nid, node in self.model.nodes.items():
            if not node.pass_schedule:
                continue
            path = Path(node.pass_schedule)
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                msg = f"pass schedule {str(path)!r} not found"
                if doc is not None:
                    raise doc.error(("nodes", nid, "pass_schedule"), msg)
                raise ConfigError(self.source, None, f"nodes.{nid}.pass_schedule", msg)
            self._passes[nid] = tuple(sorted({*self._passes.get(nid, ()), *pass_model.load_pass_file(path, nid)}))

    # --- graph -----------------------------------------------------------------
    def dependency_graph(self) -> dict[str, tuple[str, ...]]:
        return {sid: s.depends_on for sid, s in self.services.items()}

    def transitive_deps(self, service_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.services[service_id].depends_on)
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(self.services[cur].depends_on)
        return seen

    def minimal_continuity_set(self) -> list[str]:
        """Tier-0 services and everything they transitively need: what must run for the fleet to matter."""
        keep: set[str] = set()
        for sid, s in self.services.items():
            if s.tier == 0:
                keep.add(sid)
                keep |= self.transitive_deps(sid)
        return sorted(keep, key=lambda s: (self.services[s].tier, s))

    def degradation_order(self) -> list[list[str]]:
        """Groups of services to shed, first group first: the lowest-priority tier goes first,
        and nothing in the minimal continuity set is ever shed."""
        protected = set(self.minimal_continuity_set())
        groups = []
        for tier in (3, 2, 1):
            group = sorted(s for s, v in self.services.items() if v.tier == tier and s not in protected)
            if group:
                groups.append(group)
        return groups

    def topo_order(self) -> list[str]:
        """Dependencies before dependents (start order)."""
        out: list[str] = []
        done: set[str] = set()

        def visit(s: str) -> None:
            if s in done:
                return
            done.add(s)
            for d in sorted(self.services[s].depends_on):
                visit(d)
            out.append(s)

        for s in sorted(self.services):
            visit(s)
        return out

    def services_on(self, node_id: str) -> list[str]:
        return sorted(s for s, v in self.services.items() if v.primary == node_id)

    def tier_services(self, tiers: Iterable[int]) -> list[str]:
        ts = set(tiers)
        return sorted(s for s, v in self.services.items() if v.tier in ts)


def _find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = dfs(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = dfs(n)
            if found:
                return found
    return None


HOOK_PLACEHOLDERS = ("python", "root", "node", "service", "port", "epoch", "address")
"""Names hooks and probes may use as ``{name}``; filled in on the node that runs them."""


def placeholder_problem(text: str) -> str | None:
    """Why ``text`` cannot be rendered, or None: a typo like ``{prot}`` must fail at check time,
    not in the middle of a failover."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        return f"malformed placeholder in {text!r}: {exc} (write {{{{ and }}}} for literal braces)"
    for name in names:
        if name not in HOOK_PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in HOOK_PLACEHOLDERS)
            return f"unknown placeholder {{{name}}} in {text!r} (known: {known})"
    return None


def _templated_fields(svc: Service) -> Iterable[tuple[tuple[str | int, ...], str]]:
    for hook in ("start", "stop", "demote"):
        for i, arg in enumerate(getattr(svc.hooks, hook) or []):
            yield ("hooks", hook, i), arg
    if svc.probe is not None:
        for field in ("url", "host", "path", "pidfile"):
            value = getattr(svc.probe, field)
            if value is not None:
                yield ("probe", field), value
        for i, arg in enumerate(svc.probe.argv or []):
            yield ("probe", "argv", i), arg


def check_semantics(doc: Document, model: BlueprintModel) -> None:
    """Cross-reference checks pydantic cannot express; raises the first ConfigError found."""
    for nid, node in model.nodes.items():
        try:
            _check_id(nid)
        except ValueError as exc:
            raise doc.error(("nodes", nid), str(exc)) from None
        offset = node.labels.get("port_offset")
        if offset is not None and not offset.strip().lstrip("-").isdigit():
            raise doc.error(("nodes", nid, "labels", "port_offset"),
                            f"port_offset must be an integer (as a string, e.g. \"100\"), got {offset!r}")
    seen: dict[str, str] = {}
    svc_path: dict[str, tuple[str, ...]] = {}
    for dom_id, dom in model.domains.items():
        for sid in dom.services:
            base = ("domains", dom_id, "services", sid)
            try:
                _check_id(sid)
            except ValueError as exc:
                raise doc.error(base, str(exc)) from None
            if sid in seen:
                raise doc.error(base, f"service {sid!r} is already declared in domain {seen[sid]!r}")
            seen[sid] = dom_id
            svc_path[sid] = base
    for dom in model.domains.values():
        for sid, svc in dom.services.items():
            base = svc_path[sid]
            pl = svc.placement
            if pl.primary not in model.nodes:
                raise doc.error(base + ("placement", "primary"), f"unknown node {pl.primary!r}"
                                f" (declared nodes: {', '.join(sorted(model.nodes))})")
            for i, sb in enumerate(pl.standbys):
                if sb not in model.nodes:
                    raise doc.error(base + ("placement", "standbys", i), f"unknown node {sb!r}"
                                    f" (declared nodes: {', '.join(sorted(model.nodes))})")
            for i, dep in enumerate(svc.depends_on):
                if dep not in seen:
                    raise doc.error(base + ("depends_on", i), f"unknown service {dep!r}")
                if dep == sid:
                    raise doc.error(base + ("depends_on", i), "a service cannot depend on itself")
            for where, text in _templated_fields(svc):
                problem = placeholder_problem(text)
                if problem:
                    raise doc.error(base + where, problem)
            if svc.tier in model.policy.standby_required_tiers and not pl.standbys:
                raise doc.error(base + ("placement",),
                                f"tier-{svc.tier} services need at least one standby (policy.standby_required_tiers)")
    _check_replication(doc, model, svc_path)
    graph = {sid: svc.depends_on for dom in model.domains.values() for sid, svc in dom.services.items()}
    cycle = _find_cycle(graph)
    if cycle:
        raise doc.error(svc_path[cycle[0]] + ("depends_on",), "dependency cycle: " + " -> ".join(cycle))
    tiers = {sid: svc.tier for dom in model.domains.values() for sid, svc in dom.services.items()}
    for dom in model.domains.values():
        for sid, svc in dom.services.items():
            if svc.tier != 0:
                continue
            for i, dep in enumerate(svc.depends_on):
                if tiers[dep] > 0:
                    raise doc.error(svc_path[sid] + ("depends_on", i),
                                    f"tier-0 service {sid!r} depends on {dep!r} of tier {tiers[dep]}: "
                                    "a safety-critical service may only depend on tier-0 services")
    p = model.policy
    if p.lease_ttl <= p.heartbeat_interval:
        raise doc.error(("policy", "lease_ttl"), "lease_ttl must be longer than heartbeat_interval")
    if p.redis_outage_tolerance < p.lease_ttl:
        raise doc.error(("policy", "redis_outage_tolerance"),
                        "redis_outage_tolerance must not be shorter than lease_ttl")
    if p.dead_after < p.suspect_after:
        raise doc.error(("policy", "dead_after"), "dead_after must not be shorter than suspect_after")


def _check_replication(doc: Document, model: BlueprintModel, svc_path: Mapping[str, tuple[str, ...]]) -> None:
    """Sync mode cannot wait for more standbys than the placement declares: that service could never write."""
    tiers = model.policy.replication.tiers
    for dom in model.domains.values():
        for sid, svc in dom.services.items():
            spec = svc.replication or tiers.get(svc.tier)
            if spec is None or spec.mode != "sync":
                continue
            have = len(svc.placement.standbys)
            if spec.need <= have:
                continue
            where = (svc_path[sid] + ("replication", "standbys") if svc.replication is not None
                     else ("policy", "replication", "tiers", str(svc.tier), "standbys"))
            origin = "" if svc.replication is not None else f" (tier {svc.tier}'s default, for service {sid!r})"
            raise doc.error(where, f"sync mode waits for {spec.need} standby(s){origin} but {sid!r} declares "
                            f"{have} in placement.standbys")


def parse_blueprint(doc: Document) -> Blueprint:
    if not doc.lines:  # empty, or nothing but comments
        raise ConfigError(doc.file, 1, "", "the file is empty; a blueprint needs fleet, nodes and domains")
    if not isinstance(doc.data, dict):
        raise doc.error((), f"a blueprint is a mapping with keys fleet, nodes, domains, not {type(doc.data).__name__}")
    model = validate(doc, BlueprintModel)
    check_semantics(doc, model)
    bp = Blueprint(model, source=doc.file)
    bp.load_pass_files(doc)
    return bp


def load_blueprint(path: str | Path = DEFAULT_BLUEPRINT) -> Blueprint:
    return parse_blueprint(load_document(path))
