"""Signed pulse history: an attacker who rewrites events and recomputes every hash is still caught.

Each attack is made the way someone with write access to the state directory (but not the writer key)
would make it: edit, then re-chain every later event and rewrite the head so the hash chain is perfect.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from continuity.pulse import GENESIS, Pulse, event_hash, verify_file
from continuity.pulse_trust import CHECK_EVERY, sign_fields, writer_key, writer_key_path
from continuity.signing import create_key
from tests.helpers import run_cli


@pytest.fixture
def hist(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pulse_history.jsonl"


def fill(path: Path, n: int) -> list[dict]:
    p = Pulse(path=path, node="core-a")
    return [p.emit("test.tick", service="ledger", data={"i": i, "who": "alice"}) for i in range(n)]


def rewrite(path: Path, edit: Callable[[list[dict]], None]) -> None:
    """Apply ``edit`` to the events, then make the hash chain and the head perfect again."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    edit(events)
    prev = GENESIS
    for seq, ev in enumerate(events, start=1):
        ev["seq"], ev["prev"] = seq, prev
        ev["hash"] = prev = event_hash(ev)
    path.write_text("".join(json.dumps(ev, sort_keys=True, separators=(",", ":")) + "\n" for ev in events))
    path.with_name(path.name + ".head").write_text(json.dumps({"count": len(events), "hash": prev,
                                                               "size": path.stat().st_size}))


