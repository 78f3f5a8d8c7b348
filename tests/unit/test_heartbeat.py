"""Heartbeat signing and verification: unsigned, forged, unknown, misfiled, replayed and stale beats are refused,
and no node's key signs a beat (or a claim) that verifies as another node; a beat's token must be the next value
of the node's signed hash chain for its slot."""

from __future__ import annotations

import os
import stat

import pytest

from continuity.state import heartbeats as hbm

KEY = b"k" * 32


def ring(**keys: bytes) -> hbm.KeyRing:
    return hbm.KeyRing({"core-a": KEY, **keys})


SERVICES = {"ledger": {"healthy": True, "role": "primary", "epoch": 2, "detail": "ok"}}


def beat(ts: float = 1000.0, node: str = "core-a", services: dict | None = None) -> hbm.Heartbeat:
    return hbm.Heartbeat(node=node, seq=0, ts=ts, services=SERVICES if services is None else services)


def signer(node: str = "core-a", key: bytes = KEY) -> hbm.HeartbeatSigner:
    return hbm.HeartbeatSigner(node, key, step=0.5)


def check(raw: str, field: str = "core-a", last: int | None = None, arrival: float | None = 1000.2,
          keys: hbm.KeyRing | None = None, state: hbm.ChainState | None = None) -> hbm.Heartbeat:
    return hbm.verify(raw, field, keys or ring(), last_seq=last, arrival=arrival, max_age=10.0, state=state)


def run(beats: list[str], field: str = "core-a", keys: hbm.KeyRing | None = None, t0: float = 1000.0,
        ) -> tuple[hbm.ChainState | None, list[hbm.Heartbeat]]:
    """Verify beats in order, one second apart, keeping the verifier's state as the sweep does."""
    state, out = None, []
    k = (keys or ring()).get(field)
    for i, raw in enumerate(beats):
        state, hb = hbm.check_beat(field, raw.encode(), t0 + i + 0.1, k, state, 10.0)
        out.append(hb)
    return state, out


def test_round_trip_and_a_statement_signed_only_when_it_changes() -> None:
    sg = signer()
    raws = [sg.encode(beat(1000.0 + i, services=SERVICES if i < 3 else {})) for i in range(5)]
    _, hbs = run(raws)
    assert [hb.ts for hb in hbs] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    assert [hb.seq for hb in hbs] == sorted({hb.seq for hb in hbs})
    assert hbs[0].services == SERVICES and hbs[4].services == {}
    statements = {r.split(".", 4)[4] for r in raws}
    assert len(statements) == 2, "signed again only when the services changed"


@pytest.mark.parametrize("raw, reason", [
    ('{"node":"core-a","seq":9,"ts":1000}', "unsigned"),
    ("v3.1...core-a|x", "unsigned"),
    ("garbage", "malformed"),
    ("v2.abcd.core-a|1|1000|x|{}", "malformed"),
])
def test_unsigned_or_malformed(raw: str, reason: str) -> None:
    with pytest.raises(hbm.Rejected) as err:
        check(raw)
    assert err.value.reason == reason


def test_forged_with_another_key() -> None:
    with pytest.raises(hbm.Rejected) as err:
        check(signer(key=b"attacker").encode(beat()))
    assert err.value.reason == "bad-signature"


def test_tampered_statement_breaks_the_signature() -> None:
    raw = signer().encode(beat()).replace('"healthy":true', '"healthy":false')
    with pytest.raises(hbm.Rejected) as err:
        check(raw)
    assert err.value.reason == "bad-signature"


def test_a_token_not_of_the_chain_is_refused() -> None:
    sg = signer()
    state, _ = run([sg.encode(beat(1000.0))])
    raw = sg.encode(beat(1001.0))
    v, slot, token, sig, stmt = raw.split(".", 4)
    forged = ".".join([v, slot, "11" * 32, sig, stmt])  # the statement copied, a made-up token
    with pytest.raises(hbm.Rejected) as err:
        check(forged, arrival=1001.1, state=state)
    assert err.value.reason == "bad-token"
    ahead = ".".join([v, str(int(slot) + 4), token, sig, stmt])  # a disclosed token moved to a later slot
    with pytest.raises(hbm.Rejected) as err:
        check(ahead, arrival=1003.1, state=state)
    assert err.value.reason == "bad-token"


