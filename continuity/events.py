"""The pulse event catalogue: every kind of event the layer writes, the fields it carries, who writes it.

Before this module, event kinds were string literals at ~50 call sites and the
readers (``drills/measure.py``, ``report.py``) guessed: which of
``record_id|failover_id|record|id`` names the failover record, which of four
"start" words is the one really emitted. A reader now imports the constant the
writer uses, so renaming a kind or a field is one edit that both sides see, and
``tests/unit/test_events.py`` proves statically that every emitter passes a
constant from here with only the fields declared here.

The wire format is unchanged: an event in the stream and the history file is
``{"kind": "continuity_layer.<name>", "node", "service", "epoch", "data": {...}}``;
the catalogue describes the names and the keys of ``data``. Old histories
still verify and read, because nothing about the bytes changed.

``docs/continuity/events.md`` is generated from this module
(``python -m continuity.events > docs/continuity/events.md``); a unit test
fails when the checked-in file drifts. Import-light on purpose (standard
library only): the CLI lists kinds and every emitter imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

PREFIX = "continuity_layer."

# Tests set this True (tests/conftest.py): an undeclared field then raises, and is also noted in VIOLATIONS
# because several emitters swallow any error of their bookkeeping (the agent, the sweep, the drill runner);
# the test session fails on a non-empty list. Production leaves STRICT False so a field someone forgot to
# declare is logged, never allowed to crash a failover step (see check_fields).
STRICT = False
VIOLATIONS: list[str] = []


class UndeclaredField(ValueError):
    """An emitter passed a ``data`` key its kind does not declare: a programming error, caught in tests."""


@dataclass(frozen=True)
class Field:
    """One key of an event's ``data``: its name, its JSON type as Python spells it, and what it means."""

    name: str
    type: str
    meaning: str


@dataclass(frozen=True, eq=False)
class EventKind:
    """One kind of pulse event.

    ``name`` is the short kind ("failover.started"); on the wire it carries :data:`PREFIX`.
    ``fields`` are the keys ``data`` may hold (an emitter may leave any out: a missing value
    is ``None`` to a reader). ``extra`` is empty for a closed kind; for the few kinds whose
    ``data`` also carries a result dict owned by other code (a failover step's result) it says
    which, and undeclared keys are then allowed. ``reserved`` names a kind readers handle but
    nothing emits today, with the reason it stays.

    A kind compares equal to its short name (and hashes like it) so code and tests that match
    recorded kinds as strings, e.g. fake pulse writers, keep working whichever they receive.
    """

    name: str
    description: str
    emitter: str
    fields: tuple[Field, ...] = ()
    extra: str = ""
    reserved: str = ""

    @property
    def wire(self) -> str:
        """The kind as written to the stream and the history file."""
        return PREFIX + self.name

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventKind):
            return self.name == other.name
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def undeclared(self, data: Mapping[str, Any] | None) -> list[str]:
        """Keys of ``data`` this kind does not declare (always none for a kind with ``extra``)."""
        if not data or self.extra:
            return []
        declared = self.field_names
        return sorted(str(k) for k in data if k not in declared)


def check_fields(kind: EventKind, data: Mapping[str, Any] | None) -> None:
    """Refuse (tests) or report (production) ``data`` keys the kind does not declare.

    An undeclared field is a programming error: the catalogue, the docs and every
    reader would not know it. Tests run with :data:`STRICT` on, so the emitter's own
    test fails with :class:`UndeclaredField`. In production the event is still written
    whole and a warning is logged: emits sit inside failover steps, fencing and the
    agent's self-demotion, and losing the record of a failover, or failing the failover
    itself, over a documentation mistake would be far worse than one extra key.
    """
    bad = kind.undeclared(data)
    if not bad:
        return
    msg = f"pulse event {kind.name}: undeclared field(s) {', '.join(bad)} (declare them in continuity/events.py)"
    if STRICT:
        VIOLATIONS.append(msg)
        raise UndeclaredField(msg)
    log.warning("%s", msg)


KINDS: dict[str, EventKind] = {}


def _kind(name: str, description: str, emitter: str, *fields: Field, extra: str = "",
          reserved: str = "") -> EventKind:
    kind = EventKind(name, description, emitter, tuple(fields), extra, reserved)
    assert name not in KINDS, f"event kind {name} declared twice"
    assert len(kind.field_names) == len(fields), f"event kind {name} declares a field twice"
    KINDS[name] = kind
    return kind


def _f(name: str, type_: str, meaning: str) -> Field:
    return Field(name, type_, meaning)


