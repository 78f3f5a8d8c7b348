"""Processes of a bed: found by network namespace, frozen, killed, and told apart from a reused pid.

A node's processes are whatever runs in its network namespace, the way ``ip netns
pids`` sees them: that includes grandchildren that started sessions of their own,
which a kill by process group would miss.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from continuity.netbed import net
from continuity.netbed.net import NetError

KILL_TIMEOUT = 15.0


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): with the pid, it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def same_process(pid: int, start: str | None) -> bool:
    """Is the process that was ``pid`` at ``start`` still there (and not a zombie: a zombie runs nothing)?"""
    return start is not None and start_time(pid) == start and proc_state(pid) not in ("Z", "X")


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return "X"


def _signal_until_none(netns: str, sig: int, pending: Callable[[], set[int]], timeout: float, what: str) -> set[int]:
    """Send ``sig`` to every pid ``pending()`` lists, again and again, until it lists none; every pid signalled."""
    deadline = time.monotonic() + timeout
    sent: set[int] = set()
    while todo := pending():
        for pid in todo:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        sent |= todo
        if time.monotonic() > deadline:
            raise NetError(f"{netns}: {what} after {timeout:.0f}s: {sorted(todo)}")
        time.sleep(0.001)  # a signal in flight lands within a scheduler tick
    return sent


def freeze(netns: str, timeout: float = KILL_TIMEOUT) -> set[int]:
    """SIGSTOP every process of ``netns`` until none of them can run; the pids stopped.

    A process forked while a pass was under way is not yet stopped and is caught by the
    next pass; a stopped process cannot fork, so the passes end.
    """
    def running() -> set[int]:
        return {p for p in net.netns_pids(netns) if proc_state(p) not in ("T", "t")}

    stopped = _signal_until_none(netns, signal.SIGSTOP, running, timeout, "processes still running despite SIGSTOP")
    return stopped | net.netns_pids(netns)


def kill_netns(netns: str, timeout: float = KILL_TIMEOUT) -> set[int]:
    """SIGKILL every process of ``netns`` until it has none; the pids killed."""
    return _signal_until_none(netns, signal.SIGKILL, lambda: net.netns_pids(netns), timeout,
                              "processes survive SIGKILL")


def kill_group(pid: int, start: str | None = None, timeout: float = KILL_TIMEOUT) -> None:
    """SIGKILL ``pid`` and its process group; with ``start``, also wait until that process is gone."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while start is not None and same_process(pid, start):
        if time.monotonic() > deadline:
            raise NetError(f"pid {pid} survives SIGKILL after {timeout:.0f}s")
        time.sleep(0.005)