def test_unknown_node_has_no_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    with pytest.raises(hbm.Rejected) as err:
        check(signer("ghost").encode(beat(node="ghost")), field="ghost", keys=hbm.KeyRing())
    assert err.value.reason == "unknown-node"


def test_beat_filed_under_another_node_is_refused() -> None:
    raw = signer().encode(beat(node="core-a"))
    with pytest.raises(hbm.Rejected) as err:
        check(raw, field="core-b", keys=ring(**{"core-b": KEY}))
    assert err.value.reason == "node-mismatch"


def test_replayed_token_and_sequence() -> None:
    sg = signer()
    first = sg.encode(beat(1000.0))
    state, (hb,) = run([first])
    with pytest.raises(hbm.Rejected) as err:
        hbm.check_beat("core-a", first.encode(), 1000.3, ring().get("core-a"), state, 10.0)
    assert err.value.reason == "replayed"
    with pytest.raises(hbm.Rejected) as err:
        check(first, last=hb.seq)
    assert err.value.reason == "replayed"


def test_an_older_statement_with_a_fresh_token_is_a_replay() -> None:
    """The services a node reported before cannot be paired with a token it discloses now."""
    sg = signer()
    old = sg.encode(beat(1000.0, services=SERVICES))
    state, _ = run([old, sg.encode(beat(1001.0, services={}))])
    fresh = sg.encode(beat(1002.0, services={}))
    v, slot, token, _sig, _stmt = fresh.split(".", 4)
    _, _, _, old_sig, old_stmt = old.split(".", 4)
    with pytest.raises(hbm.Rejected) as err:
        check(".".join([v, slot, token, old_sig, old_stmt]), arrival=1002.1, state=state)
    assert err.value.reason == "replayed"


@pytest.mark.parametrize("arrival", [1011.0, 989.0])
def test_stale_or_future_slot(arrival: float) -> None:
    with pytest.raises(hbm.Rejected) as err:
        check(signer().encode(beat(ts=1000.0)), arrival=arrival)
    assert err.value.reason == "stale"


def test_statement_signed_but_not_json() -> None:
    sg = signer()
    raw = sg.encode(beat())
    v, slot, token, _sig, stmt = raw.split(".", 4)
    bad = stmt.rsplit("|", 1)[0] + "|not json"
    with pytest.raises(hbm.Rejected) as err:
        check(".".join([v, slot, token, hbm.sign(KEY, bad), bad]))
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


def test_a_key_registered_later_is_found_without_rereading_the_disk_every_beat(tmp_path, monkeypatch) -> None:
    """The detector is a long-lived loop: it may start before the operator registered a node's key."""
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    now = [100.0]
    keys = hbm.KeyRing(clock=lambda: now[0])
    assert keys.get("late") is None and keys.missing()
    hbm.provision(["late"])
    now[0] += keys.retry_missing / 2
    assert keys.get("late") is None, "not looked up again at once"
    now[0] += keys.retry_missing
    assert keys.get("late") is not None and not keys.missing()
    raw = hbm.HeartbeatSigner("late", hbm.ensure_heartbeat_key("late")).encode(beat(node="late"))
    assert check(raw, field="late", keys=keys).node == "late"


def _provisioned(tmp_path, monkeypatch) -> hbm.KeyRing:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    hbm.provision(["core-a", "core-b"])
    return hbm.KeyRing()


def test_a_node_key_cannot_sign_a_beat_that_verifies_as_another_node(tmp_path, monkeypatch) -> None:
    """Issue 11 item 4: core-a's own key (all core-a has) signs core-a's beats, and no beat core-b's is believed."""
    ring_ = _provisioned(tmp_path, monkeypatch)
    a_key = hbm.ensure_heartbeat_key("core-a")
    assert check(hbm.HeartbeatSigner("core-a", a_key).encode(beat(node="core-a")), keys=ring_).node == "core-a"
    forged = hbm.HeartbeatSigner("core-b", a_key).encode(beat(node="core-b"))  # names core-b, signed by core-a
    with pytest.raises(hbm.Rejected) as err:
        check(forged, field="core-b", keys=ring_)
    assert err.value.reason == "bad-signature"
    # the registry holds public keys only: the detector's ring can verify every node and sign as none
    assert "PRIVATE" not in hbm.registry_path().read_text()
    assert all(type(ring_.get(n)).__name__ == "Ed25519PublicKey" for n in ("core-a", "core-b"))
    # and the key files are each node's own, 0600
    for n in ("core-a", "core-b"):
        assert stat.S_IMODE(os.stat(hbm.heartbeat_key_file(n)).st_mode) == 0o600


