"""``ops/backup/continuity.yml``: backup sets for the fleet, validated with file:line errors.

A set names the node that snapshots it, its sources, its repository, when it
runs, how long snapshots are kept, a *reference* to its key (an environment
variable or a file; the key itself never appears in config, Redis or task
arguments), where it is replicated, and where and how often a restore drill
proves it. The drill node must differ from the source node: a backup that
only restores on the machine that made it proves little about losing that
machine.

Nodes are the blueprint's (``ops/blueprint.yml``): when the caller has one, it
passes its node ids and kinds and every ``node`` reference is checked against
them, so a typo fails at load time instead of scheduling work on a queue no
worker consumes. Without a blueprint (restic-style use, or a config kept
outside a project) references are not checked. The old ``nodes:`` section is
deprecated: it only duplicated the blueprint and drifted from it; when present
it must agree with the blueprint, and stands in for it when there is none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from continuity import paths, settings
from continuity.backup import excludes
from continuity.backup.retention import Policy
from continuity.backup.storage import is_url
from continuity.backup.throttle import Limits
from continuity.config import Duration, Strict, load_document, validate
from continuity.durations import parse_duration
from continuity.errors import UsageError

DEFAULT_COMMAND_TIMEOUT = 3600.0  # a command source's dump must finish within this (timeout: to change)
DEFAULT_CHECK_TIMEOUT = 600.0  # a restore drill's check command (check_timeout: to change)
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


class KeyRef(Strict):
    password_env: str | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> KeyRef:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env or password_file (never the key itself)")
        return self


def _command(value: Any) -> Any:
    """An argv list; numbers (a port) become strings, anything else that is not a string is refused."""
    if isinstance(value, str):
        raise ValueError("a command is an argv list, never a shell string: write [\"prog\", \"arg\"]")
    if isinstance(value, list):
        if not value:
            raise ValueError("a command needs at least the program to run")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ValueError(f"argument {i} of the command is {type(item).__name__}, expected a string")
            out.append(str(item))
        if not out[0]:
            raise ValueError("the program to run is an empty string")
        return out
    return value


Command = Annotated[list[str], BeforeValidator(_command)]
"""A command as an argv list (numbers allowed as arguments): run without a shell, nothing re-parsed."""


def _pattern(value: str) -> str:
    try:
        excludes.parse(value)
    except excludes.BadPattern as exc:
        raise ValueError(f"invalid exclude pattern: {exc}") from None
    return value


def _tag_spec(value: str) -> str:
    try:
        excludes.parse_tag_spec(value)
    except excludes.BadPattern as exc:
        raise ValueError(str(exc)) from None
    return value


ExcludePattern = Annotated[str, AfterValidator(_pattern)]
"""A restic exclude pattern (``*.tmp``, ``/var/cache``, ``foo/**/bar``, ``!keep``), checked at load time."""
TagSpec = Annotated[str, AfterValidator(_tag_spec)]


def check_file_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"name {name!r} must be one file name (no '/'): it is the file's name in the snapshot")
    return name


class SourceCfg(Strict):
    """One thing a set protects: a path, a command's output, or a service's live data on its current primary.

    A service source names no path because the path moves with the primary: at
    snapshot time it expands into the service's declared data (the blueprint's
    ``data:`` entries, by file name) inside the primary node's service directory,
    as ledger/sqlite/directory sources, so the usual integrity checks apply.

    A command source (``kind: command``) stores what ``command`` prints on
    stdout as the file ``name`` (a ``pg_dump -Fc``, a ``redis-cli --rdb -``);
    a non-zero exit or a timeout fails the whole snapshot. Its ``check`` is
    what a restore drill runs on the restored file (``{file}`` is replaced by
    its path; without ``{file}`` the file is the check's stdin).
    """

    kind: Literal["directory", "sqlite", "ledger", "service", "command"]
    path: str | None = Field(None, min_length=1)
    name: str | None = None
    service: str | None = None
    command: Command | None = None
    timeout: Duration | None = Field(None, gt=0)
    check: Command | None = None
    check_timeout: Duration | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _shape(self) -> SourceCfg:
        if self.kind != "command":
            for key in ("command", "timeout", "check", "check_timeout"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: is only for kind: command sources")
        if self.kind == "service":
            if not self.service:
                raise ValueError("a service source names its service (service: ledger)")
            if self.path is not None:
                raise ValueError("a service source has no path: its data lives wherever the primary runs")
        elif self.kind == "command":
            if self.command is None:
                raise ValueError("a command source needs command: [prog, arg, ...]")
            if self.path is not None or self.service is not None:
                raise ValueError("a command source has no path or service: its data is the command's stdout")
            if not self.name:
                raise ValueError("a command source needs name: (the file its output is stored as, e.g. app.dump)")
            check_file_name(self.name)
        else:
            if self.path is None:
                raise ValueError(f"a {self.kind} source needs a path")
            if self.service is not None:
                raise ValueError("service: is only for kind: service sources")
        return self


class HookCfg(Strict):
    """A command run before or after a set's snapshot (quiesce, flush, thaw), with an explicit failure policy.

    ``on_failure: abort`` — a failing ``before`` hook means no snapshot is taken
    and the run fails; a failing ``after`` hook fails the run (the snapshot,
    already saved, stays). ``continue`` — the failure is reported and the run
    goes on. There is no default: what a failed quiesce should cost is the
    operator's decision, not ours.
    """

    command: Command
    timeout: Duration = Field(300.0, gt=0)
    on_failure: Literal["abort", "continue"]


class RetentionCfg(Strict):
    keep_last: int = Field(0, ge=0)
    keep_hourly: int = Field(0, ge=0)
    keep_daily: int = Field(0, ge=0)
    keep_weekly: int = Field(0, ge=0)
    keep_monthly: int = Field(0, ge=0)
    keep_yearly: int = Field(0, ge=0)
    keep_within: Duration = 0.0

    def policy(self) -> Policy:
        return Policy(**self.model_dump())


KiBps = Annotated[int, Field(gt=0)]
"""A bandwidth limit in KiB/s, restic's unit for --limit-upload / --limit-download."""


class ReplicaCfg(Strict):
    repository: str = Field(min_length=1)
    key: KeyRef | None = None  # defaults to the set's key
    schedule: str | None = None
    limit_upload: KiBps | None = None  # this target's share of the link (the tighter limit wins)
    limit_download: KiBps | None = None

    def limits(self) -> Limits:
        return Limits.from_kib(self.limit_upload, self.limit_download)


class LinkCfg(Strict):
    """A node's link to the rest of the fleet (``links: {sat-1: {...}}``): a satellite's radio, a thin WAN.

    Every transfer a set makes from that node is held to these limits (a set or a target may ask for less,
    never more). ``pass_margin`` is how long before a pass ends store-and-forward copy stops starting
    objects, so the last one is not cut off by loss of signal.
    """

    limit_upload: KiBps | None = None
    limit_download: KiBps | None = None
    pass_margin: Duration = Field(10.0, ge=0)

    def limits(self) -> Limits:
        return Limits.from_kib(self.limit_upload, self.limit_download)


class VerifyCfg(Strict):
    node: str
    schedule: str = "1h"
    read_data_subset: str | None = None


def _schedule(value: str) -> str:
    try:
        if parse_duration(value) <= 0:
            raise ValueError("a schedule interval must be positive")
        return value
    except ValueError as exc:
        fields = value.split()
        if len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields):
            return value
        raise ValueError(f"schedule {value!r}: use an interval (5m, 1h) or 5 cron fields") from exc


