"""Issue 10 acceptance 2 and 3 on separate hosts: node-loss faults of the ledger's primary under a steady writer.

Three core nodes on the bed (each its own network namespace and data root), real workers with their agents,
detectors and replicators, beat in the root namespace, a client writing 200 records a second over the primary's
address. Each fault loses the current primary (kill -9 of everything, root gone at once); the fleet fails over
by itself and the lost node comes back on an empty root. The issue asks for 20 faults per mode: that is
``bench/replication_bench.py --node-loss 20``; here a few per mode keep the suite affordable.

- async: every failover completes; the acknowledged writes lost per fault are the newest ones, acknowledged
  within the replication lag window before the loss (bounded here by the ledger's declared RPO, a margin that
  holds on a saturated machine; the bench prints the measured windows); and the loss the failover's prepare
  step reports equals the loss the client counts;
- sync: no acknowledged write is lost, and none was acknowledged that no surviving standby held at the loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from continuity.netbed import Bed
from tests.netbed import BedFleet, bed_blueprint, finish_bed, netbed_session_fixture  # noqa: F401 - fixtures
from tests.node_loss_support import NodeLossRun, summary

pytestmark = pytest.mark.slow
NODES = ("core-a", "core-b", "core-c")
FAULTS = 3


def run_faults(netbed_session: list[Bed], tmp: pytest.TempPathFactory, sync: bool) -> Iterator[NodeLossRun]:
    """FAULTS node losses on a fresh bed; the run is shared by the module's tests of that mode (a fleet and its
    failovers are the expensive part). Like the ``make_bed`` fixture, the bed must end isolated and clean."""
    work = tmp.mktemp("sync" if sync else "async")
    bed = Bed(bed_blueprint(work, sync=sync, failover_cooldown="1s"), work / "bed")
    netbed_session.append(bed)
    bed.start()
    fleet = BedFleet(bed)
    run = NodeLossRun(fleet)
    mode = "sync" if sync else "async"
    try:
        fleet.start(NODES)
        for _ in range(FAULTS):
            r = run.fault()
            print(f"\n{mode} {r.evidence()}; mttr {r.mttr:.1f}s")
        print(f"{mode}: {summary(run.results)}")
        yield run
    finally:
        fleet.close()
        errors = finish_bed(bed)
        assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def sync_run(netbed_session: list[Bed], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLossRun]:
    yield from run_faults(netbed_session, tmp_path_factory, sync=True)


@pytest.fixture(scope="module")
def async_run(netbed_session: list[Bed], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLossRun]:
    yield from run_faults(netbed_session, tmp_path_factory, sync=False)


def test_sync_mode_loses_no_acknowledged_write_to_node_losses(sync_run: NodeLossRun) -> None:
    run = sync_run
    assert len(run.results) == FAULTS and all(r.promoted != r.lost for r in run.results)
    assert all(r.acked >= run.warmup for r in run.results)
    for r in run.results:
        assert r.not_on_standby == [], f"acknowledged but on no surviving standby: {r.evidence()}"
        assert r.client_lost == [], f"acknowledged writes lost in sync mode: {r.evidence()}"
    assert not run.gone


def test_async_mode_loses_at_most_the_lag_window_to_node_losses(async_run: NodeLossRun) -> None:
    run = async_run
    rpo = run.fleet.bp.services["ledger"].rpo
    assert len(run.results) == FAULTS and all(r.promoted != r.lost for r in run.results)
    for r in run.results:
        assert r.lost_suffix, f"lost writes are not the newest ones (holes, not a lag window): {r.evidence()}"
        assert r.window is None or r.window <= rpo, f"lost more than the lag window: {r.evidence()}"
        # what async loses is what no standby held yet: nothing a standby had is lost on the way
        assert set(r.client_lost) <= set(r.not_on_standby), r.evidence()
        assert r.reported_records is not None, f"prepare reported no loss figure: {r.evidence()}"


def test_async_mode_reported_loss_equals_the_client_counted_loss(async_run: NodeLossRun) -> None:
    # faults where either account saw a loss (both saying 0 compares nothing: a run of those would pass vacuously)
    lossy = [r for r in async_run.results if r.client_lost or r.reported_records]
    if not lossy:
        pytest.skip("no fault lost an acknowledged write, none reported a loss: nothing to compare this time")
    # the layer counts what it acknowledged (the service commits each write before answering), the client what
    # it heard: a write committed whose answer was on the wire when the host vanished is one more on the layer's
    # side (the writer has one write in flight at most); any other difference is a wrong account
    mismatched = [r.evidence() for r in lossy
                  if r.reported_records is None or not 0 <= r.reported_records - len(r.client_lost) <= 1]
    assert not mismatched, "reported loss != client-counted loss:\n" + "\n".join(mismatched)