# --- shared fields -------------------------------------------------------------------------------------------------
RECORD = _f("record", "str", "failover record id (`continuity failover history`)")
AT = _f("at", "float", "wall-clock time (unix seconds) it happened")
HOOK_RC = _f("hook_rc", "int | None", "exit code of the service hook (None: no hook declared)")
REASON = _f("reason", "str", "why, in words")
WHO = _f("who", "str", "operator or component that asked: `detector`, or `name [key <key id>]` for an operator "
                       "with an operator key (`name [unauthenticated]` without one)")
SCOPE = _f("scope", "str", "the service paused/resumed, or `all`")
DRILL = _f("drill", "str", "drill id")
SET = _f("set", "str", "backup set name (ops/backup/continuity.yml)")
ERROR = _f("error", "str", "the error, in words")
# what finish() puts in every failover.<outcome> event
_OUTCOME = (
    RECORD,
    _f("outcome", "str", "succeeded | failed | escalated | superseded"),
    _f("mttr", "float | None", "seconds from the old primary's last sign of life to the new one verified"),
    _f("detection", "float | None", "seconds from last seen to declared dead"),
    _f("duration", "float | None", "seconds from the record opening to its closing"),
    WHO,
    _f("from", "str | None", "old primary node"),
    _f("to", "str | None", "new primary node"),
)
# a detector transition (detector.Transition.as_dict() plus last_seen)
_TRANSITION = (
    _f("node", "str", "the node"),
    _f("from", "str", "previous detector state"),
    _f("to", "str", "new detector state"),
    AT,
    _f("silence", "float | None", "seconds since its last heartbeat"),
    _f("last_seen", "float | None", "arrival time of its last heartbeat"),
)
# detector trigger handed to failover (sweep._fail_over / _fail_failed_services) plus the plan count
_TRIGGER = (
    _f("by", "str", "`detector`"),
    REASON,
    _f("dead", "list[str]", "nodes declared dead (node failure)"),
    _f("service", "str", "the failed service (service failure)"),
    _f("failed_on", "str", "node that gave the service up (service failure)"),
    _f("epoch", "int", "epoch the service failed at (service failure)"),
    _f("detail", "str | None", "the node's reason for giving up (service failure)"),
    _f("restarts", "int | None", "local restarts tried before giving up (service failure)"),
    _f("given_up_at", "float | None", "when the node gave up (service failure)"),
    _f("detected_at", "float", "sweep time of the decision"),
    _f("last_seen", "dict[str, float]", "node -> last sign of life"),
    _f("plans", "int", "failovers the planner produced"),
)
_ROLLBACK = (DRILL, _f("ok", "bool", "every rollback action succeeded"),
             _f("ran", "list", "rollback actions run"), _f("errors", "list[str]", "failed actions"))
_BACKUP_FAILED = (SET, ERROR, _f("exit_code", "int", "the engine's exit code (restic conventions)"))
_VERIFY = (SET, _f("snapshot", "str", "snapshot id restored"), _f("ok", "bool", "every check passed"),
           _f("files", "int", "files checked"), _f("damaged", "list", "damaged files/snapshots"),
           _f("hash_mismatches", "int", "blobs whose hash did not match"),
           _f("duration", "float", "seconds the restore drill took"))

# --- failover: records, steps, controls (continuity/failover, workers/failover.py) --------------------------------
FAILOVER_STARTED = _kind(
    "failover.started", "A failover or switchover record was opened; its chain is about to run.",
    "continuity/failover/records.py (open_record)",
    RECORD, _f("kind", "str", "failover | switchover | forced"), WHO, _f("from", "str | None", "old primary node"),
    _f("to", "str | None", "candidate node"), REASON,
    _f("detection", "float | None", "seconds from last seen to declared dead"),
    _f("trigger", "dict", "what triggered it (detector trigger or operator request)"))
FAILOVER_STEP = _kind(
    "failover.step", "One step of a failover chain finished (ok or not), with its duration.",
    "continuity/failover/records.py (step_finished)",
    RECORD, _f("attempt", "int", "attempt number (0 first, +1 per fallback candidate)"),
    _f("step", "str", "demote | fence | prepare | promote | repoint | verify | record"),
    _f("ok", "bool", "the step succeeded"), _f("duration", "float", "seconds the step took"), ERROR,
    extra="the step's own result dict (the return value of continuity/failover/steps.py:<step>)")
FAILOVER_COMPLETED = _kind(
    "failover.completed", "A failover record closed as succeeded: the new primary is verified.",
    "continuity/failover/records.py (finish)",
    *_OUTCOME, _f("node", "str", "new primary"), _f("epoch", "int", "epoch it serves"),
    _f("attempt", "int", "attempt that succeeded"))
FAILOVER_FAILED = _kind(
    "failover.failed", "A failover record closed as failed.", "continuity/failover/records.py (finish)",
    *_OUTCOME, REASON,
    reserved="records.finish maps the final outcome `failed` to it; today failed chains escalate instead, "
             "but the outcome stays valid for records and for tools reading older histories")
