"""Every Redis key continuity uses, under one prefix, built in one place.

Operators grep Redis by prefix, ACLs are granted by prefix, and a second fleet
can share a server by changing it: so no other module spells a key by hand.
History keys (failover records, drill records, pulse stream) never get a TTL;
only heartbeats and leases expire, because expiry is what they mean.
"""

from __future__ import annotations

from continuity import settings


def prefix() -> str:
    """``$CONTINUITY_KEY_PREFIX`` (default ``continuity:``), read when a key is built, never at import."""
    return settings.KEY_PREFIX.get()


def k(*parts: object) -> str:
    return prefix() + ":".join(str(p) for p in parts)


# --- fleet / nodes -----------------------------------------------------------
def nodes_registry() -> str:
    """Hash node_id -> JSON {hostname, pid, started, queue} written when a worker registers."""
    return k("nodes")


def nodes_seen() -> str:
    """Hash node_id -> last-seen unix time (cheap single read for `status`)."""
    return k("nodes", "seen")


# --- pulse history -----------------------------------------------------------
def pulse_stream() -> str:
    return k("pulse")


def pulse_seen() -> str:
    """Sorted set event id -> arrival (stream ms) of the most recently delivered events, trimmed to a
    bound: a spooled event is delivered once, and the dedup record cannot grow forever."""
    return k("pulse", "seen")


# --- heartbeats, leases, detector -------------------------------------------
def heartbeats() -> str:
    """Hash node_id -> latest signed heartbeat JSON (one HGETALL per sweep)."""
    return k("hb")


def heartbeat_arrivals() -> str:
    """Hash node_id -> Redis server time the node's latest heartbeat was written (one clock for every node)."""
    return k("hb", "arrival")


def heartbeats_pending() -> str:
    """Hash node_id -> "<arrival> <signed heartbeat>" of beats stored since the last sweep drained it.

    The sweep takes (and deletes) it in one call, so its work follows the beats that arrived, not a
    re-read of every node's latest beat; at most one entry per node, so it stays bounded without a sweeper.
    """
    return k("hb", "pending")


def sweep_lock() -> str:
    """Short lock so two detector sweeps never act at once."""
    return k("detector", "lock")


def detector_generation() -> str:
    """Counter bumped by every completed sweep: a sweeper whose last sweep was the latest may trust its memory."""
    return k("detector", "gen")


def sweep_attempt() -> str:
    """Redis time of the latest sweep attempt, including ones skipped because another held the lock."""
    return k("detector", "attempt")


def lease(service_id: str) -> str:
    return k("lease", service_id)


def lease_holder(service_id: str) -> str:
    """JSON {node, epoch} of the last node that took the role's lease; no TTL, cleared by a release.

    When the lease itself vanishes (expired across a fast worker restart, lost by a Redis restart) this
    says whose role it was: that node may take it back at the same epoch unless a fence moved on.
    """
    return k("lease-holder", service_id)


def epoch(service_id: str) -> str:
    return k("epoch", service_id)


def service_failed(service_id: str) -> str:
    """JSON {node, epoch, at, since, reason}: the node gave the role up after its local restarts failed.

    Set in the same script that releases the lease (the node alive, the service not): the detector's
    sweep fails the service over from it, and the failover's verify step clears it. No TTL: a failed
    service nobody could take over must stay visible until someone does.
    """
    return k("service-failed", service_id)


def node_state() -> str:
    """Hash node_id -> detector classification JSON."""
    return k("detector", "nodes")


def detector_meta() -> str:
    return k("detector", "meta")


def mode() -> str:
    """Current continuity mode: normal | degraded | critical."""
    return k("mode")


def route(service_id: str) -> str:
    return k("route", service_id)


def routes_channel() -> str:
    return k("routes")


def failover_record(record_id: str) -> str:
    return k("failover", "record", record_id)


def failover_history() -> str:
    """Sorted set record_id by start time; records never expire."""
    return k("failover", "history")


def failover_pause(service_id: str | None = None) -> str:
    return k("failover", "pause", service_id or "*all*")


def failover_cooldown(service_id: str) -> str:
    return k("failover", "cooldown", service_id)


def step_done(service_id: str, epoch_value: int, step: str) -> str:
    """Marker that a failover step's effect happened for (service, epoch): redelivery is a no-op."""
    return k("failover", "step", service_id, epoch_value, step)


def incidents() -> str:
    """Hash incident_id -> JSON of open incidents (drills refuse to start while any is open)."""
    return k("incidents")


def config_errors() -> str:
    """Hash ``<node>|<file>`` -> JSON of a config file a running process cannot load (it keeps the last good one)."""
    return k("config", "errors")


# --- backups -----------------------------------------------------------------
def backup_status(set_id: str) -> str:
    """Hash: last snapshot, last verified-restorable snapshot, their times and RPO age."""
    return k("backup", set_id)


# --- drills --------------------------------------------------------------------
def drill_record(drill_id: str) -> str:
    return k("drill", "record", drill_id)


def drill_history() -> str:
    return k("drill", "history")


def drill_rollbacks(drill_id: str) -> str:
    """Rollbacks registered before injection; finished on the runner's next start after a crash."""
    return k("drill", "rollbacks", drill_id)


def drill_pending_rollbacks() -> str:
    return k("drill", "pending")


# --- beat ----------------------------------------------------------------------


def drill_active() -> str:
    """The running drill's id, with a short TTL the runner keeps extending: a dead runner's lock lapses."""
    return k("drill", "active")


def drill_link(node_id: str) -> str:
    """Hash: status of the node's Redis-link proxy (listen, upstream, applied delay, drop), refreshed live."""
    return k("drill", "link", node_id)


def drill_link_fault(node_id: str) -> str:
    """JSON fault the node's link proxy must apply ({delay_ms, jitter_ms, drop}); its TTL is a dead-man switch."""
    return k("drill", "link", node_id, "fault")

