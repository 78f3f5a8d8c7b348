"""Every caller that asks "who is the primary of this service now" gets the same answer at every moment.

A failover moves three things one after another: the fence bumps the epoch (the old lease is already gone),
promote takes the lease for the candidate, repoint moves the route. Between those steps the keys disagree;
before :func:`continuity.state.routes.primary_of` existed, ``continuity status`` read the route and ``failover
status`` read the lease, so mid-failover one said core-a and the other core-b, and drills aimed at the old node.
This test walks each moment on a real redis-server and asks every caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from continuity.blueprint import Blueprint, load_blueprint
from continuity.cli.failover.status import build_status
from continuity.drills import probes, runner
from continuity.failover.planner import decide
from continuity.sample.client import LedgerClient
from continuity.state import epochs, keys, leases, routes
from continuity.state.routes import Route
from continuity.status import build_report, read_snapshot
from tests.helpers import ROOT

SERVICE = "ledger"
TTL = 60.0


def _planner(client: Any, bp: Blueprint) -> str:
    """The planner's answer, read the way the sweep feeds it: the node whose death it would fail the service over
    from."""
    lease_map = leases.read_many(client, sorted(bp.services))
    route_map = routes.read_many(client, sorted(bp.services))
    alive = {n: {"state": "alive"} for n in bp.nodes}
    hit = [n for n in sorted(bp.nodes)
           if any(d.service == SERVICE for d in decide(bp, {n}, {**alive, n: {"state": "dead"}}, lease_map, 0.0,
                                                        set(), False, {}, routes=route_map))]
    assert len(hit) == 1, hit
    return hit[0]


def _callers(bp: Blueprint) -> dict[str, Callable[[Any], str | None]]:
    def status(client: Any) -> str:
        report = build_report(bp, read_snapshot(client, bp))
        return next(s["primary"] for s in report["services"] if s["id"] == SERVICE)

    def failover_status(client: Any) -> str:
        return next(s["primary"] for s in build_status(client, bp)["services"] if s["service"] == SERVICE)

    return {
        "status": status,
        "failover status": failover_status,
        "planner": lambda c: _planner(c, bp),
        "drill targets": lambda c: runner.live_primaries(c, bp)[SERVICE],
        "drill probes": lambda c: probes.current_primary(c, bp, SERVICE),
    }


def _fresh(rds: Any) -> None:
    assert leases.bootstrap(rds, SERVICE, "core-a", TTL)
    assert routes.publish(rds, Route(SERVICE, "core-a", 1, url="http://core-a"))


def _fenced(rds: Any) -> None:
    _fresh(rds)
    rds.delete(keys.lease(SERVICE))  # the old holder's lease expired: that is when the fence may run
    assert epochs.bump_epoch(rds, SERVICE, 1, candidate="core-b") == 2


def _promoted(rds: Any) -> None:
    _fenced(rds)
    assert leases.acquire(rds, SERVICE, "core-b", 2, TTL)


def _repointed(rds: Any) -> None:
    _promoted(rds)
    assert routes.publish(rds, Route(SERVICE, "core-b", 2, url="http://core-b"))


def _lease_lapsed(rds: Any) -> None:
    _repointed(rds)
    rds.delete(keys.lease(SERVICE))  # between two renewals, or lost with a Redis restart


MOMENTS = {
    # moment: (set-up, the primary every caller must name, what a client may write to)
    "never placed": (lambda rds: None, "core-a", None),
    "placed": (_fresh, "core-a", "core-a"),
    "fenced": (_fenced, "core-a", "core-a"),
    "promoted": (_promoted, "core-b", None),
    "repointed": (_repointed, "core-b", "core-b"),
    "lease lapsed": (_lease_lapsed, "core-b", "core-b"),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_every_caller_names_the_same_primary(moment: str, rds: Any, redis_url: str, monkeypatch) -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    setup, expected, writable = MOMENTS[moment]
    setup(rds)
    answers = {name: ask(rds) for name, ask in _callers(bp).items()}
    monkeypatch.setenv("CONTINUITY_REDIS_URL", redis_url)
    monkeypatch.setenv("CONTINUITY_BLUEPRINT", str(ROOT / "ops" / "blueprint.yml"))
    from workers.backup import service_primary  # the Celery shell: imported with the test's Redis in the env

    forwarded = service_primary(SERVICE)
    if moment != "never placed":  # a service never placed has no live data to snapshot: documented None
        answers["backup forwarding"] = forwarded
    else:
        assert forwarded is None
    assert set(answers.values()) == {expected}, answers
    # the sample client writes only where the route agrees with that answer, and waits otherwise
    route = LedgerClient(redis_url, service=SERVICE).route()
    assert (route["node"] if route else None) == writable, route