FAILOVER_ESCALATED = _kind(
    "failover.escalated", "No usable candidate was left: the record closed and an incident was opened for a human.",
    "workers/failover.py (_escalate via records.finish)", *_OUTCOME, REASON)
FAILOVER_SUPERSEDED = _kind(
    "failover.superseded", "The failover stopped because someone else holds the role at a newer epoch.",
    "workers/failover.py (via records.finish)", *_OUTCOME, REASON, _f("step", "str", "step that found out"))
FAILOVER_DEMOTED = _kind(
    "failover.demoted", "Switchover: the old primary ran its demote hook and released its lease.",
    "continuity/failover/steps.py (demote)",
    RECORD, _f("released", "bool", "the lease was released"), _f("how", "str", "`switchover`"))
FAILOVER_FENCED = _kind(
    "failover.fenced", "The service's epoch moved forward: writers with the old epoch are refused from now on.",
    "continuity/failover/steps.py (fence)",
    RECORD, _f("from_epoch", "int", "epoch before the bump"), _f("old_primary", "str | None", "old primary node"))
FAILOVER_PROMOTED = _kind(
    "failover.promoted", "The candidate took the role's lease at the new epoch (its start hook runs next).",
    "continuity/failover/steps.py (promote)",
    RECORD, _f("lease_ttl", "float", "lease time-to-live (seconds)"))
FAILOVER_PAUSED = _kind(
    "failover.paused", "Automatic failover paused for a service or for all (maintenance).",
    "continuity/failover/control.py (pause)", WHO, SCOPE, REASON,
    _f("until", "float | None", "declared end of the pause (unix time); None: until `resume`"))
FAILOVER_RESUMED = _kind(
    "failover.resumed", "A failover pause was lifted.", "continuity/failover/control.py (resume)",
    WHO, SCOPE, _f("was_paused", "bool", "a pause was in force"),
    _f("signer", "str | None", "operator key id that signed the resume statement"))
FAILOVER_PAUSE_REJECTED = _kind(
    "failover.pause_rejected", "A failover pause note in Redis is not signed by a trusted operator key (forged, "
    "altered, or written without `continuity failover pause`): automatic failover ignores it. At most once a "
    "minute per note and reason in each detector. Also: an operator-signed note the detector honoured was removed "
    "without a signed `failover resume` (once per removal): it still pauses failover until its declared end.",
    "continuity/detect/sweep.py (_planning, _sweep_locked)",
    SCOPE, _f("reason", "str", "why the note does not count"), _f("signer", "str | None", "key id it names"))
FAILOVER_INCIDENT_RESOLVED = _kind(
    "failover.incident_resolved", "An operator closed an open incident: drills may run again.",
    "continuity/cli/failover/incident.py (resolve)",
    WHO, _f("id", "str", "incident id"), _f("note", "str", "what the operator wrote"),
    _f("incident", "dict", "the incident as it was (kind, service, reason, opened, record)"))
FAILOVER_RETRY = _kind(
    "failover.retry", "A step failed on the candidate; the chain starts again on the next fallback.",
    "workers/failover.py (_after_failure)",
    RECORD, _f("failed", "str", "candidate that failed"), _f("step", "str", "step that failed"), ERROR,
    _f("next", "str", "next candidate"), _f("attempt", "int", "new attempt number"))
FAILOVER_CHAIN_RESUMED = _kind(
    "failover.chain_resumed", "The watchdog re-sent a chain whose worker stopped making progress.",
    "workers/failover.py (watchdog)",
    RECORD, _f("attempt", "int", "attempt number"), _f("step", "str", "pending step re-sent"),
    _f("idle", "float", "seconds without progress"))
FAILOVER_SELF_DEMOTED = _kind(
    "failover.self_demoted", "A node's agent stopped acting as primary (lease lost, or the service failed).",
    "continuity/detect/agent.py", REASON, HOOK_RC, AT,
    _f("decided_at", "float", "wall time the agent gave the role up (its demote hook ran after, on the lane)"))
FAILOVER_SELF_REPROMOTED = _kind(
    "failover.self_repromoted", "An agent started again a service it had stopped only because Redis was "
    "unreachable; the role was still its own.", "continuity/detect/agent.py (_reclaim)", HOOK_RC)
FAILOVER_SERVICE_RESTARTED = _kind(
    "failover.service_restarted", "An agent restarted a failing service in place (local recovery ladder).",
    "continuity/detect/agent.py",
    REASON, _f("failures", "int", "consecutive failed probes"), _f("restarts", "int", "local restarts so far"),
    _f("max_local_restarts", "int", "restarts allowed before giving up"),
    _f("since", "float | None", "first failed probe"), AT, HOOK_RC)
