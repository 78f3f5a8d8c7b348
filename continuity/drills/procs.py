"""Find and describe local processes through /proc: who listens on a port, a process tree, its exact launch.

Fault injectors must hit the right process (the node's worker, the service on
its port) and their rollbacks must be able to start it again exactly as it was
(same argv, environment and directory), without the operator telling us how.
Linux /proc has all of that, so no psutil dependency is needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from continuity import settings

PROC = Path("/proc")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return state(pid) not in ("Z", "X", None)


def state(pid: int) -> str | None:
    """One-letter process state (R, S, T = stopped, Z = zombie), None when gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def stopped(pid: int) -> bool:
    return state(pid) in ("T", "t")


def _ppid(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first found, depth-first)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            pp = _ppid(int(entry.name))
            if pp is not None:
                children.setdefault(pp, []).append(int(entry.name))
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        cur = stack.pop()
        out.append(cur)
        stack.extend(children.get(cur, []))
    return out


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)] if alive(pid) else []


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def environ(pid: int) -> dict[str, str]:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.decode(errors="replace").partition("=")
        if sep:
            out[k] = v
    return out


def same_program(pid: int, program: str) -> bool:
    """Does ``pid`` run ``program``? By executable, not command line: redis-server rewrites its own title."""
    try:
        return os.readlink(PROC / str(pid) / "exe") == os.path.realpath(program)
    except OSError:
        return False


def cwd(pid: int) -> str | None:
    try:
        return os.readlink(PROC / str(pid) / "cwd")
    except OSError:
        return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, st, inode = parts[1], parts[3], parts[9]
            if st == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listeners(port: int) -> list[int]:
    """Pids holding a socket listening on TCP ``port`` (the service behind a port, whoever started it)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                pids.append(int(entry.name))
                break
    return sorted(pids)


def send(pids: list[int], sig: int) -> list[int]:
    """Signal each pid; returns those that received it (gone ones are skipped)."""
    done = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            continue
    return done


def wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return not any(alive(p) for p in pids)


def launch(argv: list[str], env: dict[str, str], cwd_: str | None, log: Path, ledger: Path, name: str) -> int:
    """Start a detached process (own session) and note it in ``ledger`` so tests and operators can find it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(argv, env=env, cwd=cwd_ or None, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": p.pid, "name": name, "argv": argv, "ts": time.time()}) + "\n")
    return p.pid


def spawned(ledger: Path) -> list[dict[str, Any]]:
    try:
        lines = ledger.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue
    return out


def kill_spawned(ledger: Path) -> None:
    """Stop every process a drill started (test teardown, `continuity down`)."""
    for entry in spawned(ledger):
        pid = int(entry["pid"])
        if entry.get("argv") and not same_program(pid, str(entry["argv"][0])):
            continue  # gone, and the pid now belongs to another program
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


# processes a fleet runs: Celery workers / beat / Flower, the sample services, drill proxies, redis-server
FLEET_MARKERS = ("celery", "continuity.sample.ledger_service", "continuity.drills.proxy", "redis-server",
                 "continuity worker", "continuity beat")


def fleet_processes(state: Path, exclude: set[int] | None = None) -> list[int]:
    """Live processes of the fleet whose state directory is ``state``: a fleet process (by its command line)
    that runs with ``CONTINUITY_STATE`` set to it, or a redis-server working in a directory inside it."""
    want = str(Path(state).resolve())
    skip = set(exclude or ())
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        line = " ".join(cmdline(pid))
        if not any(m in line for m in FLEET_MARKERS) or not alive(pid):
            continue
        env_state = environ(pid).get(settings.STATE.name)
        mine = env_state is not None and str(Path(env_state).resolve()) == want
        if mine or ("redis-server" in line and (cwd(pid) or "").startswith(want + os.sep)):
            found.append(pid)
    return sorted(found)


def stop_fleet_processes(state: Path, exclude: set[int] | None = None, timeout: float = 5.0) -> list[int]:
    """SIGTERM every process of the fleet at ``state`` still running, SIGKILL what remains after ``timeout``;
    returns the pids found. The last step of stopping a fleet: whatever its supervisor did not know about
    (an instance forked by a hook of a worker killed mid-start, a process a drill launched) goes too."""
    pids = fleet_processes(state, exclude)
    send(pids, signal.SIGTERM)
    if not wait_gone(pids, timeout):
        send(pids, signal.SIGKILL)
        wait_gone(pids, 5.0)
    return pids
