"""Postmortem action items: what a drill or an incident taught, who fixes it, by when, and the signed trail.

The seed plan makes the stewardship circle accountable for postmortem actions; this module is the item and its
trail as code. An item is a sequence of **statements**, each signed with an operator key (``continuity operator
keygen``):

- ``add`` — the item itself: the record it came from (a drill or failover id), a title, an owner and a due date;
- ``approve`` — a steward of ``ops/stewards.yml`` accepts the item as the fix (optional, any number);
- ``close`` — the item is done, with a note; signed by a steward when stewards are declared (the circle is
  accountable for closure), else by any operator key.

Each statement carries its signer's public key and names the statement before it by hash, so the trail is a
chain: a statement that does not verify, is out of place, or (for ``approve``/``close``) is signed by a key the
stewards file does not list, is **not counted** and is shown as such. Redis only stores the statements
(:mod:`continuity.state.actions`); nothing here is believed because it came from there.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from continuity.signing import PublicKey, SigningKey
from continuity.state import actions as action_state
from continuity.stewardship import Stewardship

LABEL = b"continuity-action v1\n"
OPS = ("add", "approve", "close")
MAX_TEXT = 500


@dataclass(frozen=True)
class Statement:
    """One signed step of an item's trail."""

    item: str
    op: str
    at: float
    body: dict[str, Any]  # add: record, title, owner, due; approve/close: note
    prev: str  # hash of the statement before it ("" for add)
    key: str  # signer's public key, hex
    sig: str  # hex

    def signed_bytes(self) -> bytes:
        return message(self.item, self.op, self.at, self.body, self.prev, self.key)

    @property
    def key_id(self) -> str:
        return PublicKey(bytes.fromhex(self.key)).key_id

    def digest(self) -> str:
        return hashlib.sha256(self.signed_bytes() + bytes.fromhex(self.sig)).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"item": self.item, "op": self.op, "at": self.at, "body": self.body, "prev": self.prev,
                           "key": self.key, "sig": self.sig}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Statement:
        d = json.loads(raw)
        if not isinstance(d, dict) or not isinstance(d.get("body"), dict):
            raise ValueError("not an action statement")
        return cls(str(d["item"]), str(d["op"]), float(d["at"]), dict(d["body"]), str(d["prev"]), str(d["key"]),
                   str(d["sig"]))


def message(item: str, op: str, at: float, body: Mapping[str, Any], prev: str, key: str) -> bytes:
    """The signed bytes, under a label so the signature means nothing anywhere else."""
    return LABEL + json.dumps([item, op, repr(float(at)), dict(body), prev, key], sort_keys=True,
                              separators=(",", ":")).encode()


def sign(key: SigningKey, item: str, op: str, body: Mapping[str, Any], prev: str, now: float) -> Statement:
    if op not in OPS:
        raise ValueError(f"unknown action op {op!r}")
    pub = key.public.raw.hex()
    sig = key.sign(message(item, op, now, body, prev, pub)).hex()
    return Statement(item, op, now, dict(body), prev, pub, sig)


@dataclass
class ActionItem:
    """An item as its verified trail says it is; ``ignored`` says why any stored statement did not count."""

    id: str
    record: str
    title: str
    owner: str
    due: float
    created_by: str
    created_at: float
    approvals: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[str, Any] | None = None
    ignored: list[str] = field(default_factory=list)
    head: str = ""  # hash of the last counted statement: what the next one chains to

    @property
    def status(self) -> str:
        return "closed" if self.closed else "open"

    def overdue(self, now: float) -> bool:
        return self.closed is None and now > self.due

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        out = {"id": self.id, "record": self.record, "title": self.title, "owner": self.owner, "due": self.due,
               "status": self.status, "created_by": self.created_by, "created_at": self.created_at,
               "approvals": self.approvals, "closed": self.closed, "ignored": self.ignored}
        if now is not None:
            out["overdue"] = self.overdue(now)
        return out


def _signer(st: Statement) -> str | None:
    """Why the signature does not hold, or None when it does."""
    try:
        pub = PublicKey(bytes.fromhex(st.key))
        ok = pub.verify(bytes.fromhex(st.sig), st.signed_bytes())
    except ValueError:
        return "a malformed key or signature"
    return None if ok else f"key {st.key_id}: signature does not match (forged or altered)"


def fold(item_id: str, raws: Iterable[str | bytes], stewards: Stewardship | None) -> ActionItem | None:
    """The item ``item_id`` from its stored statements (in stored order), or None when no valid ``add`` exists.

    Every statement must verify, name the previous counted statement by hash, and be signed by a key allowed its
    op: an ``approve`` by a steward (never counted without ops/stewards.yml), a ``close`` by a steward when
    stewards are declared. Nothing after a counted ``close`` counts.
    """
    item: ActionItem | None = None
    head = ""
    ignored: list[str] = []
    for raw in raws:
        try:
            st = Statement.from_json(raw)
            st.key_id  # noqa: B018 - a key that is not hex fails here
        except (ValueError, KeyError, TypeError):
            ignored.append("a malformed statement")
            continue
        why = _signer(st)
        if why is None and st.item != item_id:
            why = f"made for item {st.item}"
        if why is None and st.prev != head:
            why = f"{st.op} by key {st.key_id}: out of place in the trail (replayed or reordered)"
        if why is None and st.op == "add" and item is not None:
            why = "a second add"
        if why is None and st.op != "add" and item is None:
            why = f"{st.op} before the item was added"
        if why is None and item is not None and item.closed is not None:
            why = f"{st.op} after the item was closed"
        steward = stewards.member(st.key_id) if stewards is not None and why is None else None
        if why is None and st.op == "approve" and steward is None:
            why = (f"approve by key {st.key_id}: not a steward"
                   + ("" if stewards is None else f" of {stewards.group}"))
        if why is None and st.op == "close" and stewards is not None and steward is None:
            why = f"close by key {st.key_id}: not a steward of {stewards.group}"
        if why is None and st.op == "add":
            b = st.body
            if not all(isinstance(b.get(f), str) for f in ("record", "title", "owner")) or \
                    not isinstance(b.get("due"), int | float):
                why = "an add without record, title, owner and due"
        if why is not None:
            ignored.append(why)
            continue
        head = st.digest()
        by = {"key_id": st.key_id, "name": steward.name if steward else None, "at": st.at,
              "note": str(st.body.get("note", ""))}
        if st.op == "add":
            b = st.body
            item = ActionItem(item_id, b["record"], b["title"], b["owner"], float(b["due"]), st.key_id, st.at)
        elif st.op == "approve":
            assert item is not None
            item.approvals.append(by)
        else:
            assert item is not None
            item.closed = by
    if item is not None:
        item.ignored, item.head = ignored, head
    return item


def new_id(record: str, title: str, now: float | None = None) -> str:
    """A short id, different for each add (record, title and the moment)."""
    seed = f"{record}\n{title}\n{now if now is not None else time.time()!r}".encode()
    return "A-" + hashlib.sha256(seed).hexdigest()[:8]


def load(client: Any, stewards: Stewardship | None) -> list[ActionItem]:
    """Every item whose ``add`` verifies, open ones first, each by due date."""
    items = (fold(i, raws, stewards) for i, raws in action_state.read_all(client).items())
    return sorted((i for i in items if i is not None), key=lambda i: (i.closed is not None, i.due))


def overdue(items: Iterable[ActionItem], now: float) -> list[ActionItem]:
    return sorted((i for i in items if i.overdue(now)), key=lambda i: i.due)


__all__ = ["ActionItem", "Statement", "fold", "load", "new_id", "overdue", "sign"]