FAILOVER_SERVICE_FAILED = _kind(
    "failover.service_failed", "An agent gave a service up: stopped, lease released, marked failed so the "
    "detector moves it.", "continuity/detect/agent.py (_give_up)",
    REASON, _f("restarts", "int", "local restarts tried"), _f("released", "bool | None", "the lease was released"),
    _f("since", "float | None", "first failed probe"), AT)
FAILOVER_SERVICE_DEMOTED = _kind(
    "failover.service_demoted",
    "The sample ledger service stopped serving itself: its role's lease is no longer its own.",
    "continuity/sample/ledger_service.py",
    REASON, _f("pid", "int", "the service's process id"), AT, _f("records", "int", "ledger records it held"))

# --- detection (continuity/detect) ----------------------------------------------------------------------------------
DETECT_LEASE_RETAKEN = _kind(
    "detect.lease_retaken", "An agent found its lease key gone (Redis lost it) and took it back at the same epoch.",
    "continuity/detect/agent.py", REASON)
DETECT_REDIS_OUTAGE = _kind(
    "detect.redis_outage", "A node's agent reached Redis again after failed beats; roles it kept through the outage "
    "(Redis down or failing over, see continuity/detect/outage.py) were renewed.", "continuity/detect/agent.py",
    _f("since", "float", "wall time of the first failed beat"), _f("seconds", "float", "length of the outage"),
    _f("causes", "list[str]", "how the failed beats read: redis-down and/or cut-off"),
    _f("attempts", "int", "failed beats"), _f("last", "str", "the last failure, in words"),
    _f("kept", "list[str]", "services this node still held as primary when Redis answered"), AT)
DETECT_ROLE_BOOTSTRAPPED = _kind(
    "detect.role_bootstrapped", "First start of the fleet: the blueprint's primary took epoch 1 of a service.",
    "continuity/detect/agent.py (_bootstrap)", HOOK_RC)
DETECT_HOOK_TIMED_OUT = _kind(
    "detect.hook_timed_out", "A service hook run by a node's agent outlived its timeout; its lane went on without "
    "it (the hook was reported failed).", "continuity/detect/agent.py (_hook_timed_out)",
    _f("hook", "str", "start | demote"), _f("timeout", "float", "seconds the hook was allowed"), AT)
DETECT_HEARTBEAT_REJECTED = _kind(
    "detect.heartbeat_rejected", "A heartbeat failed authentication or parsing and was ignored.",
    "continuity/detect/sweep.py", _f("reason", "str", "short code (unsigned, bad-signature, unknown-node, ...)"),
    _f("detail", "str", "details"))
DETECT_CLAIM_REJECTED = _kind(
    "detect.claim_rejected", "A node claim in Redis (a service-failed marker) is not signed by the node it names: "
    "nothing was done on it.",
    "continuity/detect/sweep.py",
    _f("reason", "str", "unsigned | bad-signature | unknown-node | other-service (signed for another service)"),
    _f("claim", "str", "which claim (service-failed)"), _f("claimed_node", "str", "the node it names"))
DETECT_NODE_SUSPECT = _kind(
    "detect.node_suspect", "A node's heartbeats are late: suspected, not yet dead.", "continuity/detect/sweep.py",
    *_TRANSITION)
DETECT_NODE_DEAD = _kind(
    "detect.node_dead", "A node was declared dead; its services become failover candidates.",
    "continuity/detect/sweep.py", *_TRANSITION)
DETECT_NODE_ALIVE = _kind(
    "detect.node_alive", "A node is (again) sending heartbeats on time.", "continuity/detect/sweep.py", *_TRANSITION)
DETECT_NODE_EXPECTED_OFFLINE = _kind(
    "detect.node_expected_offline", "A node went silent inside a planned contact gap (satellite): not failed over.",
    "continuity/detect/sweep.py", *_TRANSITION)
DETECT_TILT = _kind(
    "detect.tilt", "The detector's own timing is suspect (its process stood still between two of its sweeps, or "
    "Redis's clock jumped): nobody is declared dead until the tilt grace ends.",
    "continuity/detect/sweep.py",
    _f("gap", "float | None", "seconds between the last two sweeps (Redis time)"),
    _f("own_gap", "float | None", "seconds between this process's last two sweeps (its monotonic clock)"),
    _f("until", "float", "end of the grace"), REASON)
DETECT_TILT_ENDED = _kind("detect.tilt_ended", "The tilt grace period ended; the detector acts again.",
                          "continuity/detect/sweep.py", AT)
