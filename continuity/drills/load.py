"""Load generator: sequence-numbered writes through the service's route while the fault is active.

Data loss is only measurable against a record of what the system *promised*:
each write carries the next sequence number and is noted as acknowledged only
when the service answered 2xx. After recovery, every acknowledged number must
still be readable from whoever is primary then; the ones that are not are the
drill's data loss (see ``measure.data_loss``). Writes follow the route like a
real client, so during a failover they fail until the route moves, which is
the client-visible outage.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from continuity.blueprint import Blueprint
from continuity.drills.measure import Write
from continuity.drills.probes import base_url, fetch_records
from continuity.state import routes

WriteFn = Callable[[int], tuple[bool, int | None, str | None]]


def http_writer(client: Any, bp: Blueprint, service: str, timeout: float) -> WriteFn:
    """POST /records {"seq": n} to the node the route names now (with its epoch, so stale primaries refuse)."""

    def write(seq: int) -> tuple[bool, int | None, str | None]:
        url = base_url(client, bp, service)
        primary = routes.read_primary(client, bp, service)
        node = primary.node
        body: dict[str, Any] = {"seq": seq}
        if primary.epoch is not None:
            body["epoch"] = primary.epoch
        req = urllib.request.Request(f"{url}/records", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fleet-local URL
                return 200 <= resp.status < 300, resp.status, node
        except urllib.error.HTTPError as exc:
            return False, exc.code, node

    return write


class LoadGenerator:
    """Writes seq = start, start+1, ... every ``interval`` on a background thread until stopped."""

    def __init__(self, write: WriteFn, start_seq: int, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.write = write
        self.next_seq = start_seq
        self.start_seq = start_seq
        self.interval = interval
        self.clock = clock
        self.writes: list[Write] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="drill-load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.interval)

    def step(self) -> Write:
        """One write; a refused one is retried with the *same* number (a real client retries, it does not skip)."""
        seq = self.next_seq
        sent = self.clock()
        try:
            ok, status, node = self.write(seq)
        except Exception:  # noqa: BLE001 - connection refused/reset/timeout while the fault is active
            ok, status, node = False, None, None
        w = Write(seq=seq, sent=sent, acked=ok, ack_ts=self.clock() if ok else None, node=node, status=status)
        self.writes.append(w)
        if ok:
            self.next_seq += 1
        return w

    def stop(self) -> list[Write]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return list(self.writes)


def next_free_seq(client: Any, bp: Blueprint, service: str, timeout: float = 2.0) -> int:
    """One past the highest sequence number the service holds now (drills never reuse numbers)."""
    url = base_url(client, bp, service)
    records = fetch_records(str(url), 0, timeout)
    return max((int(r.get("seq", 0)) for r in records), default=0) + 1


def recovered_seqs(client: Any, bp: Blueprint, service: str, after: int, timeout: float = 3.0) -> set[int]:
    url = base_url(client, bp, service)
    return {int(r["seq"]) for r in fetch_records(str(url), after, timeout) if "seq" in r}
