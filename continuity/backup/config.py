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
from typing import Literal

from pydantic import Field, field_validator, model_validator

from continuity import paths, settings
from continuity.backup.retention import Policy
from continuity.config import Duration, Strict, load_document, validate
from continuity.durations import parse_duration
from continuity.errors import UsageError

_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


class KeyRef(Strict):
    password_env: str | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> KeyRef:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env or password_file (never the key itself)")
        return self


class SourceCfg(Strict):
    """One thing a set protects: a path, or (``kind: service``) a service's live data on its current primary.

    A service source names no path because the path moves with the primary: at
    snapshot time it expands into the service's declared data (the blueprint's
    ``data:`` entries, by file name) inside the primary node's service directory,
    as ledger/sqlite/directory sources, so the usual integrity checks apply.
    """

    kind: Literal["directory", "sqlite", "ledger", "service"]
    path: str | None = Field(None, min_length=1)
    name: str | None = None
    service: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> SourceCfg:
        if self.kind == "service":
            if not self.service:
                raise ValueError("a service source names its service (service: ledger)")
            if self.path is not None:
                raise ValueError("a service source has no path: its data lives wherever the primary runs")
        else:
            if self.path is None:
                raise ValueError(f"a {self.kind} source needs a path")
            if self.service is not None:
                raise ValueError("service: is only for kind: service sources")
        return self


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


class ReplicaCfg(Strict):
    repository: str = Field(min_length=1)
    key: KeyRef | None = None  # defaults to the set's key
    schedule: str | None = None


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
    tags: list[str] = []

    @field_validator("schedule", mode="before")
    @classmethod
    def _check_schedule(cls, v: object) -> str:
        return _schedule(str(v))

    def services(self) -> list[str]:
        """Services whose live data this set protects (their snapshots run on the service's primary)."""
        return [src.service for src in self.sources if src.kind == "service" and src.service]

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

    def resolve(self, path: str) -> str:
        if "://" in path:
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