def verify_cli(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUITY_REDIS_URL"}
    return run_cli("pulse", "verify", "--file", str(path), *extra, env=env)


def one_line_failure(res: subprocess.CompletedProcess[str], path: Path, line: int | None, reason: str) -> None:
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    where = f"{path}:{line}: " if line else f"{path}: "
    assert res.stderr.startswith(f"continuity: {where}"), res.stderr
    assert reason in res.stderr, res.stderr


@pytest.mark.parametrize("victim", [3, CHECK_EVERY + 20, CHECK_EVERY + 40])  # early, mid-window, the last
def test_a_rewritten_history_with_every_hash_recomputed_fails_verify(hist: Path, victim: int) -> None:
    events = fill(hist, CHECK_EVERY + 40)

    def blame_someone_else(evs: list[dict]) -> None:
        evs[victim - 1]["data"]["who"] = "mallory"

    rewrite(hist, blame_someone_else)
    assert verify_file(hist, signatures=False).ok  # the hash chain alone is fooled ...
    res = verify_cli(hist)  # ... the signatures are not, and the changed event is the one named
    one_line_failure(res, hist, victim, f"event {events[victim - 1]['id']}: signature by key "
                                        f"{writer_key(hist).key_id} does not match: the event was changed after "
                                        f"it was signed")
    assert f"({victim - 1} events verified before it)" in res.stderr
    assert verify_cli(hist, "--hashes-only").returncode == 0


def test_removing_the_signatures_does_not_help(hist: Path) -> None:
    fill(hist, 5)

    def strip(evs: list[dict]) -> None:
        for ev in evs[2:]:
            del ev["sig"], ev["signer"]
        evs[3]["data"]["i"] = 99

    rewrite(hist, strip)
    one_line_failure(verify_cli(hist), hist, 3, "not signed")


def test_signing_with_another_key_does_not_help(hist: Path, tmp_path: Path) -> None:
    fill(hist, 5)
    mallory = create_key(tmp_path / "mallory" / "key", "pulse writer", "mallory")

    def resign(evs: list[dict]) -> None:
        evs[1]["data"]["i"] = 99
        prev = evs[0]["hash"]
        for seq, ev in enumerate(evs[1:], start=2):  # re-chain and re-sign, as a thorough attacker would
            ev["seq"], ev["prev"] = seq, prev
            ev["hash"] = prev = event_hash(ev)
            ev.update(sign_fields(mallory, ev["hash"]))

    rewrite(hist, resign)
    one_line_failure(verify_cli(hist), hist, 2, f"signed by key {mallory.key_id}, which is not among keys in")
    # pinning the attacker's key would accept it: pinning is only as good as where the pinned key came from
    assert verify_cli(hist, "--trust", str(tmp_path / "mallory" / "key.pub")).returncode == 1  # event 1 is ours


def test_pinned_keys_replace_the_state_dir_keys(hist: Path, tmp_path: Path) -> None:
    fill(hist, 4)
    pub = writer_key_path(hist).with_name(writer_key_path(hist).name + ".pub")
    kept = tmp_path / "kept-elsewhere.pub"
    kept.write_text(pub.read_text())
    other = create_key(tmp_path / "other" / "key", "pulse writer", "other")
    res = verify_cli(hist, "--trust", str(tmp_path / "other" / "key.pub"))
    one_line_failure(res, hist, 1, "which is not among the keys given with --trust")
    # an attacker who can replace files in the state dir swaps the writer key for their own and re-signs
    # everything: the local check is fooled, a pinned key is not
    writer_key_path(hist).unlink()
    pub.unlink()
    os.replace(other.path, writer_key_path(hist))

    def resign_all(evs: list[dict]) -> None:
        prev = GENESIS
        for seq, ev in enumerate(evs, start=1):
            ev["seq"], ev["prev"] = seq, prev
            ev["hash"] = prev = event_hash(ev)
            ev.update(sign_fields(other, ev["hash"]))

    rewrite(hist, resign_all)
    assert verify_cli(hist).returncode == 0
    one_line_failure(verify_cli(hist, "--trust", str(kept)), hist, 1, "not among the keys given with --trust")


def test_without_any_trusted_key_verify_says_so(hist: Path, tmp_path: Path) -> None:
    fill(hist, 3)
    pub = writer_key_path(hist).with_name(writer_key_path(hist).name + ".pub")
    kept = tmp_path / "writer.pub"
    kept.write_text(pub.read_text())
    writer_key_path(hist).unlink()
    pub.unlink()
    one_line_failure(verify_cli(hist), hist, None, "no key to check signatures against: no writer key in")
    res = verify_cli(hist, "--trust", str(kept))
    assert res.returncode == 0 and "3 events, chain intact, every event signed by" in res.stdout


def test_a_forged_line_beyond_the_head_is_not_adopted_and_signed_over(hist: Path) -> None:
    """A writer crashing between its append and its head update leaves lines the next writer adopts; a line
    someone else appended (chain-valid, with a made-up signature) must not be adopted and vouched for."""
    events = fill(hist, 3)
    forged = {"id": "forged", "ts": 1.0, "kind": "continuity_layer.failover.completed", "node": "core-a",
              "service": "ledger", "epoch": None, "data": {}, "host": "x", "seq": 4, "prev": events[-1]["hash"]}
    forged["hash"] = event_hash(forged)
    forged.update(signer=writer_key(hist).key_id, sig="00" * 64)
    with open(hist, "a") as f:
        f.write(json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n")
    after = Pulse(path=hist).emit("test.after")
    assert after["prev"] == events[-1]["hash"]  # the forged line was not adopted
    res = verify_file(hist)
    assert not res.ok and res.bad_line == 4 and res.bad_id == "forged"


def test_the_writer_key_is_private_and_stays_on_disk(hist: Path) -> None:
    events = fill(hist, 2)
    key = writer_key_path(hist)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    secret = key.read_text().split("-----")[2].strip()
    assert secret not in hist.read_text() and all(secret not in json.dumps(e) for e in events)
    key.chmod(0o644)
    from continuity import pulse_trust
    from continuity.signing import KeyFileError

    pulse_trust._writers.clear()  # a new process
    with pytest.raises(KeyFileError, match="readable by group or others"):
        Pulse(path=hist).emit("test.after")


def test_verify_holds_a_bounded_window_of_events(hist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Signatures are checked at checkpoints so a long history is verified in bounded memory."""
    from continuity import pulse

    fill(hist, 3 * CHECK_EVERY + 5)
    most = [0]
    real_add = pulse._Signatures.add

    def add(self: pulse._Signatures, lineno: int, ev: dict) -> object:
        most[0] = max(most[0], len(self.pending))
        return real_add(self, lineno, ev)

    monkeypatch.setattr(pulse._Signatures, "add", add)
    assert verify_file(hist).ok
    assert 0 < most[0] < CHECK_EVERY



def test_a_key_file_is_never_seen_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process arriving while the first one writes the key must find no key or a whole one: here it
    arrives at the worst moment, as the creator opens its file for writing."""
    from continuity import signing

    path = tmp_path / "keys" / "pulse-writer.ed25519"
    seen: list[str] = []
    real_fdopen = os.fdopen

    def arriving_meanwhile(fd: int, *args: object, **kw: object) -> object:
        if not seen:
            seen.append("arrived")
            seen.append(signing.ensure_key(path, "pulse writer", "other").key_id)  # must not raise
        return real_fdopen(fd, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "fdopen", arriving_meanwhile)
    mine = signing.ensure_key(path, "pulse writer", "first")
    assert seen[1] == mine.key_id == signing.load_key(path, "pulse writer").key_id

def _first_emit(path: str, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        out.put(Pulse(path=Path(path)).emit("test.race")["signer"])  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(f"error: {exc!r}")  # type: ignore[attr-defined]


def test_processes_starting_together_share_one_writer_key(tmp_path: Path) -> None:
    """The first emits of a fresh state dir race to create the key: every process ends up with the one key,
    none reads a half-written key file."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(2):
        hist = tmp_path / f"s{attempt}" / "pulse_history.jsonl"
        barrier, out = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_first_emit, args=(str(hist), barrier, out)) for _ in range(8)]
        for p in procs:
            p.start()
        signers = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(60)
        assert len(set(signers)) == 1 and not signers[0].startswith("error"), signers
        assert verify_file(hist).ok and verify_file(hist).count == 8
