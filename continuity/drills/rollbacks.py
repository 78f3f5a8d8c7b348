"""Durable rollback registry: every fault's undo is written down before the fault exists.

Chaos tools skip rollbacks when an action fails or the run is interrupted
(chaostoolkit#195, #258) and leave faults behind (chaos-mesh#2449). Here the
runner must register a rollback in a local fsync'd file (``<state>/drills/rollbacks/<id>.json``,
0600 in a 0700 directory) before it may inject; the local copy also survives faults that take Redis away.
Rollbacks run in reverse registration order on success, failure and abort; if the runner dies,
:meth:`RollbackRegistry.recover_pending` on the next start *on the same host* finishes them.

Only the local file is ever executed. A rollback is an argv/env/cwd to relaunch, pids to signal, bytes to
write back at a path: run from Redis, whoever can write a key there runs any command as the worker's user
(issue 11). So Redis gets a *summary* of each entry (index, kind, node or service, status, the host holding
the file) for ``status`` and for other hosts to see that something is pending, never its parameters; a drill
id pending in Redis without a local file here is reported as held elsewhere, never run; and a "done" mark in
Redis does not skip a step (only the host's own file says what ran).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity.state import drills as drill_state

log = logging.getLogger(__name__)

Executor = Callable[[Mapping[str, Any]], None]


class RegistrationFailed(RuntimeError):
    """Neither store accepted the rollback: the fault must not be injected."""


@dataclass
class RollbackOutcome:
    drill_id: str
    ran: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# the fields of an action Redis may show: what it is and what it is about, nothing that says how to do it
SUMMARY_FIELDS = ("kind", "node", "service", "name", "signal")


def summary(entry: Mapping[str, Any], host: str) -> dict[str, Any]:
    """The Redis copy of a local entry: no argv, env, cwd, pids, paths or bytes."""
    action = entry.get("action") or {}
    return {"idx": entry["idx"], "status": entry.get("status", "pending"), "registered": entry.get("registered"),
            "host": host, "action": {k: action[k] for k in SUMMARY_FIELDS if k in action}}


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class RollbackRegistry:
    def __init__(self, client: Any, local_dir: Path, executors: Mapping[str, Executor],
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.local_dir = Path(local_dir)
        self.executors = executors
        self.clock = clock
        self.host = socket.gethostname()

    # --- storage ---------------------------------------------------------------
    def _file(self, drill_id: str) -> Path:
        return self.local_dir / f"{drill_id}.json"

    def _load_local(self, drill_id: str) -> list[dict[str, Any]] | None:
        try:
            loaded = json.loads(self._file(drill_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return [e for e in loaded if isinstance(e, dict)] if isinstance(loaded, list) else None

    def entries(self, drill_id: str) -> list[dict[str, Any]]:
        """The rollbacks this host registered for ``drill_id`` (its local file; Redis is never read back)."""
        return self._load_local(drill_id) or []

    def _mirror(self, drill_id: str, entries: list[dict[str, Any]]) -> None:
        if self.client is None:
            return
        try:
            drill_state.save_rollbacks(self.client, drill_id, [summary(e, self.host) for e in entries])
        except Exception as exc:  # noqa: BLE001 - Redis may be the thing the drill took away
            log.debug("drill %s rollbacks not mirrored to Redis: %s", drill_id, exc)

    def _save(self, drill_id: str, entries: list[dict[str, Any]], *, required: bool = False) -> None:
        """The local file (required before an injection: it is the only copy that can be run), then the summary."""
        try:
            _write_atomic(self._file(drill_id), entries)
        except OSError as exc:
            if required:
                raise RegistrationFailed(f"could not register the rollback in {self._file(drill_id)}: "
                                         f"{exc.strerror or exc}") from None
            log.warning("drill %s rollback state not saved locally: %s", drill_id, exc)
        self._mirror(drill_id, entries)

    # --- API -------------------------------------------------------------------
    def register(self, drill_id: str, action: Mapping[str, Any]) -> dict[str, Any]:
        """Record ``action`` durably on this host; RegistrationFailed if the local file could not be written
        (then: do not inject; a copy in Redis alone would be one nobody may run)."""
        if action.get("kind") not in self.executors:
            raise RegistrationFailed(f"no executor for rollback kind {action.get('kind')!r}")
        entries = self.entries(drill_id)
        entry = {"idx": len(entries), "action": dict(action), "status": "pending", "registered": self.clock()}
        entries.append(entry)
        self._save(drill_id, entries, required=True)
        return entry

    def run(self, drill_id: str) -> RollbackOutcome:
        """Run every pending rollback, newest first; each is marked done as soon as it succeeds."""
        outcome = RollbackOutcome(drill_id)
        entries = self.entries(drill_id)
        for entry in sorted(entries, key=lambda e: -int(e.get("idx", 0))):
            if entry.get("status") == "done":
                continue
            action = entry.get("action") or {}
            try:
                execute = self.executors.get(str(action.get("kind")))
                if execute is None:
                    raise RegistrationFailed(f"no executor for rollback kind {action.get('kind')!r}")
                execute(action)
            except Exception as exc:  # noqa: BLE001 - a failed rollback is reported, the rest still run
                outcome.errors.append(f"{action.get('kind')}: {exc}")
                entry["status"] = "failed"
                entry["error"] = str(exc)
                log.warning("drill %s rollback %s failed: %s", drill_id, action.get("kind"), exc)
            else:
                entry["status"] = "done"
                entry["done"] = self.clock()
                outcome.ran.append(action["kind"])
            self._save(drill_id, entries)
        if outcome.ok:
            self._finish(drill_id)
        return outcome

    def _finish(self, drill_id: str) -> None:
        if self.client is not None:
            try:
                drill_state.finish_rollbacks(self.client, drill_id)
            except Exception:  # noqa: BLE001 - keep the local file: recover_pending syncs Redis later
                return
        self._file(drill_id).unlink(missing_ok=True)

    def pending(self) -> list[str]:
        """Drills with rollbacks registered on this host and not finished (the ones this host can run)."""
        if not self.local_dir.is_dir():
            return []
        return sorted(p.stem for p in self.local_dir.glob("*.json"))

    def elsewhere(self) -> list[str]:
        """Drills Redis lists as pending with no local file here: another host's (or a planted id); never run here."""
        if self.client is None:
            return []
        try:
            ids = set(drill_state.pending_rollbacks(self.client))
        except Exception:  # noqa: BLE001
            return []
        return sorted(ids - set(self.pending()))

    def recover_pending(self, skip: set[str] | None = None) -> list[RollbackOutcome]:
        """Finish the rollbacks of drills whose runner died (or whose rollback failed) earlier."""
        out = []
        for drill_id in self.pending():
            if skip and drill_id in skip:
                continue
            out.append(self.run(drill_id))
        return out
