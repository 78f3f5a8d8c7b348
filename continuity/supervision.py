"""Exactly one supervisor restarts a node's processes: ``continuity up`` and the drills agree through files.

``continuity up`` restarts any of its children that dies. A node-kill drill
kills a node's worker on purpose and, when its fault window ends, restarts it
(its rollback). Both restarting the same node left two workers for one node;
the drill then killed only one, and the other outlived Ctrl-C. So:

* the supervisor announces itself (``supervisor/owner.json``: its pid) while it runs;
* a drill that takes a node down while a supervisor runs first writes a **hold**
  on that node (``supervisor/holds/<node>.json``: the drill's pid, a deadline);
  the supervisor does not restart a held node's worker;
* the drill's rollback lifts the hold and waits for the supervisor's restart
  instead of starting a worker of its own. With no supervisor running, the
  drill restarts the worker itself, as before.

A hold whose drill process died, or whose deadline passed, is void: a crashed
drill never leaves a node down for good. Files under the fleet's state
directory, not Redis keys, because the drill may have taken Redis away and the
supervisor must keep deciding without it; the embedded fleet runs on one host.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from continuity import paths
from continuity.drills import procs

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Hold:
    node: str
    pid: int  # the drill process that holds the node down
    until: float  # wall-clock deadline
    reason: str = ""


def base() -> Path:
    return paths.state_dir() / "supervisor"


def _hold_file(node: str) -> Path:
    if not _NODE_ID.match(node):
        raise ValueError(f"not a node id: {node!r}")
    return base() / "holds" / f"{node}.json"


def _write(path: Path, doc: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, object] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --- the supervisor ------------------------------------------------------------------------------------------------
def claim(pid: int | None = None) -> None:
    """Announce this process as the fleet's supervisor (``continuity up`` at start)."""
    _write(base() / "owner.json", {"pid": pid or os.getpid(), "since": time.time()})


def release(pid: int | None = None) -> None:
    """Withdraw the announcement (at stop), unless another supervisor has replaced it."""
    doc = _read(base() / "owner.json")
    if doc is not None and doc.get("pid") == (pid or os.getpid()):
        (base() / "owner.json").unlink(missing_ok=True)


def supervisor() -> int | None:
    """The pid of the running supervisor, or None (none announced, or it died without withdrawing)."""
    doc = _read(base() / "owner.json")
    pid = doc.get("pid") if doc else None
    return pid if isinstance(pid, int) and procs.alive(pid) else None


def held(node: str, now: float | None = None) -> Hold | None:
    """The drill hold on ``node`` if it is in force (its drill alive, its deadline ahead), else None."""
    doc = _read(_hold_file(node))
    if doc is None:
        return None
    try:
        hold = Hold(node, int(doc["pid"]), float(doc["until"]), str(doc.get("reason", "")))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    if (time.time() if now is None else now) >= hold.until or not procs.alive(hold.pid):
        return None
    return hold


# --- the drill -----------------------------------------------------------------------------------------------------
def hold(node: str, seconds: float, reason: str, pid: int | None = None) -> Hold:
    """Ask the supervisor to leave ``node``'s worker down (a drill, before it kills it)."""
    h = Hold(node, pid or os.getpid(), time.time() + seconds, reason)
    _write(_hold_file(node), {"pid": h.pid, "until": h.until, "reason": reason})
    return h


def unhold(node: str) -> bool:
    """Lift the hold on ``node``: the supervisor restarts its worker at its next look. True if there was one."""
    try:
        _hold_file(node).unlink()
        return True
    except FileNotFoundError:
        return False
