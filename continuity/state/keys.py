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


def task_seen(digest: str) -> str:
    """String ``running``/``done`` per signed control-plane message (by signature digest), with a TTL to its expiry."""
    return k("task-seen", digest)


# --- pulse history -----------------------------------------------------------
def pulse_stream() -> str:
    return k("pulse")


def pulse_seen() -> str:
    """Sorted set event id -> arrival (stream ms) of the most recently delivered events, trimmed to a
    bound: a spooled event is delivered once, and the dedup record cannot grow forever."""
    return k("pulse", "seen")


def pulse_counts() -> str:
    """Hash ``<kind>|<service>`` -> events of that kind delivered into the stream (never trimmed, never expires)."""
    return k("pulse", "counts")


def pulse_verify() -> str:
    """Hash ``<host>|<file>`` -> JSON of the last verification of that host's history file."""
    return k("pulse", "verify")


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


def detector_leader() -> str:
    """Hash {id, node, host, pid, since, term} of the control worker that runs the detector, with a short TTL
    (the leader lease): renewed by every sweep, so a dead leader's standby takes over within the TTL."""
    return k("detector", "leader")


def detector_term() -> str:
    """Counter bumped each time a detector process takes the leader lease (the term in events and status)."""
    return k("detector", "term")


def detector_sweeps() -> str:
    """Stream of recent sweeps (Redis time, gap since the one before, leader node, term), trimmed to a few
    minutes: how regularly the detector has been watching, for status, benchmarks and tests."""
    return k("detector", "sweeps")


def detector_generation() -> str:
    """Counter bumped by every completed sweep: a sweeper whose last sweep was the latest may trust its memory."""
    return k("detector", "gen")


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


def failover_resume(service_id: str | None = None) -> str:
    """JSON resume statement signed by an operator (:func:`continuity.pause_auth.sign_resume`): which pause note
    ``failover resume`` ended, so the detector can tell a resume from a bare deletion of the note."""
    return k("failover", "resume", service_id or "*all*")


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


# --- notifications -------------------------------------------------------------
def notify_cursor() -> str:
    """The pulse stream id up to which events were turned into webhook deliveries."""
    return k("notify", "cursor")


def notify_deliveries() -> str:
    """Hash ``<webhook>|<event id>`` -> JSON of one delivery (pending, delivered or given up)."""
    return k("notify", "deliveries")


def notify_due() -> str:
    """Sorted set of pending delivery ids by the time of their next attempt."""
    return k("notify", "due")


def notify_done() -> str:
    """Sorted set of finished delivery ids by finish time (trimmed, with their hash entries)."""
    return k("notify", "done")


def notify_claim(delivery_id: str) -> str:
    """The token of the loop posting ``delivery_id`` now; its TTL frees it if that loop dies."""
    return k("notify", "claim", delivery_id)


def notify_stats() -> str:
    """Hash ``<webhook>|delivered`` / ``<webhook>|given_up`` -> count."""
    return k("notify", "stats")


def notify_episodes() -> str:
    """Hash condition key -> JSON of its open episode (a stale backup, an overdue pause, a lagging standby)."""
    return k("notify", "episodes")


def notify_check_at() -> str:
    """The time the watched conditions are next due to be judged (one judge per interval, fleet-wide)."""
    return k("notify", "check_at")


# --- backups -----------------------------------------------------------------
def backup_status(set_id: str) -> str:
    """Hash: last snapshot, last verified-restorable snapshot, their times and RPO age."""
    return k("backup", set_id)


# --- replication ---------------------------------------------------------------
def replication_lag(service_id: str) -> str:
    """Hash ``<standby>|<source>`` -> JSON lag of one standby's copy of one source, written by the primary's
    replicator (it sees both ends). No TTL: a reader judges freshness from the ``updated`` field."""
    return k("replication", "lag", service_id)


def replication_applied(service_id: str) -> str:
    """Hash ``<node>|<source>`` -> JSON position a node has applied (durably) of one source, written by that node."""
    return k("replication", "applied", service_id)


def replication_committed(service_id: str) -> str:
    """Hash ``<source>`` -> JSON committed position of the role (:class:`continuity.state.replication.Committed`):
    what the fleet acknowledged, at which epoch; only ever raised, and re-based by a failover's prepare step."""
    return k("replication", "committed", service_id)


def replication_mode(service_id: str) -> str:
    """JSON {mode, primary, epoch, since, reason}: sync, or degraded to async for want of standbys."""
    return k("replication", "mode", service_id)


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


def drill_halt() -> str:
    """JSON halt request {drill, who, at, reason} the running drill's runner polls between probe rounds."""
    return k("drill", "halt")


def postmortem_actions() -> str:
    """Hash ``<item>#<n>`` -> signed statement (JSON) of a postmortem action item's trail (continuity/actions.py);
    verified on every read, never trusted for being here. No TTL: an open item stays until it is closed."""
    return k("postmortem-actions")


def approvals(subject: str) -> str:
    """Hash approver key id -> signed approval statement (JSON) for ``subject``; verified on every use, never
    trusted for being here. The TTL is housekeeping (the longest statement's expiry), not the validity."""
    return k("approvals", subject)


def drill_link(node_id: str) -> str:
    """Hash: status of the node's Redis-link proxy (listen, upstream, applied delay, drop), refreshed live."""
    return k("drill", "link", node_id)


def drill_link_fault(node_id: str) -> str:
    """JSON fault the node's link proxy must apply ({delay_ms, jitter_ms, drop}); its TTL is a dead-man switch."""
    return k("drill", "link", node_id, "fault")