class BackupSet(Strict):
    node: str
    sources: list[SourceCfg] = Field(min_length=1)
    repository: str = Field(min_length=1)
    schedule: str = "1h"
    retention: RetentionCfg = RetentionCfg()
    key: KeyRef
    replicate_to: list[ReplicaCfg] = []
    verify: VerifyCfg | None = None
    rpo: Duration | None = None
    # ship ledger appends to the repository this often (point-in-time restore between snapshots); None: never
    ship_log: Duration | None = Field(None, gt=0)
    tags: list[str] = []
    before: list[HookCfg] = []
    after: list[HookCfg] = []
    # restic's exclude options, one key per flag (see continuity/backup/excludes.py)
    exclude: list[ExcludePattern] = []
    iexclude: list[ExcludePattern] = []
    exclude_file: list[str] = []
    iexclude_file: list[str] = []
    exclude_caches: bool = False
    exclude_if_present: list[TagSpec] = []
    one_file_system: bool = False
    # bandwidth limits of this set's transfers in KiB/s (restic's --limit-upload / --limit-download)
    limit_upload: KiBps | None = None
    limit_download: KiBps | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _check_schedule(cls, v: object) -> str:
        return _schedule(str(v))

    def services(self) -> list[str]:
        """Services whose live data this set protects (their snapshots run on the service's primary)."""
        return [src.service for src in self.sources if src.kind == "service" and src.service]

    def limits(self) -> Limits:
        return Limits.from_kib(self.limit_upload, self.limit_download)

    def interval(self) -> float | None:
        """Seconds between runs, or None for a cron schedule."""
        try:
            return parse_duration(self.schedule)
        except ValueError:
            return None