DETECT_GRACE_STARTED = _kind(
    "detect.grace_started", "A gap in the detector's view (Redis unreachable, a new leader that did not watch "
    "through the gap, the detector's own pause): every node gets a grace to beat again before it can be suspected, and "
    "nothing fails over meanwhile.", "continuity/detect/sweep.py",
    _f("reason", "str", "redis-unreachable | leader-changed | paused | clock-jump"),
    _f("gap", "float | None", "seconds since the last sweep before the gap (Redis time)"),
    _f("at", "float", "Redis time of the first sweep after the gap"), _f("until", "float", "end of the grace"))
DETECT_GRACE_ENDED = _kind("detect.grace_ended", "The grace after a gap in the detector's view ended; silent nodes "
                           "are judged again.", "continuity/detect/sweep.py", AT)
DETECT_LEADER_ELECTED = _kind(
    "detect.leader_elected", "A control worker took the detector's leader lease and runs the sweeps from now on.",
    "continuity/detect/loop.py",
    _f("pid", "int", "process id of the worker (its main process)"), _f("host", "str", "host name"),
    _f("term", "int", "leader term (one more for every new holder)"),
    _f("previous", "str | None", "holder id of the last lease seen held by another process"),
    _f("at", "float", "Redis time the lease was taken"))
DETECT_LEADER_RESIGNED = _kind(
    "detect.leader_resigned", "The detector leader stopped sweeping: it could not renew its lease (Redis unreachable, "
    "another process took it) or its worker is shutting down.", "continuity/detect/loop.py",
    _f("pid", "int", "process id of the worker"), _f("term", "int", "the term that ended"), REASON)
DETECT_STORM = _kind(
    "detect.storm", "More nodes died at once than the storm brake allows: automatic failover halted, incident "
    "opened.", "continuity/detect/sweep.py",
    _f("id", "str", "incident id"), _f("kind", "str", "`failover-storm`"), _f("opened", "float", "when"),
    _f("dead", "list[str]", "dead nodes"), _f("fraction", "float", "dead fraction of the fleet"), REASON)
DETECT_STORM_CLEARED = _kind("detect.storm_cleared", "The failover storm brake released.",
                             "continuity/detect/sweep.py", AT, _f("dead", "list[str]", "nodes still dead"))
DETECT_MODE_CHANGED = _kind(
    "detect.mode_changed", "The fleet's continuity mode changed (e.g. normal -> degraded).",
    "continuity/detect/sweep.py",
    _f("from", "str | None", "previous mode"), _f("to", "str", "new mode"),
    _f("unhealthy", "list[str]", "services counted unhealthy"), _f("shed_tiers", "list[int]", "tiers shed"))
DETECT_FAILOVER_REQUESTED = _kind(
    "detect.failover_requested", "The detector handed dead nodes (or a failed service) to the failover planner.",
    "continuity/detect/sweep.py", *_TRIGGER)
DETECT_FAILOVER_LAUNCH_FAILED = _kind(
    "detect.failover_launch_failed", "Launching the planned failover chains failed (retried on the next sweep).",
    "continuity/detect/sweep.py", ERROR, _f("dead", "list[str]", "dead nodes (node failure)"),
    _f("service", "str", "the failed service (service failure)"))

# --- drills (continuity/drills/runner.py) ----------------------------------------------------------------------------
DRILL_REFUSED = _kind("drill.refused", "A drill was refused by its safety guards (incident open, degraded, ...).",
                      "continuity/drills/runner.py", DRILL, _f("scenario", "str", "scenario name"), REASON)
DRILL_STARTED = _kind("drill.started", "A drill started (steady state is checked next).",
                      "continuity/drills/runner.py", DRILL, _f("scenario", "str", "scenario name"),
                      _f("target", "dict", "resolved target plan"), _f("fault", "str", "fault type"),
                      _f("approvals", "list[dict]", "steward approvals it ran under ({name, key_id, at, expires}); "
                                                    "empty when none was needed"))
DRILL_FAULT_INJECTED = _kind(
    "drill.fault_injected", "The drill's fault was injected (its rollback was registered before).",
    "continuity/drills/runner.py", DRILL, _f("fault", "str", "fault type"), _f("action", "str", "what was done"),
    _f("detail", "dict", "injector's record"), _f("nodes", "list[str]", "target nodes"),
    _f("services", "list[str]", "target services"))
DRILL_ROLLBACK = _kind("drill.rollback", "The drill's registered rollbacks ran.", "continuity/drills/runner.py",
                       *_ROLLBACK)
DRILL_ROLLBACK_RECOVERED = _kind(
    "drill.rollback_recovered", "Rollbacks left by a crashed drill were finished on the next start.",
    "continuity/drills/runner.py (recover)", *_ROLLBACK)
DRILL_ROLLBACK_FAILED = _kind(
    "drill.rollback_failed", "Finishing the rollbacks of a crashed drill failed; they are retried.",
    "continuity/drills/runner.py (recover)", *_ROLLBACK)
