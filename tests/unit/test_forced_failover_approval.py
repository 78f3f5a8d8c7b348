"""`failover failover --force` needs a second operator's approval when stewards are declared (not their own)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import fakeredis
import pytest

from continuity.cli.failover.approve import check_forced
from continuity.errors import UsageError
from continuity.signing import create_key
from continuity.state import approvals
from continuity.stewardship import sign, subject


@pytest.fixture
def setup(tmp_path: Path, monkeypatch):
    ks = {n: create_key(tmp_path / n / "operator.ed25519", "operator", n) for n in ("alice", "bob")}
    members = "\n".join(f'    - {{name: {n}, key: "{k.public.line()}"}}' for n, k in ks.items())
    stewards = tmp_path / "stewards.yml"
    stewards.write_text(f"stewardship:\n  group: circle\n  approvals_needed: 2\n  members:\n{members}\n")
    monkeypatch.setenv("CONTINUITY_STEWARDS", str(stewards))
    monkeypatch.setenv("CONTINUITY_OPERATOR_KEY", str(ks["alice"].path))  # alice forces the failover
    return fakeredis.FakeRedis(decode_responses=True), ks, stewards


def put(client, key) -> None:
    a = sign(key, subject("failover", "ledger"), time.time(), 600)
    approvals.put(client, a.subject, a.approver, json.dumps(a.to_dict()), 600)


def test_forced_failover_needs_another_stewards_approval(setup) -> None:
    client, ks, _ = setup
    with pytest.raises(UsageError, match="forced failover of ledger refused: .*continuity failover approve ledger"):
        check_forced(client, "ledger")
    put(client, ks["alice"])
    with pytest.raises(UsageError, match="cannot approve their own action"):
        check_forced(client, "ledger")
    put(client, ks["bob"])
    assert [a["name"] for a in check_forced(client, "ledger")] == ["bob"]


def test_declared_otherwise_or_no_stewards_needs_none(setup, monkeypatch) -> None:
    client, _ks, stewards = setup
    stewards.write_text(stewards.read_text() + "  require: {forced_failover: false}\n")
    assert check_forced(client, "ledger") == []
    monkeypatch.setenv("CONTINUITY_STEWARDS", str(stewards.with_name("absent.yml")))
    assert check_forced(client, "ledger") == []
