"""``ops/backup/continuity.yml``: backup sets for the fleet, validated with file:line errors.

A set names the node that snapshots it, its sources, its repository, when it
runs, how long snapshots are kept, a *reference* to its key (an environment
variable or a file; the key itself never appears in config, Redis or task
arguments), where it is replicated, and where and how often a restore drill
proves it. The drill node must differ from the source node: a backup that
only restores on the machine that made it proves little about losing that
machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

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
    kind: Literal["directory", "sqlite", "ledger"]
    path: str = Field(min_length=1)
    name: str | None = None


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

    def interval(self) -> float | None:
        """Seconds between runs, or None for a cron schedule."""
        try:
            return parse_duration(self.schedule)
        except ValueError:
            return None


class NodeCfg(Strict):
    role: Literal["core", "satellite"] = "core"


class BackupConfig(Strict):
    version: Literal[1] = 1
    nodes: dict[str, NodeCfg]
    sets: dict[str, BackupSet]


class LoadedConfig:
    """The validated config plus the project root its relative paths are resolved against."""

    def __init__(self, model: BackupConfig, root: Path, file: str) -> None:
        self.model = model
        self.root = root
        self.file = file

    @property
    def sets(self) -> dict[str, BackupSet]:
        return self.model.sets

    def resolve(self, path: str) -> str:
        if "://" in path:
            return path
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


def project_root(config_file: Path) -> Path:
    for parent in config_file.resolve().parents:
        if (parent / "pyproject.toml").exists() or (parent / ".git").exists():
            return parent
    return Path.cwd()


def load_backup_config(path: str | Path, root: Path | None = None) -> LoadedConfig:
    doc = load_document(path)
    model = validate(doc, BackupConfig)
    for name, s in model.sets.items():
        if s.node not in model.nodes:
            raise doc.error(("sets", name, "node"), f"unknown node {s.node!r} (declared: {sorted(model.nodes)})")
        if s.verify is not None:
            if s.verify.node not in model.nodes:
                raise doc.error(("sets", name, "verify", "node"), f"unknown node {s.verify.node!r}")
            if s.verify.node == s.node:
                raise doc.error(("sets", name, "verify", "node"),
                                "a restore drill must run on a different node than the source")
            if s.verify.schedule:
                try:
                    _schedule(s.verify.schedule)
                except ValueError as exc:
                    raise doc.error(("sets", name, "verify", "schedule"), str(exc)) from None
    return LoadedConfig(model, root or project_root(Path(path)), str(path))
