"""Walk this host's pulse history now and then, and say what the last walk found.

The chain proves the history unedited only when someone verifies it; an operator rarely runs ``continuity pulse
verify`` unprompted. The exporter does it every ``$CONTINUITY_PULSE_VERIFY_INTERVAL`` seconds, records the result
in Redis (:mod:`continuity.state.pulse_checks`) and shows it as ``continuity_pulse_verify_ok``. Walking a large
file takes seconds, so a server walks it on a thread and a scrape never waits for it; a one-shot command
(``continuity metrics``) uses the recorded result while it is fresh and walks the file itself otherwise.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continuity import paths, pulse, settings
from continuity.metrics.compute import PulseFile
from continuity.state import pulse_checks

log = logging.getLogger("continuity.metrics")


class PulseCheck:
    def __init__(self, path: Path | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time, host: str | None = None) -> None:
        self.path = Path(path) if path else paths.pulse_file()
        self.interval = settings.PULSE_VERIFY_INTERVAL.get() if interval is None else interval
        self.clock = clock
        self.host = host or socket.gethostname()
        self.last: dict[str, Any] | None = None
        self._running: threading.Thread | None = None
        self._lock = threading.Lock()

    def _due(self) -> bool:
        return self.last is None or self.clock() - float(self.last.get("at") or 0) >= self.interval

    def verify(self, client: Any | None) -> dict[str, Any]:
        """Walk the file now; record the result (in Redis when a client is given) and return it."""
        result = {"at": self.clock(), **pulse.verify_file(self.path).as_dict()}
        with self._lock:
            self.last = result
        if client is not None:
            try:
                pulse_checks.record(client, self.host, str(self.path), result)
            except Exception as exc:  # noqa: BLE001 - the in-process result still shows
                log.warning("could not record the pulse verification: %s", exc)
        return result

    def current(self, client: Any | None, background: bool) -> PulseFile:
        """The chain length now and the last verification, starting a new one when it is due."""
        if self.last is None and client is not None:
            try:
                self.last = pulse_checks.read(client, self.host, str(self.path))
            except Exception:  # noqa: BLE001 - Redis unreachable: verify locally below
                self.last = None
        if self._due():
            if not background:
                self.verify(client)
            elif self._running is None or not self._running.is_alive():
                self._running = threading.Thread(target=self.verify, args=(client,), name="pulse-verify",
                                                 daemon=True)
                self._running.start()
        with self._lock:
            last = self.last
        if last is None:
            return PulseFile(pulse.chain_length(self.path))
        return PulseFile(pulse.chain_length(self.path), bool(last.get("ok")), float(last.get("at") or 0))
