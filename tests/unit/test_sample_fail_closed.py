"""The sample service fails closed: a write it cannot prove is the primary's is refused (real redis-server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from continuity.sample.ledger_service import App
from continuity.state import epochs
from tests.failover_support import make_blueprint


def test_a_write_is_refused_with_503_when_redis_is_unreachable(own_redis, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis gone means "cannot prove we are still primary": answering 200 would accept a write a promoted
    standby may also be taking (split brain), so the guard must refuse, and store nothing."""
    # the epoch guard, not replication: the ledger replicates async here (no standby to wait for)
    monkeypatch.setenv("CONTINUITY_BLUEPRINT", str(make_blueprint(tmp_path)))
    client = redis.Redis.from_url(own_redis.url)
    assert epochs.bump_epoch(client, "ledger", 0) == 1
    client.close()
    app = App("ledger", "core-a", 0, 1, tmp_path / "data", redis_url=own_redis.url)
    assert app.write(1, {"v": 1})[0] == 200, "reachable and current: accepted"
    own_redis.kill()
    status, body = app.write(2, {"v": 2})
    assert status == 503 and "cannot verify the epoch" in body["error"]
    assert app.ledger.seqs == {1}, "the refused write is not stored"
    assert app.rejected == 1
