"""Steward approvals: signed statements verified against the keys declared in ops/stewards.yml, k of n distinct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuity.config import parse_text
from continuity.errors import ConfigError
from continuity.signing import create_key
from continuity.stewardship import Stewardship, parse_stewardship, sign, subject

NOW = 1_700_000_000.0
SUBJ = subject("drill", "service-crash")


@pytest.fixture
def keys(tmp_path: Path):
    return {n: create_key(tmp_path / "k" / f"{n}.ed25519", "operator", n) for n in ("alice", "bob", "carol", "mallory")}


def stewards_yaml(keys, k: int = 2, extra: str = "") -> str:
    members = "\n".join(f'    - {{name: {n}, key: "{keys[n].public.line()}"}}' for n in ("alice", "bob", "carol"))
    return f"version: 1\nstewardship:\n  group: circle\n  approvals_needed: {k}\n  max_validity: 2h\n" \
           f"  members:\n{members}\n{extra}"


def group(keys, k: int = 2, extra: str = "") -> Stewardship:
    return parse_stewardship(parse_text(stewards_yaml(keys, k, extra), "ops/stewards.yml"), ["service-crash",
                                                                                             "node-partition"])


def raw(a) -> str:
    return json.dumps(a.to_dict())


def test_k_distinct_valid_approvals_count(keys) -> None:
    st = group(keys)
    one = st.tally(SUBJ, [raw(sign(keys["alice"], SUBJ, NOW, 600))], NOW + 1)
    assert not one.ok and [n for _a, n in one.valid] == ["alice"]
    two = st.tally(SUBJ, [raw(sign(keys["alice"], SUBJ, NOW, 600)), raw(sign(keys["bob"], SUBJ, NOW, 600))], NOW + 1)
    assert two.ok and sorted(a["name"] for a in two.approvers()) == ["alice", "bob"]


def test_duplicates_by_one_steward_count_once(keys) -> None:
    st = group(keys)
    t = st.tally(SUBJ, [raw(sign(keys["alice"], SUBJ, NOW, 600)), raw(sign(keys["alice"], SUBJ, NOW + 5, 600))],
                 NOW + 10)
    assert not t.ok and len(t.valid) == 1
    assert "missing 1" in st.missing(t, "continuity drill approve service-crash")


def test_wrong_key_forged_signature_is_not_counted(keys) -> None:
    st = group(keys, k=1)
    real = sign(keys["alice"], SUBJ, NOW, 600)
    forged = sign(keys["mallory"], SUBJ, NOW, 600).to_dict() | {"approver": keys["alice"].key_id}
    t = st.tally(SUBJ, [json.dumps(forged)], NOW + 1)
    assert not t.ok and "does not match" in t.ignored[0]
    altered = real.to_dict() | {"exp": NOW + 7000}  # stretched validity: the signature no longer covers it
    assert not st.tally(SUBJ, [json.dumps(altered)], NOW + 1).ok
    assert st.tally(SUBJ, [raw(real)], NOW + 1).ok


def test_not_a_steward(keys) -> None:
    st = group(keys, k=1)
    t = st.tally(SUBJ, [raw(sign(keys["mallory"], SUBJ, NOW, 600))], NOW + 1)
    assert not t.ok and "is not a steward of circle" in t.ignored[0]


def test_expired_future_too_long_and_other_subject(keys) -> None:
    st = group(keys, k=1)
    a = sign(keys["alice"], SUBJ, NOW, 600)
    assert st.tally(SUBJ, [raw(a)], NOW + 599).ok
    expired = st.tally(SUBJ, [raw(a)], NOW + 601)
    assert not expired.ok and "expired" in expired.ignored[0]
    assert "future" in st.tally(SUBJ, [raw(sign(keys["alice"], SUBJ, NOW + 3600, 600))], NOW).ignored[0]
    assert "longer than" in st.tally(SUBJ, [raw(sign(keys["alice"], SUBJ, NOW, 3 * 3600))], NOW + 1).ignored[0]
    other = st.tally(SUBJ, [raw(sign(keys["alice"], subject("drill", "node-partition"), NOW, 600))], NOW + 1)
    assert not other.ok and "made for drill:node-partition" in other.ignored[0]
    assert "malformed" in st.tally(SUBJ, ["{nope", json.dumps({"subject": SUBJ})], NOW).ignored[0]


def test_the_acting_operator_is_not_their_own_second_operator(keys) -> None:
    st = group(keys)
    subj = subject("failover", "ledger")
    mine = raw(sign(keys["alice"], subj, NOW, 600))
    assert not st.tally(subj, [mine], NOW + 1, exclude=keys["alice"].key_id, required=1).ok
    assert st.tally(subj, [mine], NOW + 1, exclude=keys["bob"].key_id, required=1).ok


def test_what_needs_approval(keys) -> None:
    st = group(keys, extra="  require: {scenarios: [node-partition], exempt: [service-crash], game_days: true}\n")
    assert not st.drill_needs_approval("service-crash", "service-crash")  # exempt
    assert st.drill_needs_approval("service-crash", "service-crash", game_day=True)  # game days: all
    assert st.drill_needs_approval("node-partition", "link-partition")  # named
    assert st.drill_needs_approval("x", "node-kill") and not st.drill_needs_approval("x", "link-latency")
    lax = group(keys, extra="  require: {destructive: false, game_days: false}\n")
    assert not lax.drill_needs_approval("x", "node-kill", game_day=True)


@pytest.mark.parametrize(("change", "where", "message"), [
    ("approvals_needed: 2", "stewards.yml:4: stewardship.approvals_needed", "group has 3"),
    ("key: \"continuity-ed25519 zz", "stewards.yml:7: stewardship.members[0].key", "expected `continuity-ed25519"),
    ("require: {scenarios: [nope]}", "stewards.yml:10: stewardship.require.scenarios[0]", "unknown scenario 'nope'"),
    ("approvals_needed: 0", "stewards.yml:4: stewardship.approvals_needed", "at least 1"),
])
def test_config_errors_name_file_line_and_key(keys, change: str, where: str, message: str) -> None:
    text = stewards_yaml(keys, extra="  require: {game_days: true}\n")
    if change.startswith("approvals_needed: 2"):
        text = text.replace("approvals_needed: 2", "approvals_needed: 4")
    elif change.startswith("key:"):
        text = text.replace(f'key: "{keys["alice"].public.line()}"', 'key: "continuity-ed25519 zz"')
    elif change.startswith("require"):
        text = text.replace("require: {game_days: true}", change)
    else:
        text = text.replace("approvals_needed: 2", change)
    with pytest.raises(ConfigError) as exc:
        parse_stewardship(parse_text(text, "ops/stewards.yml"), ["service-crash"])
    assert str(exc.value).startswith("ops/" + where) and message in str(exc.value)


def test_key_file_members_and_duplicate_keys(keys, tmp_path: Path) -> None:
    pub = tmp_path / "k" / "alice.ed25519.pub"
    text = (f"stewardship:\n  group: g\n  members:\n    - {{name: alice, key_file: {pub}}}\n"
            f'    - {{name: al, key: "{keys["alice"].public.line()}"}}\n')
    with pytest.raises(ConfigError, match=r"stewards.yml:5: .*already alice's"):
        parse_stewardship(parse_text(text, "stewards.yml"))
    ok = parse_stewardship(parse_text(text.split("    - {name: al,")[0], "stewards.yml"))
    assert ok.members[0].key_id == keys["alice"].key_id
