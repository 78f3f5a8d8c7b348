"""Why a lease cannot be renewed, and whether that obliges a primary to stop.

Pure decider: a function of what the failed round trip proved (its *symptom*, from
:func:`continuity.redisd.symptom_of`), what the sentinels said (if any) and the time on an injected
monotonic clock. Its I/O shells are the node agent (:mod:`continuity.detect.agent`) and the sample
service's own lease watch (:mod:`continuity.sample.ledger_service`).

Two causes look alike from a primary that cannot renew its lease, and call for opposite actions:

* **Redis is down or failing over** — the Redis host refused the connection (the process is gone, it is
  being restarted), Redis answered with a transitional state (``LOADING`` its data after a restart,
  ``READONLY``/``MASTERDOWN`` mid-failover), or the sentinels answered and report the master down, a
  failover under way or a new master. Then *nobody* can take a lease or move an epoch either: both need
  Redis. A primary that keeps serving harms no one, and it renews the moment Redis answers again.
  Stopping instead turned every Redis restart and every Sentinel promotion (3 s, longer than the 2.25 s
  self-fence limit of a 3 s lease) into a fleet-wide self-demotion storm.
* **This node is cut off** — timeouts, an unreachable network, no sentinel answering, or sentinels that
  see the master up while we cannot reach it. The rest of the fleet may well reach Redis, see our lease
  expire and promote a standby, so we stop within ``lease_ttl - safety`` of the last renewal, as always.

Why riding out "Redis is down" stays safe: while Redis is down no one can fence or promote. When it comes
back, the lease may be gone (it expired during the outage), but a failover still needs the detector to
declare this node dead — it gives nodes a grace to beat again after a Redis outage before suspecting
anyone — and then the planner waits the lease margin before fencing. This node, if it can reach Redis
again, renews within one retry; if it cannot (the outage ended and now *it* is cut off), its failed
attempts read as timeouts and it stops at once, since its last renewal is long past. The last proof that
Redis was down counts like a renewal: a primary whose checks stall (a frozen process) stops within
``lease_ttl - safety`` of that proof, the same budget a missed renewal has.

Where that ends: "refused" is trusted. A node whose own path to Redis answers with resets or refusals
while the rest of the fleet reaches Redis (a REJECT firewall rule, a local proxy whose upstream is gone)
looks to itself like a Redis outage and keeps serving while the others fail it over. The fencing token
still refuses its role-guarded writes (they check the epoch at Redis and fail when it cannot be read), and
no outage is ridden out longer than ``tolerance`` (the blueprint's ``redis_outage_tolerance``): past that,
the primary stops whatever the cause. With Sentinel, a node that times out against a master the sentinels
call healthy is cut off; a refusal still reads as "down" (the sentinels need their down-after time to
notice a dead master, and would call it healthy until then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Cause = Literal["redis-down", "cut-off"]
REDIS_DOWN: Cause = "redis-down"
CUT_OFF: Cause = "cut-off"

# symptoms that prove the Redis side answered (the host, or Redis itself in a transitional state)
ANSWERED = ("refused", "busy")


class SentinelView(Protocol):
    """What the sentinels said when asked (``continuity.redisd.SentinelReport`` has these)."""

    answered: int
    failing_over: bool


@dataclass(frozen=True)
class Verdict:
    """The decision for one failed attempt: its cause and a line for the log."""

    cause: Cause
    why: str


def classify(symptom: str, sentinels: SentinelView | None = None) -> Verdict:
    """Redis down / failing over, or this node cut off, from one failed round trip.

    ``symptom`` is one of ``refused``, ``busy``, ``no-master``, ``timeout``, ``reset``, ``other``;
    ``sentinels`` is what the sentinels said when asked after the failure (None: no Sentinel here).
    """
    if symptom in ANSWERED:
        what = "refused the connection" if symptom == "refused" else "answered with a transitional state"
        return Verdict(REDIS_DOWN, f"the Redis host {what}")
    if sentinels is not None:
        if sentinels.answered and sentinels.failing_over:
            return Verdict(REDIS_DOWN, f"{sentinels.answered} sentinel(s) report the master down or changing")
        if not sentinels.answered:
            return Verdict(CUT_OFF, "no sentinel answered")
        return Verdict(CUT_OFF, f"the sentinels see the master up, but it did not answer us ({symptom})")
    return Verdict(CUT_OFF, f"no answer from Redis ({symptom})")


def must_stop(now: float, renewed_at: float, down_at: float | None, limit: float,
              tolerance: float) -> str | None:
    """Why a primary must stop now, or None while it may keep its role.

    ``renewed_at``: when the last renewal that succeeded was *sent*; ``down_at``: when the latest failed
    attempt was sent, if it proved Redis down (None when the latest failure read as being cut off, or
    nothing failed); ``limit``: ``lease_ttl - safety``; ``tolerance``: the longest outage ridden out.
    """
    silent = now - renewed_at
    if silent <= limit:
        return None
    if down_at is not None and down_at >= renewed_at:
        if silent > tolerance:
            return f"Redis down for {silent:.1f}s, longer than the {tolerance:g}s an outage is ridden out"
        if now - down_at <= limit:
            return None
        return (f"lease not renewed for {silent:.2f}s and Redis last seen down {now - down_at:.2f}s ago "
                f"(limit {limit:.2f}s)")
    return f"lease not renewed for {silent:.2f}s (limit {limit:.2f}s)"
