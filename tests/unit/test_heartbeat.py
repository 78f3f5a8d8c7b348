"""Heartbeat signing and verification: unsigned, forged, unknown, misfiled, replayed and stale beats are refused."""

from __future__ import annotations

import os
import stat

import pytest

from continuity.state import heartbeats as hbm

KEY = b"k" * 32


def ring(**keys: bytes) -> hbm.KeyRing:
    return hbm.KeyRing({"core-a": KEY, **keys})


def beat(seq: int = 5, ts: float = 1000.0, node: str = "core-a") -> hbm.Heartbeat:
    return hbm.Heartbeat(node=node, seq=seq, ts=ts, services={"ledger": {"healthy": True, "role": "primary",
                                                                          "epoch": 2, "detail": "ok"}},
                         nonce="abc")


def check(raw: str, field: str = "core-a", last: int | None = None, arrival: float | None = 1000.2,
          keys: hbm.KeyRing | None = None) -> hbm.Heartbeat:
    return hbm.verify(raw, field, keys or ring(), last_seq=last, arrival=arrival, max_age=10.0)


def test_round_trip() -> None:
    hb = check(hbm.encode(beat(), KEY))
    assert hb == beat()


@pytest.mark.parametrize("raw, reason", [
    ('{"node":"core-a","seq":9,"ts":1000}', "unsigned"),
    ("v1..{}", "unsigned"),
    ("garbage", "malformed"),
    ("v2.abcd.{}", "malformed"),
])
def test_unsigned_or_malformed(raw: str, reason: str) -> None:
    with pytest.raises(hbm.Rejected) as err:
        check(raw)
    assert err.value.reason == reason


def test_forged_with_another_key() -> None:
    with pytest.raises(hbm.Rejected) as err:
        check(hbm.encode(beat(), b"attacker"))
    assert err.value.reason == "bad-mac"


def test_tampered_body_breaks_the_mac() -> None:
    raw = hbm.encode(beat(), KEY).replace('"healthy":true', '"healthy":false')
    with pytest.raises(hbm.Rejected) as err:
        check(raw)
    assert err.value.reason == "bad-mac"


def test_unknown_node_has_no_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    with pytest.raises(hbm.Rejected) as err:
        check(hbm.encode(beat(node="ghost"), KEY), field="ghost", keys=hbm.KeyRing())
    assert err.value.reason == "unknown-node"


def test_beat_filed_under_another_node_is_refused() -> None:
    raw = hbm.encode(beat(node="core-a"), KEY)
    with pytest.raises(hbm.Rejected) as err:
        check(raw, field="core-b", keys=ring(**{"core-b": KEY}))
    assert err.value.reason == "node-mismatch"


def test_replayed_sequence() -> None:
    raw = hbm.encode(beat(seq=5), KEY)
    with pytest.raises(hbm.Rejected) as err:
        check(raw, last=5)
    assert err.value.reason == "replayed"
    assert check(raw, last=4).seq == 5


@pytest.mark.parametrize("arrival", [1011.0, 989.0])
def test_stale_or_future_timestamp(arrival: float) -> None:
    with pytest.raises(hbm.Rejected) as err:
        check(hbm.encode(beat(ts=1000.0), KEY), arrival=arrival)
    assert err.value.reason == "stale"


def test_body_signed_but_not_json(monkeypatch) -> None:
    body = "not json"
    raw = f"v1.{hbm.mac(KEY, body)}.{body}"
    with pytest.raises(hbm.Rejected) as err:
        check(raw)
    assert err.value.reason == "malformed"


def test_key_from_env_wins_over_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    assert hbm.env_var("core-a") == "CONTINUITY_NODE_KEY_CORE_A"
    file_key = hbm.ensure_node_key("core-a")
    assert hbm.node_key("core-a") == file_key
    monkeypatch.setenv("CONTINUITY_NODE_KEY_CORE_A", "from-env")
    assert hbm.node_key("core-a") == b"from-env"


def test_ensure_node_key_creates_private_file_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    monkeypatch.delenv("CONTINUITY_NODE_KEY_SAT_1", raising=False)
    assert hbm.node_key("sat-1") is None
    first = hbm.ensure_node_key("sat-1")
    path = hbm.key_file("sat-1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) == 64
    assert hbm.ensure_node_key("sat-1") == first, "an existing key is never replaced"


def test_digest_is_stable_and_short() -> None:
    assert hbm.digest("x") == hbm.digest("x") != hbm.digest("y")
    assert len(hbm.digest("x")) == 16
