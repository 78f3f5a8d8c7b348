"""How backup work maps onto the fleet: which queue, how often, which tier it serves.

Pure functions of the backup config and the blueprint, used by the beat
schedule (``workers/backup.py``): kept here so the mapping is testable without
Celery and readable in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from continuity import settings
from continuity.backup.config import BackupSet, LoadedConfig
from continuity.blueprint import Blueprint
from continuity.durations import parse_duration
from continuity.passes import Pass, Schedule

PASS_POLL = 5.0
"""How often beat asks whether a pass-driven copy is due: a copy starts at most this long after its pass does
(an interval copy, by contrast, can miss a pass shorter than the interval entirely)."""
MIN_PASS_PACK = 256 * 1024
PACKS_PER_PASS = 8


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
    pass_node: str | None = None  # sent when this node's pass starts (store-and-forward), not on ``every``
    pass_margin: float = 0.0
    pass_every: float | None = None  # repeat inside a pass this long (None: once per pass)


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
        if s.replicate_to and s.node in bp.nodes and bp.contact_schedule(s.node).intermittent:
            # store and forward: a copy when each pass of the set's node starts (workers/beat.py), repeated
            # at the set's copy interval while a long pass lasts
            repeat, _cron = _when(s.replicate_to[0].schedule or s.schedule)
            jobs.append(Job(f"continuity.backup.copy:{name}", "continuity.backup.copy", s.node, PASS_POLL, None,
                            name, tier, {"pass_start": None, "pass_end": None}, pass_node=s.node,
                            pass_margin=cfg.link(s.node).pass_margin, pass_every=repeat))
            continue
        for i, rep in enumerate(s.replicate_to):
            every, cron = _when(rep.schedule or s.schedule)
            jobs.append(Job(f"continuity.backup.copy:{name}:{i}", "continuity.backup.copy", s.node, every, cron,
                            name, tier, {}))
    return jobs


def pass_to_start(schedule: Schedule, last_sent: float | None, now: float, margin: float,
                  every: float | None = None) -> Pass | None:
    """The pass a pass-driven copy must be sent for now, or None.

    Due when ``now`` is inside a pass with more than ``margin`` left and nothing was sent since that pass
    began (``last_sent``: when the entry last fired): one copy per pass, sent at its start, or as soon as
    beat is back if it was down then; never outside a pass. In a pass longer than the set's copy interval
    (``every``: a ground station in view for hours) it is sent again each ``every``, so snapshots taken
    during a long contact are forwarded during it, not at the next one.
    """
    p = schedule.current(now)
    if p is None or now >= p.end - margin:
        return None
    if last_sent is not None and last_sent >= p.start and (every is None or now - last_sent < every):
        return None
    return p


@dataclass(frozen=True)
class PassCopy:
    """How a store-and-forward copy runs inside one pass."""

    deadline: float | None  # no object is started that would not arrive by then (the pass's end less the margin)
    pack_size: int | None  # smaller packs when the link moves few per pass (the unit a stop cuts at)


def pass_copy(pass_end: float, margin: float, upload: float | None, now: float,
              default_pack: int) -> PassCopy | None:
    """The copy's deadline and pack size for a pass ending at ``pass_end``; None when it is too late to start.

    Packs are sized so that about :data:`PACKS_PER_PASS` fit in what is left of the pass at the upload
    rate: a pass's end then costs at most one pack's worth of unused time, and a pass shorter than one
    default pack's transfer still moves data.
    """
    deadline = pass_end - margin
    if now >= deadline:
        return None
    pack = None
    if upload:
        fit = int(upload * (deadline - now) / PACKS_PER_PASS)
        pack = max(MIN_PASS_PACK, min(default_pack, fit))
    return PassCopy(deadline, pack)


def set_pass_copy(cfg: LoadedConfig, set_name: str, pass_end: float, now: float) -> PassCopy | None:
    """:func:`pass_copy` for a configured set: its node's link margin, the upload limit of its first target."""
    s = cfg.sets.get(set_name)
    if s is None:
        return PassCopy(pass_end, None)  # the copy itself reports the unknown set
    target = s.replicate_to[0] if s.replicate_to else None
    return pass_copy(pass_end, cfg.link(s.node).pass_margin, cfg.set_limits(s, target).upload, now,
                     settings.PACK_SIZE.get())
