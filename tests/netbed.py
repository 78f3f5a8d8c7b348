"""Fixtures for the separate-host test bed (:mod:`continuity.netbed`): import them into a test module.

``make_bed(blueprint, **options)`` starts a :class:`~continuity.netbed.Bed` for
one test; at the end of the test every bed it made is checked (no node opened
another node's root: else the test fails, whatever the code under test did
with the refused open) and removed. The session fixture skips with the reason
where the bed cannot run (not root, no ``ip netns``, no fanotify permission
events), removes beds a killed earlier run left behind, and fails the session
if any bed of this run left a namespace, link, mount or process.

:class:`BedFleet` is a sample fleet on a bed: workers on their hosts, beat in
the root namespace, clients over the nodes' addresses.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity import netbed
from continuity.blueprint import load_blueprint
from continuity.netbed import Bed
from continuity.services.hooks import base_url
from continuity.state import leases, nodes
from tests.failover_support import get_health, make_blueprint, post_seq
from tests.helpers import wait_for


@pytest.fixture(scope="session", name="netbed_session")
def netbed_session_fixture() -> Iterator[list[Bed]]:
    """Every bed this session made; at the end, none may have left anything behind."""
    reason = netbed.unavailable()
    if reason:
        pytest.skip(f"separate-host test bed unavailable: {reason}")
    netbed.sweep_stale()
    beds: list[Bed] = []
    yield beds
    left = [f"bed {bed.id}: {what}" for bed in beds for what in bed.leftovers()]
    assert not left, "test beds left behind:\n" + "\n".join(left)


@pytest.fixture(name="make_bed")
def make_bed_fixture(netbed_session: list[Bed], tmp_path: Path) -> Iterator[Callable[..., Bed]]:
    """Start beds for one test; afterwards each must be isolated (no cross-node open) and is removed."""
    made: list[Bed] = []

    def _make(blueprint: Path, **options: Any) -> Bed:
        bed = Bed(blueprint, tmp_path / f"bed-{len(made)}", **options)
        netbed_session.append(bed)
        made.append(bed)
        return bed.start()

    yield _make
    errors = [e for bed in made for e in finish_bed(bed)]
    assert not errors, "\n".join(errors)


def finish_bed(bed: Bed) -> list[str]:
    """Check that no node opened another node's root, then remove the bed; what went wrong, in words."""
    errors = []
    try:
        bed.assert_isolated()
    except netbed.IsolationBroken as exc:
        errors.append(str(exc))
    return errors + bed.close()


def bed_blueprint(tmp_path: Path, services: tuple[str, ...] = ("ledger",), sync: bool = False, **policy: str) -> Path:
    """The sample fleet on three core nodes (core-a primary, core-b and core-c standbys), no satellite.

    Its services replicate asynchronously unless ``sync`` (then as ``ops/blueprint.yml`` ships them: the
    ledger in sync mode): most bed tests study async streams, lag and resumes; those about sync mode say so.
    """
    path = make_blueprint(tmp_path, services, third_node=True, shipped=sync, **policy)
    doc = yaml.safe_load(path.read_text())
    doc["nodes"].pop("sat-1", None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class BedFleet:
    """A sample fleet on a bed: one worker per host, beat in the root namespace, clients over the network."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.bp = load_blueprint(bed.blueprint_path)
        self.client = bed.client()
        self.workers: dict[str, Any] = {}

    def start(self, nodes: tuple[str, ...] | None = None) -> None:
        for node in nodes or tuple(sorted(self.bp.nodes)):
            self.workers[node] = self.bed.start_worker(node)
        self.beat = self.bed.run_control([sys.executable, "-m", "continuity", "beat"], "beat")

    def states(self) -> dict[str, str]:
        return {n: c.get("state", "?") for n, c in nodes.classifications(self.client).items()}

    def url(self, service: str, node: str) -> str:
        url = base_url(self.bp, service, node)
        assert url is not None
        return url

    def health(self, service: str, node: str) -> dict[str, Any] | None:
        return get_health(self.url(service, node))

    def post(self, service: str, node: str, seq: int) -> int:
        """HTTP status of a write sent to ``node``'s instance over its address, 0 if unreachable."""
        return post_seq(self.url(service, node), seq)

    def wait_primary(self, service: str, node: str, timeout: float = 60) -> dict[str, Any]:
        """Until ``node`` holds the lease and its instance answers, over the network, with that epoch."""
        def ready() -> dict[str, Any] | None:
            lease = leases.read(self.client, service)
            if lease is None or lease.node != node:
                return None
            h = self.health(service, node)
            return h if h and h.get("epoch") == lease.epoch else None

        return wait_for(ready, timeout=timeout, what=f"{service} primary on {node}, answering on its address")

    def explain(self, service: str) -> str:
        """What a timed-out wait on this fleet needs to be explained: node states, the lease, the service's
        latest failover records with their steps, the newest pulse events and the tail of every log."""
        from continuity.failover import records
        from continuity.state import pulse_stream

        lines = [f"node states: {self.states()}", f"lease: {leases.read(self.client, service)}"]
        for rec in records.history(self.client, service=service)[:3]:
            steps = [(st.get("step"), st.get("ok"), str(st.get("error") or "")[:160]) for st in rec.get("steps", [])]
            lines.append(f"record {rec.get('id')}: {rec.get('outcome')} {str(rec.get('reason') or '')[:200]} {steps}")
        for _, ev in pulse_stream.newest(self.client, 40):
            lines.append(f"pulse {ev.get('kind')} {ev.get('node')} {json.dumps(ev.get('data'), default=str)[:200]}")
        for log in sorted((self.bed.workdir / "logs").glob("*.log")):
            lines.append(f"--- {log.name} tail ---\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(lines)

    def close(self) -> None:
        self.client.close()