DRILL_FINISHED = _kind(
    "drill.finished", "A drill finished (or was halted), with its measurements.", "continuity/drills/runner.py",
    DRILL, _f("scenario", "str", "scenario name"), _f("status", "str", "passed | failed | aborted | halted"),
    _f("mttr", "float | None", "seconds fault -> steady state"), _f("detection", "float | None", "seconds to detect"),
    _f("data_lost", "int | None", "acknowledged writes lost"),
    _f("achieved_rpo", "float | None", "seconds of data lost"),
    _f("failovers", "int", "failovers started during the drill"))

DRILL_HALT_REQUESTED = _kind(
    "drill.halt_requested", "An operator asked the running drill to stop; its runner stops at the next probe round "
    "and runs its rollbacks.", "continuity/cli/drill/steward.py (halt)", DRILL, WHO, REASON,
    _f("signer", "str", "operator key id that signed the request"))
DRILL_HALTED = _kind(
    "drill.halted", "The runner saw a halt request and stopped the drill (rollbacks run next). Honoured even when "
    "not signed by a trusted operator (halting is the safe direction); ``signer`` says who did sign it.",
    "continuity/drills/runner.py", DRILL, WHO, REASON, _f("phase", "str", "where it stopped: before-inject | during"),
    _f("signer", "str | None", "trusted operator key id that signed the request; None: unverified"),
    _f("unverified", "str | None", "why the request is not verified (unsigned, forged, untrusted key)"))

# --- stewardship (continuity/stewardship.py) --------------------------------------------------------------------------
APPROVAL_GRANTED = _kind(
    "approval.granted", "A steward signed an approval (a drill, a game day, a forced failover) with their operator "
    "key; it counts only while it verifies against ops/stewards.yml.", "continuity/cli/approve.py",
    WHO, _f("subject", "str", "what is approved: drill:<scenario> | game-day:<scenario> | failover:<service>"),
    _f("approver", "str", "key id of the signing steward"), _f("expires", "float", "unix time it stops counting"),
    _f("group", "str", "steward group (ops/stewards.yml)"))
POSTMORTEM_ACTION = _kind(
    "postmortem.action", "A postmortem action item was added, approved or closed: a statement signed with the "
    "operator's key (continuity/actions.py).", "continuity/cli/drill/actions.py", WHO,
    _f("item", "str", "action item id"), _f("op", "str", "add | approve | close"),
    _f("record", "str", "the drill or failover record the item came from"), _f("owner", "str", "who fixes it"),
    _f("due", "float", "unix time it is due"), _f("key_id", "str", "key id of the signer"))
FAILOVER_FORCE_APPROVED = _kind(
    "failover.force_approved", "A forced failover went ahead under a second operator's approval.",
    "continuity/cli/failover/move.py (failover --force)", WHO, _f("service", "str", "service moved"),
    _f("approvals", "list[dict]", "the counted approvals ({name, key_id, at, expires})"))

# --- backups (workers/backup.py) -------------------------------------------------------------------------------------
BACKUP_SNAPSHOT = _kind(
    "backup.snapshot", "A backup set was snapshotted.", "workers/backup.py (snapshot)",
    SET, _f("id", "str", "snapshot id"), _f("files", "int", "files"), _f("bytes_total", "int", "bytes read"),
    _f("data_added", "int", "new bytes stored"), _f("duration", "float", "seconds"),
    _f("partial", "bool", "some source files were unreadable"), _f("reused", "bool", "an identical snapshot existed"))
BACKUP_SNAPSHOT_FAILED = _kind("backup.snapshot_failed", "Snapshotting a backup set failed.",
                               "workers/backup.py (_run)", *_BACKUP_FAILED)
BACKUP_VERIFIED = _kind("backup.verified", "A restore drill restored a snapshot elsewhere and every check passed.",
                        "workers/backup.py (verify)", *_VERIFY)
BACKUP_VERIFY_FAILED = _kind(
    "backup.verify_failed", "A restore drill failed: it could not run (error) or found damage (checks).",
    "workers/backup.py (verify, _run)", *_VERIFY, ERROR, _BACKUP_FAILED[2])
BACKUP_FORGET = _kind("backup.forget", "Snapshots were forgotten by the retention policy.",
                      "workers/backup.py (forget)", SET, _f("removed", "int", "snapshots removed"))
BACKUP_FORGET_FAILED = _kind("backup.forget_failed", "Applying the retention policy failed.",
                             "workers/backup.py (_run)", *_BACKUP_FAILED)
BACKUP_COPY = _kind("backup.copy", "A backup repository was replicated to its targets.", "workers/backup.py (copy)",
                    SET, _f("ok", "bool", "every target got every snapshot"), _f("targets", "list", "per target"))