class NodeCfg(Strict):
    role: Literal["core", "satellite", "edge"] = "core"


class BackupConfig(Strict):
    version: Literal[1] = 1
    nodes: dict[str, NodeCfg] | None = None  # deprecated: the blueprint declares the nodes
    links: dict[str, LinkCfg] = {}
    sets: dict[str, BackupSet]


class LoadedConfig:
    """The validated config plus the project root its relative paths are resolved against."""

    def __init__(self, model: BackupConfig, root: Path, file: str, notes: list[str] | None = None,
                 service_data: dict[str, list[tuple[str, str]]] | None = None) -> None:
        self.model = model
        self.root = root
        self.file = file
        # non-fatal findings (a deprecated section) for the CLI to show; workers ignore them
        self.notes = notes or []
        # service -> [(kind, file name)] of its declared data (from the blueprint); None: no blueprint known
        self.service_data = service_data

    @property
    def sets(self) -> dict[str, BackupSet]:
        return self.model.sets

    def link(self, node: str) -> LinkCfg:
        return self.model.links.get(node) or LinkCfg()

    def set_limits(self, s: BackupSet, target: ReplicaCfg | None = None) -> Limits:
        """The limits a set's transfer runs under, tightest wins: the set's own, a copy target's, and the
        node's link for what crosses it (copy targets, and the set's repository when it is a URL; a local
        repository on the node's own disk is not held to the radio's rate)."""
        out = s.limits()
        if target is not None:
            return out.tighter(target.limits()).tighter(self.link(s.node).limits())
        if is_url(s.repository) and not s.repository.startswith("file://"):
            out = out.tighter(self.link(s.node).limits())
        return out

    def resolve(self, path: str) -> str:
        if is_url(path):
            return path
        if "{state}" in path:
            path = path.replace("{state}", str(paths.state_dir()))
        p = Path(os.path.expanduser(path))
        return str(p if p.is_absolute() else (self.root / p))

    def password(self, ref: KeyRef) -> bytes:
        return read_password(ref, self.root)


def read_password(ref: KeyRef, root: Path) -> bytes:
    if ref.password_env:
        value = os.environ.get(ref.password_env)
        if not value:
            raise UsageError(f"the key reference names ${ref.password_env}, which is not set")
        return value.encode()
    path = Path(ref.password_file or "")
    path = path if path.is_absolute() else root / path
    try:
        lines = path.read_bytes().splitlines()
        return lines[0] if lines else b""
    except OSError as exc:
        raise UsageError(f"cannot read password file {path}: {exc.strerror}") from None


def _marked_root(config_file: Path) -> Path | None:
    for parent in config_file.resolve().parents:
        if (parent / "pyproject.toml").exists() or (parent / ".git").exists():
            return parent
    return None


def project_root(config_file: Path) -> Path:
    return _marked_root(config_file) or Path.cwd()


NodeKinds = Mapping[str, str | None]


def fleet_nodes(nodes: Mapping[str, object] | Iterable[str]) -> dict[str, str | None]:
    """Node id -> kind from a blueprint's ``nodes`` mapping, or ids alone (kind unknown, not compared)."""
    if isinstance(nodes, Mapping):
        return {str(k): getattr(v, "kind", v if isinstance(v, str) else None) for k, v in nodes.items()}
    return {str(k): None for k in nodes}


def service_data_files(services: Mapping[str, object]) -> dict[str, list[tuple[str, str]]]:
    """Service id -> [(kind, file name)] from a blueprint's ``services`` (each with ``spec.data``).

    The blueprint's data paths name the files a service keeps; on a node they live
    by that file name inside the node's service directory (``services/layout.py``).
    """
    out: dict[str, list[tuple[str, str]]] = {}
    for sid, svc in services.items():
        spec = getattr(svc, "spec", svc)
        out[str(sid)] = [(d.kind, PurePath(d.path).name) for d in getattr(spec, "data", [])]
    return out


