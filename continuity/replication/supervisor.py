"""Keeps a node's replicator process running for as long as the node's worker runs.

Why a process of its own and not a thread of the worker: the replicator reads,
writes, fsyncs and hashes at the rate the services write; in the worker's main
process that work would compete for the GIL with the node agent, whose
heartbeats must never be late. As a child it can also be killed and restarted
alone (the tests kill it -9 mid-stream), while the worker keeps the node's roles.

It exits when the worker does: the child polls its parent (``--parent``), so a
worker killed -9 takes its replicator with it within half a second, and the
worker's next start brings a new one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from continuity import paths

log = logging.getLogger("continuity.replication")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
HEALTHY_AFTER = 10.0  # a child that ran this long had no start-up problem: restart it at once next time


class Supervisor:
    def __init__(self, node: str, argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.node = node
        self.argv = list(argv) if argv is not None else [
            sys.executable, "-m", "continuity.replication", "--node", node, "--parent", str(os.getpid())]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="continuity-replicator-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.argv, cwd=paths.root(), env=self.env, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            except OSError as exc:
                log.error("replicator %s could not start: %s", self.node, exc)
            else:
                self.starts += 1
                code = self.proc.wait()
                if self._stop.is_set():
                    return
                log.warning("replicator %s exited with %s; restarting", self.node, code)
            if time.monotonic() - started >= HEALTHY_AFTER:
                backoff = BACKOFF_MIN
            if self._stop.wait(backoff):
                return
            backoff = min(BACKOFF_MAX, backoff * 2)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
            try:
                proc.send_signal(sig)
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
            except OSError:
                return
