"""The suite leaves no process behind: at its end, any process still running that belongs to it fails the run.

A process belongs to the session when its command line, working directory or environment
names the session's base temporary directory: every worker, beat, sample service and
redis-server a test starts gets its state, data or log directory from ``tmp_path``, and the
sample services (detached into their own sessions by their start hook) inherit that
environment. That also tells them apart from the processes of other test runs on the same
machine. Stragglers get a grace to finish exiting; those still there are listed, killed,
and the session's exit status is set to failed.

Loaded from ``tests/conftest.py`` (``pytest_plugins``); usable on its own with ``-p tests.leakcheck``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from continuity.drills import procs

GRACE = 15.0  # seconds for processes a teardown already signalled to finish exiting (a loaded machine)


def session_processes(base: Path, exclude: set[int]) -> dict[int, str]:
    """pid -> command line of every live process that names ``base`` in its argv, cwd or environment."""
    needle = str(base)
    found = {}
    for entry in procs.PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        pid = int(entry.name)
        argv = procs.cmdline(pid)
        where = [*argv, procs.cwd(pid) or "", *procs.environ(pid).values()]
        if any(needle in part for part in where) and procs.alive(pid):
            found[pid] = " ".join(argv)[:200]
    return found


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            stat = (procs.PROC / str(pid) / "stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return out


def leftovers(base: Path, grace: float = GRACE) -> dict[int, str]:
    """Processes of the session still alive after ``grace`` seconds."""
    exclude = _ancestors()
    deadline = time.monotonic() + grace
    while True:
        found = session_processes(base, exclude)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--leak-grace", type=float, default=GRACE,
                     help="seconds a process of the session may take to exit after the last test (default %(default)s)")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return  # no test asked for a temporary directory: nothing of ours can be running
    found = leftovers(factory.getbasetemp(), session.config.getoption("--leak-grace"))
    if not found:
        return
    procs.send(sorted(found), signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(found)} process(es) outlived the test session (killed now):",
             *(f"  pid {pid}: {cmd}" for pid, cmd in sorted(found.items()))]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