def load_backup_config(path: str | Path, root: Path | None = None, *,
                       blueprint_nodes: Mapping[str, object] | Iterable[str] | None = None,
                       blueprint_file: str | Path | None = None,
                       blueprint_services: Mapping[str, object] | None = None) -> LoadedConfig:
    """Load and validate a backup config; node references are checked against ``blueprint_nodes`` when given.

    ``blueprint_nodes`` is the blueprint's ``nodes`` mapping (or just its ids);
    ``blueprint_file`` only names it in messages. Without either the deprecated
    ``nodes:`` section (if any) is the reference, else nothing is checked: the
    engine stays usable with no blueprint at all.
    """
    doc = load_document(path)
    model = validate(doc, BackupConfig)
    notes: list[str] = []
    fleet = fleet_nodes(blueprint_nodes) if blueprint_nodes is not None else None
    bp_name = str(blueprint_file) if blueprint_file else "the blueprint"
    if model.nodes is not None:
        line = doc.line_of(("nodes",))
        notes.append(f"{doc.file}:{line}: nodes: is deprecated: ops/blueprint.yml declares the nodes "
                     "(remove this section)")
        if fleet is not None:
            for nid, ncfg in model.nodes.items():
                if nid not in fleet:
                    raise doc.error(("nodes", nid), f"node {nid!r} is not in {bp_name} "
                                    f"(declared: {', '.join(sorted(fleet))}); remove the deprecated nodes: section")
                kind = fleet[nid]
                if kind is not None and kind != ncfg.role:
                    raise doc.error(("nodes", nid, "role"), f"role {ncfg.role!r} disagrees with {bp_name}, "
                                    f"where {nid!r} is {kind!r}; remove the deprecated nodes: section")
    known: Mapping[str, object] | None = fleet if fleet is not None else model.nodes
    where = bp_name if fleet is not None else "the nodes: section"
    service_data = service_data_files(blueprint_services) if blueprint_services is not None else None
    for nid in model.links:
        if known is not None and nid not in known:
            raise doc.error(("links", nid), f"unknown node {nid!r} (declared in {where}: {', '.join(sorted(known))})")
    for name, s in model.sets.items():
        for i, src in enumerate(s.sources):
            if src.kind != "service" or service_data is None:
                continue
            if src.service not in service_data:
                raise doc.error(("sets", name, "sources", i, "service"),
                                f"unknown service {src.service!r} (declared in {bp_name}: "
                                f"{', '.join(sorted(service_data))})")
            if not service_data[src.service or ""]:
                raise doc.error(("sets", name, "sources", i, "service"),
                                f"service {src.service!r} declares no data in {bp_name}: nothing to protect")
        if known is not None and s.node not in known:
            raise doc.error(("sets", name, "node"),
                            f"unknown node {s.node!r} (declared in {where}: {', '.join(sorted(known))})")
        if s.verify is not None:
            if known is not None and s.verify.node not in known:
                raise doc.error(("sets", name, "verify", "node"),
                                f"unknown node {s.verify.node!r} (declared in {where}: {', '.join(sorted(known))})")
            if s.verify.node == s.node:
                raise doc.error(("sets", name, "verify", "node"),
                                "a restore drill must run on a different node than the source")
            if s.verify.schedule:
                try:
                    _schedule(s.verify.schedule)
                except ValueError as exc:
                    raise doc.error(("sets", name, "verify", "schedule"), str(exc)) from None
    return LoadedConfig(model, root or project_root(Path(path)), str(path), notes, service_data)


def load_fleet_backup_config(path: str | Path, root: Path | None = None,
                             blueprint: str | Path | None = None) -> LoadedConfig:
    """Load a backup config checked against the project's blueprint, if the project has one.

    ``blueprint`` defaults to ``$CONTINUITY_BLUEPRINT``, else ``ops/blueprint.yml``
    under ``root`` or the config's project root (a parent holding pyproject.toml
    or .git; the current directory does not count, so a config kept elsewhere
    is not judged by whatever project the shell is in). No blueprint there
    means standalone use (no node checks); a blueprint named explicitly but
    missing, or one that is invalid, is an error: the nodes it declares are unknown.
    """
    marked = root or _marked_root(Path(path))
    cfg_root = marked or Path.cwd()
    explicit = blueprint or settings.BLUEPRINT.get()
    bp_path = Path(explicit) if explicit else (marked / "ops" / "blueprint.yml" if marked else None)
    if bp_path is None or (not explicit and not bp_path.exists()):
        return load_backup_config(path, root=cfg_root)
    from continuity.blueprint import load_blueprint  # pydantic models of the whole fleet: only when needed

    bp = load_blueprint(bp_path)
    return load_backup_config(path, root=cfg_root, blueprint_nodes=bp.nodes, blueprint_file=bp_path,
                              blueprint_services=bp.services)