def test_the_registry_decides_which_key_is_a_nodes(tmp_path, monkeypatch) -> None:
    """A key the operator did not register is refused, and re-registering (rotation) takes effect."""
    ring_ = _provisioned(tmp_path, monkeypatch)
    other = hbm.private_key(b"not registered")
    with pytest.raises(hbm.Rejected) as err:
        check(hbm.HeartbeatSigner("core-a", other).encode(beat()), keys=ring_)
    assert err.value.reason == "bad-signature"
    hbm.register({"core-a": hbm.public_of(other)})
    assert ring_.refresh()
    assert check(hbm.HeartbeatSigner("core-a", other).encode(beat()), keys=ring_).node == "core-a"


def test_claims_are_signed_by_the_node_they_name(tmp_path, monkeypatch) -> None:
    ring_ = _provisioned(tmp_path, monkeypatch)
    claim = {"node": "core-a", "epoch": 3, "service": "ledger", "reason": "probe failed"}
    signed = hbm.sign_claim(hbm.ensure_heartbeat_key("core-a"), claim)
    assert hbm.verify_claim(signed, ring_) is None
    assert hbm.verify_claim(claim, ring_) == "unsigned"
    assert hbm.verify_claim({**signed, "epoch": 4}, ring_) == "bad-signature"
    by_b = hbm.sign_claim(hbm.ensure_heartbeat_key("core-b"), claim)  # core-b speaking for core-a
    assert hbm.verify_claim(by_b, ring_) == "bad-signature"
    assert hbm.verify_claim({**signed, "node": "ghost"}, ring_) == "unknown-node"


def test_a_statement_more_than_a_checkpoint_old_cannot_ride_on_a_fresh_token() -> None:
    """Even a verifier with no memory (a new leader) refuses an old signed statement paired with a new token:
    the node signs a new checkpoint at least every CHECKPOINT_SECONDS, so an older one is a replay."""
    sg = signer()
    first = sg.encode(beat(1000.0))
    later = [sg.encode(beat(1000.0 + i)) for i in range(1, 71)]
    assert later[-1].split(".", 4)[4] != first.split(".", 4)[4], "a new checkpoint was signed meanwhile"
    v, slot, token, _sig, _stmt = later[-1].split(".", 4)
    _, _, _, old_sig, old_stmt = first.split(".", 4)
    with pytest.raises(hbm.Rejected) as err:
        check(".".join([v, slot, token, old_sig, old_stmt]), arrival=1070.1)
    assert err.value.reason == "stale"
    assert check(later[-1], arrival=1070.1).ts == 1070.0


def test_nodes_started_together_spread_their_statement_signatures() -> None:
    """Each new statement costs the detector an Ed25519 verify: 100 nodes started in the same second must not
    re-sign in the same second a minute later (10,000 of them did, and the deferred beats made waves of false
    suspicions). Every statement still lasts at most CHECKPOINT_SECONDS, the bound the verifier holds it to."""
    signers = [hbm.HeartbeatSigner(f"n{i}", KEY, step=0.5) for i in range(100)]
    resigned: list[int] = []
    for sg in signers:
        last_stmt, last_at, first = None, 0.0, None
        for k in range(0, 300):  # 150 s of beats every half second
            ts = 1000.0 + k * 0.5
            stmt = sg.encode(beat(ts, node=sg.node, services={})).split(".", 4)[4]
            if stmt != last_stmt:
                if last_stmt is not None:
                    assert ts - last_at <= hbm.CHECKPOINT_SECONDS + 0.5, "a statement outlived the checkpoint bound"
                    first = ts if first is None else first
                last_stmt, last_at = stmt, ts
        assert first is not None, "no node signed a second statement in 150 s"
        resigned.append(int(first))
    busiest = max(resigned.count(t) for t in set(resigned))
    assert busiest <= 15, f"{busiest} of 100 nodes re-signed in the same second"