BACKUP_COPY_FAILED = _kind("backup.copy_failed", "Replicating a backup repository failed.",
                           "workers/backup.py (_run)", *_BACKUP_FAILED)

# --- replication (continuity/replication) ---------------------------------------------------------------------------
SOURCE = _f("source", "str", "the replicated source: file or directory name in the service's directory")
STANDBY = _f("standby", "str", "the standby node")
PRIMARY = _f("primary", "str", "the primary node (the lease holder the data comes from)")
REPLICATION_RESUMED = _kind(
    "replication.resumed", "A standby (re)connected to its primary and continues from the position it holds: "
    "no full copy unless it held nothing.", "continuity/replication/follower.py",
    SOURCE, STANDBY, PRIMARY, _f("offset", "int", "byte offset it continues from"),
    _f("count", "int | None", "records it already holds (ledgers)"),
    _f("behind", "int | None", "records the primary had beyond that when it resumed"),
    _f("full_copy", "bool", "it held nothing and copies everything"),
    _f("session", "int", "sessions of this standby since its replicator started"))
REPLICATION_DIVERGED = _kind(
    "replication.diverged", "A standby held records its primary does not have (it was primary once and its tail "
    "was never replicated, or the new primary started from less): the tail was cut off and kept aside, never "
    "merged.", "continuity/replication/follower.py",
    SOURCE, STANDBY, PRIMARY, _f("kept", "str", "file the cut tail was kept in (on the standby)"),
    _f("records", "int", "records cut"), _f("bytes", "int", "bytes cut"),
    _f("at", "int", "record count both histories share"))
REPLICATION_REFUSED = _kind(
    "replication.refused", "A replicator refused a peer or its data: forged or altered frames, a sender that does "
    "not hold the lease, an epoch below one already applied, a node that is no standby. At most one per peer "
    "and reason a minute.", "continuity/replication/follower.py (and server.py)",
    SOURCE, _f("peer", "str", "the other node (as it claimed to be)"), REASON,
    _f("detail", "str", "what exactly"), _f("side", "str", "primary | standby: which side refused"))
REPLICATION_LAG_HIGH = _kind(
    "replication.lag_high", "A standby's copy fell further behind than policy.replication.lag_alert.",
    "continuity/replication/node.py", SOURCE, STANDBY, PRIMARY,
    _f("lag_seconds", "float", "age of the oldest change it lacks"),
    _f("lag_records", "int | None", "records it lacks (ledgers)"), _f("threshold", "float", "lag_alert"),
    _f("state", "str", "streaming | catchup | disconnected"))
REPLICATION_LAG_OK = _kind(
    "replication.lag_ok", "A standby that was reported behind is within policy.replication.lag_alert again.",
    "continuity/replication/node.py", SOURCE, STANDBY, PRIMARY, _f("lag_seconds", "float", "its lag now"),
    _f("lasted", "float", "seconds it was behind"))
REPLICATION_DEGRADED = _kind(
    "replication.degraded", "A sync-mode service acknowledges writes without standbys (on_no_standby: degrade), "
    "for want of reachable ones.", "continuity/replication/node.py",
    SOURCE, PRIMARY, REASON, _f("need", "int", "standbys sync mode waits for"))
REPLICATION_SYNC_RESTORED = _kind(
    "replication.sync_restored", "A degraded sync-mode service waits for its standbys again.",
    "continuity/replication/node.py", SOURCE, PRIMARY, _f("standbys", "list[str]", "standbys acknowledging"),
    _f("lasted", "float", "seconds it was degraded"))

# --- nodes (workers/node.py) -----------------------------------------------------------------------------------------
NODE_REGISTERED = _kind(
    "node.registered", "A node's worker started and registered itself.", "workers/node.py (register_node)",
    _f("node", "str", "node id"), _f("hostname", "str", "host"), _f("pid", "int", "worker pid"),
    _f("started", "float", "when"), _f("queue", "str", "its queue"), _f("worker", "str | None", "Celery hostname"))
NODE_PING = _kind(
    "node.ping", "Scheduled liveness job ran (and whether it ran on the node it was meant for).",
    "workers/node.py (ping)",
    _f("target", "str", "node it was meant for"), _f("correct", "bool", "it ran there"),
    _f("due", "float | None", "scheduled time"), _f("task_id", "str", "Celery task id"),
    _f("lag", "float | None", "seconds late"))

# --- notifications (continuity/notify) -----------------------------------------------------------------------------
NOTIFY_GIVEN_UP = _kind(
    "notify.given_up", "A webhook notification was dropped after retrying for the configured time (the webhook was "
    "down or refused it all along).", "continuity/notify/deliver.py (Notifier)",
    _f("webhook", "str", "webhook name (ops/notifications.yml)"), _f("topic", "str", "notification topic"),
    _f("event", "str", "id of the pulse event it was about"), _f("attempts", "int", "attempts made"), ERROR)

