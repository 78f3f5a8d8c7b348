"""Local recovery of a crashed service: restart it in place first, give the role up only when that fails.

A service can die (or hang) on a node that stays alive: the node keeps beating
and renewing the lease, so the detector never sees a dead primary and nothing
would ever move the role. Patroni and Pacemaker users expect the ladder "restart
locally, then fail over": a local restart keeps the same epoch and data and
takes a second, a failover costs a fence, a copy and a new epoch.

This module only decides, from a stream of probe results and a clock passed in;
the node agent (:mod:`continuity.detect.agent`) runs the hooks and writes Redis.
One :class:`Tracker` per (service, epoch) held on this node: a new role starts
with a clean slate, so a restart budget spent under epoch 3 never blocks epoch 4.

Pure decider: no Redis, no disk, no clock of its own. Its I/O shell is
:mod:`continuity.detect.agent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from continuity.blueprint import Blueprint

Action = Literal["none", "restart", "give_up"]


@dataclass(frozen=True)
class RecoveryPolicy:
    """How patient a node is with its own service (blueprint ``policy``; see docs/continuity/configuration.md).

    ``restart_after_failures`` consecutive failed probes before acting: one failed probe is often a slow
    answer, not a dead service, and a restart of a healthy instance is cheap but not free.
    ``max_local_restarts`` within ``restart_window`` seconds: a service that keeps crashing after that many
    restarts is broken on this node (bad disk, bad config, port taken), so the role goes elsewhere.
    """

    restart_after_failures: int = 3
    max_local_restarts: int = 2
    restart_window: float = 60.0

    @classmethod
    def from_blueprint(cls, bp: Blueprint) -> RecoveryPolicy:
        p = bp.policy
        return cls(restart_after_failures=p.restart_after_failures, max_local_restarts=p.max_local_restarts,
                   restart_window=float(p.restart_window))


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    failures: int  # consecutive failed probes seen, including this one
    restarts: int  # local restarts inside the window, including one decided now


@dataclass
class Tracker:
    """Probe history of one held (service, epoch); feed it every probe result with :meth:`observe`."""

    policy: RecoveryPolicy
    has_start_hook: bool = True
    failures: int = 0
    failing_since: float | None = None  # clock value of the first failed probe of the current streak
    restarts: list[float] = field(default_factory=list)  # clock values of local restarts
    gave_up: bool = False

    def observe(self, healthy: bool, now: float, detail: str = "") -> Decision:
        """What to do after this probe result.

        A healthy answer clears the failure streak but not the restart history: a service that comes back
        for a few seconds and dies again is still crash-looping, and only the window forgets restarts.
        After a restart the streak starts again from zero, so the restarted instance gets the same
        ``restart_after_failures`` probes of patience as the first one. Once given up, it stays given up
        (the agent has released the role; only a new epoch brings a new tracker).
        """
        pol = self.policy
        self.restarts = [t for t in self.restarts if now - t < pol.restart_window]
        if self.gave_up:
            return Decision("none", "already given up", self.failures, len(self.restarts))
        if healthy:
            self.failures = 0
            self.failing_since = None
            return Decision("none", "healthy", 0, len(self.restarts))
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if self.failures < pol.restart_after_failures:
            return Decision("none", f"{self.failures} of {pol.restart_after_failures} failed probes",
                            self.failures, len(self.restarts))
        why = f"{self.failures} consecutive failed probes" + (f" (last: {detail})" if detail else "")
        if not self.has_start_hook:
            self.gave_up = True
            return Decision("give_up", f"{why}; no start hook to restart it with", self.failures,
                            len(self.restarts))
        if len(self.restarts) >= pol.max_local_restarts:
            self.gave_up = True
            return Decision("give_up", f"{why} after {len(self.restarts)} local restart(s) in "
                                       f"{pol.restart_window:g}s", self.failures, len(self.restarts))
        self.restarts.append(now)
        failures = self.failures
        self.failures = 0
        return Decision("restart", why, failures, len(self.restarts))
