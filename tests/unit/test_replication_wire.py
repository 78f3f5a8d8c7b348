"""Replication frames: what the sender sealed is what the receiver opens, and nothing else is ever opened."""

from __future__ import annotations

import io

import pytest

from continuity.replication import wire
from continuity.replication.wire import Message, Opener, Sealer, WireError

KEY = b"k" * 32
OTHER = b"o" * 32


def _frames(sealer: Sealer, *msgs: Message) -> list[bytes]:
    """Each message sealed, as the receiver's read_frame gives them back."""
    stream = io.BytesIO(b"".join(sealer.seal(m) for m in msgs))
    return [wire.read_frame(stream) for _ in msgs]


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_sealed_frame_opens_to_the_same_message(encrypt: bool) -> None:
    msgs = [Message("data", {"epoch": 3, "start": [0, 0, "x"]}, b'{"seq": 1}\n' * 100), Message("idle"),
            Message("ack", {"at": [5, 1, "y"]})]
    frames = _frames(Sealer(KEY, encrypt), *msgs)
    opener = Opener(KEY, encrypt)
    assert [opener.open(f) for f in frames] == msgs


def test_encryption_hides_the_payload_and_a_mac_does_not() -> None:
    secret = b'{"seq": 1, "card": "4111111111111111"}\n'
    assert secret in Sealer(KEY, False).seal(Message("data", {}, secret))
    assert secret not in Sealer(KEY, True).seal(Message("data", {}, secret))


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_frame_sealed_with_another_nodes_key_is_refused(encrypt: bool) -> None:
    """A forged sender: someone without the primary's key cannot make a frame the standby accepts."""
    (frame,) = _frames(Sealer(OTHER, encrypt), Message("data", {"epoch": 9}, b"x\n"))
    with pytest.raises(WireError) as exc:
        Opener(KEY, encrypt).open(frame)
    assert exc.value.reason == "bad-mac"


@pytest.mark.parametrize("encrypt", [False, True])
def test_an_altered_byte_anywhere_is_refused(encrypt: bool) -> None:
    (frame,) = _frames(Sealer(KEY, encrypt), Message("data", {"epoch": 2}, b'{"seq": 1}\n'))
    for i in range(0, len(frame), 7):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(WireError, match="bad-mac"):
            Opener(KEY, encrypt).open(bytes(bad))


@pytest.mark.parametrize("encrypt", [False, True])
def test_replayed_or_reordered_frames_are_refused(encrypt: bool) -> None:
    first, second = _frames(Sealer(KEY, encrypt), Message("data", {"n": 1}), Message("data", {"n": 2}))
    opener = Opener(KEY, encrypt)
    with pytest.raises(WireError, match="bad-mac"):
        opener.open(second)  # out of order
    opener = Opener(KEY, encrypt)
    assert opener.open(first).header == {"n": 1}
    with pytest.raises(WireError, match="bad-mac"):
        opener.open(first)  # replayed


def test_session_keys_differ_per_direction_connection_and_node() -> None:
    hello = {"service": "ledger", "source": "ledger.jsonl", "standby": "b", "primary": "a", "nonce": "n1"}
    base = wire.session_key(KEY, "p2s", hello, "n2")
    assert base == wire.session_key(KEY, "p2s", dict(hello), "n2")
    assert base != wire.session_key(KEY, "s2p", hello, "n2")
    assert base != wire.session_key(KEY, "p2s", hello, "n3")  # another connection
    assert base != wire.session_key(KEY, "p2s", {**hello, "nonce": "n9"}, "n2")
    assert base != wire.session_key(OTHER, "p2s", hello, "n2")


def test_signed_plain_frames_verify_only_with_the_signers_key() -> None:
    doc = wire.sign(KEY, {"t": "welcome", "epoch": 4, "nonce": "abc"})
    assert wire.signed_by(KEY, doc)
    assert not wire.signed_by(OTHER, doc)
    assert not wire.signed_by(KEY, {**doc, "epoch": 5})
    assert not wire.signed_by(KEY, {k: v for k, v in doc.items() if k != "mac"})


def test_oversized_and_truncated_frames_are_refused_before_reading_them() -> None:
    with pytest.raises(WireError, match="too-large"):
        wire.read_frame(io.BytesIO(wire.LEN.pack(wire.MAX_FRAME + 1)))
    with pytest.raises(wire.Closed):
        wire.read_frame(io.BytesIO(wire.LEN.pack(10) + b"short"))
    with pytest.raises(WireError, match="malformed"):
        wire.read_plain(io.BytesIO(wire.LEN.pack(5) + b"[1,2]"))
