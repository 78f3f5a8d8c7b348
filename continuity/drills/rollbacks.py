"""Durable rollback registry: every fault's undo is written down before the fault exists.

Chaos tools skip rollbacks when an action fails or the run is interrupted
(chaostoolkit#195, #258) and leave faults behind (chaos-mesh#2449). Here the
runner must register a rollback — in Redis (``drill_rollbacks(id)`` plus the
``drill_pending_rollbacks`` set) *and* in a local fsync'd file — before it may
inject. The local copy matters because some faults take Redis itself away.
Rollbacks run in reverse registration order on success, failure and abort; if
the runner dies, :meth:`RollbackRegistry.recover_pending` on its next start
finishes them. Each action is a plain JSON dict ``{"kind": ..., ...}``
executed by a function looked up by kind, so a recovering runner needs nothing
but the record.
"""

from __future__ import annotations

import json
import logging
import os
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


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
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

    # --- storage ---------------------------------------------------------------
    def _file(self, drill_id: str) -> Path:
        return self.local_dir / f"{drill_id}.json"

    def _load_local(self, drill_id: str) -> list[dict[str, Any]] | None:
        try:
            return list(json.loads(self._file(drill_id).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def _load_redis(self, drill_id: str) -> list[dict[str, Any]] | None:
        if self.client is None:
            return None
        try:
            return drill_state.load_rollbacks(self.client, drill_id)
        except Exception:  # noqa: BLE001 - Redis may be the thing the drill took away
            return None

    def entries(self, drill_id: str) -> list[dict[str, Any]]:
        """Registered rollbacks; a step marked done in either store counts as done."""
        local = self._load_local(drill_id)
        remote = self._load_redis(drill_id)
        base = local if local is not None and len(local) >= len(remote or []) else (remote or [])
        done = {e["idx"] for e in (local or []) + (remote or []) if e.get("status") == "done"}
        return [{**e, "status": "done" if e["idx"] in done else e.get("status", "pending")} for e in base]

    def _save(self, drill_id: str, entries: list[dict[str, Any]], *, required: bool = False) -> None:
        stored = 0
        errors = []
        try:
            _write_atomic(self._file(drill_id), entries)
            stored += 1
        except OSError as exc:
            errors.append(f"local file: {exc}")
        if self.client is not None:
            try:
                drill_state.save_rollbacks(self.client, drill_id, entries)
                stored += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(f"redis: {exc}")
        if required and stored == 0:
            raise RegistrationFailed("could not register rollback anywhere: " + "; ".join(errors))

    # --- API -------------------------------------------------------------------
    def register(self, drill_id: str, action: Mapping[str, Any]) -> dict[str, Any]:
        """Record ``action`` durably; raises RegistrationFailed if no store took it (then: do not inject)."""
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
        for entry in sorted(entries, key=lambda e: -e["idx"]):
            if entry.get("status") == "done":
                continue
            action = entry["action"]
            try:
                self.executors[action["kind"]](action)
            except Exception as exc:  # noqa: BLE001 - a failed rollback is reported, the rest still run
                outcome.errors.append(f"{action['kind']}: {exc}")
                entry["status"] = "failed"
                entry["error"] = str(exc)
                log.warning("drill %s rollback %s failed: %s", drill_id, action["kind"], exc)
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
        ids: set[str] = set()
        if self.client is not None:
            try:
                ids |= set(drill_state.pending_rollbacks(self.client))
            except Exception:  # noqa: BLE001
                pass
        if self.local_dir.is_dir():
            ids |= {p.stem for p in self.local_dir.glob("*.json")}
        return sorted(ids)

    def recover_pending(self, skip: set[str] | None = None) -> list[RollbackOutcome]:
        """Finish the rollbacks of drills whose runner died (or whose rollback failed) earlier."""
        out = []
        for drill_id in self.pending():
            if skip and drill_id in skip:
                continue
            out.append(self.run(drill_id))
        return out
