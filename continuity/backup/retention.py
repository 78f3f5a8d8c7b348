"""Which snapshots to keep: a pure function of the snapshot list, a policy and a clock.

Semantics follow restic's ``forget`` so operators' expectations carry over:
``keep_last`` keeps the n newest; ``keep_hourly`` etc. keep the newest
snapshot in each of the n newest hour/day/week/month/year buckets that hold
a snapshot; ``keep_within`` keeps everything younger than the duration
(relative to ``now``). A snapshot is kept if any rule keeps it. Policies are
applied per group (backup set, or host + paths for ad-hoc snapshots), so
one node's churn never evicts another node's history. An empty policy keeps
everything: forgetting everything must never be a default.

Pure decider: no repository, no disk, no clock of its own (``now`` is passed in).
Its I/O shell is :mod:`continuity.backup.prune` (``forget``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

_BUCKETS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: float = 0.0  # seconds

    def empty(self) -> bool:
        return not any((self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly,
                        self.keep_monthly, self.keep_yearly, self.keep_within))


@dataclass(frozen=True)
class Snap:
    id: str
    time: datetime  # timezone-aware
    group: str = ""


def group_key(snap: dict[str, Any]) -> str:
    if snap.get("set"):
        return f"set:{snap['set']}"
    return f"host:{snap.get('hostname')}|{','.join(sorted(snap.get('paths') or []))}"


def apply_policy(snaps: Sequence[Snap], policy: Policy, now: datetime) -> tuple[list[Snap], list[Snap],
                                                                                  dict[str, list[str]]]:
    """Return (keep, remove, reasons) with keep/remove newest first; reasons name the rules that kept each."""
    reasons: dict[str, list[str]] = defaultdict(list)
    groups: dict[str, list[Snap]] = defaultdict(list)
    for s in snaps:
        groups[s.group].append(s)
    for members in groups.values():
        members.sort(key=lambda s: (s.time, s.id), reverse=True)
        if policy.empty():
            for s in members:
                reasons[s.id].append("no policy")
            continue
        for s in members[:policy.keep_last]:
            reasons[s.id].append("last")
        for name, fn in _BUCKETS.items():
            n = getattr(policy, f"keep_{name}")
            seen: set[tuple[int, ...]] = set()
            for s in members:
                if len(seen) >= n:
                    break
                b = fn(s.time)
                if b not in seen:
                    seen.add(b)
                    reasons[s.id].append(name)
        if policy.keep_within:
            limit = now - timedelta(seconds=policy.keep_within)
            for s in members:
                if s.time >= limit:
                    reasons[s.id].append("within")
    ordered = sorted(snaps, key=lambda s: (s.time, s.id), reverse=True)
    keep = [s for s in ordered if reasons.get(s.id)]
    remove = [s for s in ordered if not reasons.get(s.id)]
    return keep, remove, {k: v for k, v in reasons.items() if v}