# --- every task (workers/task.py) ----------------------------------------------------------------------------------
TASK_CRASHED = _kind(
    "task.crashed", "A Celery task raised an unexpected exception (not a domain error it reports itself); the "
    "exception is re-raised, so the task fails as before. At most one event per task and exception type per "
    "minute in each worker process, so a crash loop does not flood the history.",
    "workers/task.py (continuity_task)",
    _f("task", "str", "task name"), _f("task_id", "str | None", "Celery task id"), ERROR,
    _f("type", "str", "exception class"), _f("retries", "int", "retries of this task before this run"))

TASK_REJECTED = _kind(
    "task.rejected", "A control-plane task message was refused before anything ran: no signature envelope, a "
    "signature that does not match, expired, or signed by a key whose role may not send that task "
    "(continuity/task_auth.py), or a copy of a signed message that already ran (a replay, "
    "continuity/state/replay.py). The task fails; nothing of it runs.",
    "workers/task.py (continuity_task)",
    _f("task", "str", "task name"), _f("task_id", "str | None", "Celery task id"),
    _f("reason", "str", "why the message was refused"),
    _f("signer", "str | None", "key id the envelope names, if any"))

# --- configuration edited under a running fleet (workers/task.py) -------------------------------------------------
CONFIG_INVALID = _kind(
    "config.invalid", "A configuration file changed on disk and no longer loads; this process keeps using the "
    "last good content (detection and failover go on) until the file is fixed. Once per broken edit per process.",
    "workers/task.py (blueprint)",
    _f("file", "str", "the file that does not load"), ERROR, _f("since", "float", "unix time it was first seen"))
CONFIG_RECOVERED = _kind(
    "config.recovered", "A configuration file that was broken loads again; its new content is in force.",
    "workers/task.py (blueprint)",
    _f("file", "str", "the file"))



class EventSink(Protocol):
    """What the detector and the agent need of a pulse writer: one ``emit`` (a :class:`continuity.pulse.Pulse`,
    or a test's recorder), so they never depend on where history is kept."""

    def emit(self, kind: EventKind | str, *, node: str | None = None, service: str | None = None,
             epoch: int | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]: ...


def short(kind: str) -> str:
    """A recorded kind without :data:`PREFIX` (events written by hand or by old tools may lack it)."""
    return kind[len(PREFIX):] if kind.startswith(PREFIX) else kind


def lookup(kind: str) -> EventKind | None:
    """The catalogue entry of a recorded kind (with or without prefix), None for one the catalogue lacks."""
    return KINDS.get(short(kind))


def as_dict(kind: EventKind) -> dict[str, Any]:
    return {"name": kind.name, "wire": kind.wire, "description": kind.description, "emitter": kind.emitter,
            "fields": [{"name": f.name, "type": f.type, "meaning": f.meaning} for f in kind.fields],
            "extra": kind.extra or None, "reserved": kind.reserved or None}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(kinds: Iterable[EventKind] | None = None) -> str:
    """``docs/continuity/events.md``: deterministic, so a test can compare it with the checked-in file."""
    kinds = list(KINDS.values()) if kinds is None else list(kinds)
    lines = [
        "# Pulse events",
        "",
        "<!-- generated by `python -m continuity.events > docs/continuity/events.md`; do not edit by hand -->",
        "",
        "Every event in the pulse history (Redis Stream and `pulse_history.jsonl`) is one JSON object:",
        f"`kind` (`{PREFIX}<name>`), `node`, `service`, `epoch`, `ts`, `host`, `data`, and the chain fields",
        "`id`, `seq`, `prev`, `hash`, and `signer`, `sig` (the writer key's id and its Ed25519 signature of",
        "`hash`; see `continuity/pulse_trust.py`). This page lists every kind and the keys of its `data`;",
        "the catalogue is `continuity/events.py`, and `continuity pulse kinds [--json]` prints the same.",
        "A field may be absent or `null` when the emitter has no value for it.",
        "",
        "| kind | description | emitted by |",
        "|---|---|---|",
    ]
    lines += [f"| [`{k.name}`](#{k.name.replace('.', '')}) | {_cell(k.description)} | `{_cell(k.emitter)}` |"
              for k in kinds]
    for k in kinds:
        lines += ["", f"## {k.name}", "", k.description, "", f"Emitted by `{k.emitter}`."]
        if k.reserved:
            lines += ["", f"Reserved (not emitted today): {k.reserved}."]
        lines += ["", "| field | type | meaning |", "|---|---|---|"]
        lines += [f"| `{f.name}` | `{_cell(f.type)}` | {_cell(f.meaning)} |" for f in k.fields]
        if k.extra:
            lines += ["", f"Also carries {k.extra}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
