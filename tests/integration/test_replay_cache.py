"""The replay cache's states on a real redis-server: a redelivery (worker died mid-task) runs, a replay does not."""

from __future__ import annotations

from continuity.state import keys, replay


def test_first_claim_then_redelivery_then_replay(rds) -> None:
    assert replay.claim(rds, "ab" * 32, 30) == "new"
    assert replay.claim(rds, "ab" * 32, 30) == "running"  # late-acked redelivery: the first copy never finished
    replay.finish(rds, "ab" * 32)
    assert replay.claim(rds, "ab" * 32, 30) == "done"
    key = keys.task_seen(replay.digest("ab" * 32))
    assert 0 < rds.pttl(key) <= 30_000  # kept only until the envelope would expire anyway


def test_finish_marks_only_a_claimed_message(rds) -> None:
    replay.finish(rds, "cd" * 32)  # never claimed (Redis lost the key): nothing is written without an expiry
    assert rds.get(keys.task_seen(replay.digest("cd" * 32))) is None
