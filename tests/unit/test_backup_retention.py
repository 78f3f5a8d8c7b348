"""forget policy: a pure function of snapshots, policy and clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from continuity.backup.retention import Policy, Snap, apply_policy

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

snap_lists = st.lists(
    st.tuples(st.integers(0, 400 * 24 * 60), st.sampled_from(["set:a", "set:b"])),
    max_size=60, unique_by=lambda t: t[0],
).map(lambda xs: [Snap(f"{i:04d}", NOW - timedelta(minutes=m), g) for i, (m, g) in enumerate(xs)])
policies = st.builds(Policy, keep_last=st.integers(0, 5), keep_hourly=st.integers(0, 5),
                     keep_daily=st.integers(0, 5), keep_weekly=st.integers(0, 3),
                     keep_monthly=st.integers(0, 3), keep_yearly=st.integers(0, 2),
                     keep_within=st.sampled_from([0.0, 3600.0, 86400.0 * 3]))


@settings(max_examples=200, deadline=None)
@given(snaps=snap_lists, policy=policies)
def test_partition_and_rules(snaps: list[Snap], policy: Policy) -> None:
    keep, remove, reasons = apply_policy(snaps, policy, NOW)
    assert {s.id for s in keep} | {s.id for s in remove} == {s.id for s in snaps}
    assert not ({s.id for s in keep} & {s.id for s in remove})
    for group in {s.group for s in snaps}:
        members = sorted((s for s in snaps if s.group == group), key=lambda s: s.time, reverse=True)
        kept = {s.id for s in keep}
        # keep_last keeps exactly the newest n of each group
        for s in members[:policy.keep_last]:
            assert "last" in reasons[s.id]
        # within keeps everything young enough
        for s in members:
            if policy.keep_within and s.time >= NOW - timedelta(seconds=policy.keep_within):
                assert s.id in kept
        # any rule > 0 keeps the newest snapshot of the group
        if not policy.empty() and members and (policy.keep_last or policy.keep_hourly or policy.keep_daily
                                               or policy.keep_weekly or policy.keep_monthly
                                               or policy.keep_yearly):
            assert members[0].id in kept
        # daily: at most keep_daily snapshots carry the daily reason, each from a distinct day
        days = [s.time.date() for s in members if "daily" in reasons.get(s.id, [])]
        assert len(days) == len(set(days)) <= policy.keep_daily


@settings(max_examples=100, deadline=None)
@given(snaps=snap_lists, policy=policies)
def test_pure_and_idempotent(snaps: list[Snap], policy: Policy) -> None:
    keep, remove, _ = apply_policy(snaps, policy, NOW)
    assert apply_policy(list(reversed(snaps)), policy, NOW)[0] == keep
    keep2, remove2, _ = apply_policy(keep, policy, NOW)
    assert keep2 == keep and remove2 == []


@given(snaps=snap_lists)
def test_empty_policy_keeps_everything(snaps: list[Snap]) -> None:
    keep, remove, _ = apply_policy(snaps, Policy(), NOW)
    assert remove == [] and len(keep) == len(snaps)


def test_daily_example() -> None:
    snaps = [Snap(f"s{h}", NOW - timedelta(hours=h), "g") for h in range(0, 72, 6)]  # 12 snaps over 3 days
    keep, remove, reasons = apply_policy(snaps, Policy(keep_daily=2), NOW)
    assert [s.id for s in keep] == ["s0", "s18"]  # newest of 15 June, newest of 14 June
    assert len(remove) == 10
