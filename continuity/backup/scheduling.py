"""How backup work maps onto the fleet: which queue, how often, which tier it serves.

Pure functions of the backup config and the blueprint, used by the beat
schedule (``workers/backup.py``): kept here so the mapping is testable without
Celery and readable in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from continuity.backup.config import BackupSet, LoadedConfig
from continuity.blueprint import Blueprint
from continuity.durations import parse_duration


@dataclass(frozen=True)
class Job:
    name: str
    task: str
    node: str
    every: float | None
    cron: str | None
    set_name: str
    tier: int | None
    kwargs: dict


def set_tier(bp: Blueprint, s: BackupSet) -> int | None:
    """The most critical tier among services whose data this set protects (None: no service claims it)."""
    paths = {PurePath(src.path) for src in s.sources if src.path}
    tiers = [v.tier for v in bp.services.values() for d in v.spec.data if PurePath(d.path) in paths]
    tiers += [bp.services[sid].tier for sid in s.services() if sid in bp.services]
    return min(tiers) if tiers else None


def _when(spec: str) -> tuple[float | None, str | None]:
    try:
        return parse_duration(spec), None
    except ValueError:
        return None, spec


def backup_jobs(bp: Blueprint, cfg: LoadedConfig) -> list[Job]:
    jobs: list[Job] = []
    for name, s in sorted(cfg.sets.items()):
        tier = set_tier(bp, s)
        every, cron = _when(s.schedule)
        jobs.append(Job(f"continuity.backup.snapshot:{name}", "continuity.backup.snapshot", s.node, every, cron,
                        name, tier, {}))
        if s.verify is not None:
            every, cron = _when(s.verify.schedule)
            jobs.append(Job(f"continuity.backup.verify:{name}", "continuity.backup.verify", s.verify.node, every,
                            cron, name, tier, {}))
        if any((s.retention.model_dump() or {}).values()):
            jobs.append(Job(f"continuity.backup.forget:{name}", "continuity.backup.forget", s.node, 3600.0, None,
                            name, tier, {"prune": True}))
        for i, rep in enumerate(s.replicate_to):
            every, cron = _when(rep.schedule or s.schedule)
            jobs.append(Job(f"continuity.backup.copy:{name}:{i}", "continuity.backup.copy", s.node, every, cron,
                            name, tier, {}))
    return jobs
