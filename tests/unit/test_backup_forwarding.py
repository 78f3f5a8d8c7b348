"""Where a set is snapshotted: on its service's current primary, forwarded at most twice (pure, no Redis)."""

from __future__ import annotations

import pytest

from continuity.backup.forwarding import MAX_HOPS, Forward, Here, primary_node, snapshot_site
from continuity.errors import ContinuityError
from continuity.state.routes import Primary


def test_a_plain_set_runs_where_it_was_sent() -> None:
    assert snapshot_site("files", [], None, "core-a", 0) == Here(None)


def test_a_service_set_runs_on_the_primary_or_is_forwarded_there() -> None:
    assert snapshot_site("ledger-live", ["ledger"], "core-a", "core-a", 0) == Here("core-a")
    assert snapshot_site("ledger-live", ["ledger"], "core-b", "core-a", 0) == Forward("core-b", 1)
    assert snapshot_site("ledger-live", ["ledger"], "core-a", "core-b", 1) == Forward("core-a", 2)


def test_a_primary_that_keeps_moving_or_was_never_placed_is_refused() -> None:
    with pytest.raises(ContinuityError, match="keeps moving"):
        snapshot_site("ledger-live", ["ledger"], "core-b", "core-a", MAX_HOPS)
    with pytest.raises(ContinuityError, match="service ledger has no primary to snapshot"):
        snapshot_site("ledger-live", ["ledger"], None, "core-a", 0)


def test_only_a_placed_primary_counts() -> None:
    assert primary_node(Primary("ledger", "core-b", 4, "lease")) == "core-b"
    assert primary_node(Primary("ledger", "core-b", 3, "route")) == "core-b"
    assert primary_node(Primary("ledger", "core-a", None, "blueprint")) is None
