"""Failover records as Redis holds them: one hash per record that never expires, and a history sorted by start.

Steps run in different processes, so each writes only its own fields and nothing is read-modified-written:

============================  ==========================================================================
field                         value (JSON unless said)
============================  ==========================================================================
``meta``                      who, why, trigger, old primary, candidate, fallbacks, start, detection
``outcome``                   plain text: ``running`` until closed, then one of :data:`FINAL`
``finished``                  {at, ...detail}; set once (``HSETNX``): the first close wins
``a:<attempt>``               {candidate, expected_epoch} of each attempt
``c:<attempt>``               the chain context of that attempt (what the watchdog resends)
``s:<attempt>:<step>``        {start, node, epoch}; ``HSETNX``: a redelivered step keeps its first start
``r:<attempt>:<step>``        plain integer: how many redeliveries of the step came after the first
``e:<attempt>:<step>``        {end, ok, ...detail}
============================  ==========================================================================

Operations and their guarantees:

- :func:`create` — meta, ``running`` and the history entry in one ``MULTI``: a record is never in the history
  without its meta, nor the reverse.
- :func:`step_started` — ``HSETNX`` of the start; False (and a redelivery counted) when the step had started.
- :func:`step_finished` — ``HSET`` of the end; returns the start time it pairs with.
- :func:`set_attempt`, :func:`close` (``HSETNX finished``: exactly one close takes effect), :func:`is_closed`,
  :func:`read`,
  :func:`recent_ids`, :func:`history_ids`.
- :func:`outcomes` — every record's service, kind, outcome, start and detection, newest first, in one pipelined
  round trip (two fields per record, not the whole hash): what counters over all failovers need.
- :class:`RawRecord` is the one parser of those fields (the watchdog's scan, the reading form
  :func:`assemble` used by ``failover show``/``history``, reports and drills).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from continuity.state import keys

FINAL = ("succeeded", "failed", "escalated", "superseded")
RUNNING = "running"


def _start_field(attempt: int, step: str) -> str:
    return f"s:{attempt}:{step}"


def _end_field(attempt: int, step: str) -> str:
    return f"e:{attempt}:{step}"


def _redelivered_field(attempt: int, step: str) -> str:
    return f"r:{attempt}:{step}"


@dataclass(frozen=True)
class RawRecord:
    """A record's hash as read (field -> text), with the parsing of each field in one place."""

    fields: Mapping[str, str]

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.fields["meta"])

    @property
    def outcome(self) -> str:
        return self.fields.get("outcome", RUNNING)

    @property
    def is_open(self) -> bool:
        return self.outcome == RUNNING and "finished" not in self.fields

    def step_start(self, attempt: int, step: str) -> dict[str, Any] | None:
        raw = self.fields.get(_start_field(attempt, step))
        return json.loads(raw) if raw else None

    def step_end(self, attempt: int, step: str) -> dict[str, Any] | None:
        raw = self.fields.get(_end_field(attempt, step))
        return json.loads(raw) if raw else None

    def step_ok(self, attempt: int, step: str) -> bool:
        return bool((self.step_end(attempt, step) or {}).get("ok"))

    def attempt(self, n: int) -> dict[str, Any] | None:
        """{candidate, expected_epoch} of attempt ``n`` (None when the record never started it)."""
        raw = self.fields.get(f"a:{n}")
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def latest_attempt(self) -> tuple[int, dict[str, Any]] | None:
        """(attempt number, chain context) of the newest attempt that stored a context."""
        attempts = [int(f[2:]) for f in self.fields if f.startswith("c:")]
        if not attempts:
            return None
        n = max(attempts)
        return n, json.loads(self.fields[f"c:{n}"])

    def last_progress(self, attempt: int) -> float:
        """The latest start or end stamp of any step of ``attempt`` (0 when none)."""
        stamps = [0.0]
        for f, v in self.fields.items():
            if f.startswith((f"s:{attempt}:", f"e:{attempt}:")):
                value = json.loads(v)
                stamps.append(float(value.get("start") or value.get("end") or 0))
        return max(stamps)


def create(client: Any, rid: str, meta: Mapping[str, Any], now: float) -> None:
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.failover_record(rid), mapping={"meta": json.dumps(meta, default=str), "outcome": RUNNING})
        pipe.zadd(keys.failover_history(), {rid: now})
        pipe.execute()


def step_started(client: Any, rid: str, attempt: int, step: str, info: Mapping[str, Any]) -> bool:
    first = bool(client.hsetnx(keys.failover_record(rid), _start_field(attempt, step), json.dumps(info)))
    if not first:
        client.hincrby(keys.failover_record(rid), _redelivered_field(attempt, step), 1)
    return first


def step_finished(client: Any, rid: str, attempt: int, step: str, info: Mapping[str, Any]) -> float | None:
    """Store the step's end; the start time it pairs with (None when the start was never recorded)."""
    key = keys.failover_record(rid)
    client.hset(key, _end_field(attempt, step), json.dumps(info, default=str))
    raw = client.hget(key, _start_field(attempt, step))
    return float(json.loads(raw)["start"]) if raw else None


def set_attempt(client: Any, rid: str, attempt: int, target: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> None:
    mapping = {f"a:{attempt}": json.dumps(target)}
    if ctx is not None:
        mapping[f"c:{attempt}"] = json.dumps(ctx, default=str)
    client.hset(keys.failover_record(rid), mapping=mapping)


def close(client: Any, rid: str, outcome: str, finished: Mapping[str, Any]) -> bool:
    """Close the record once: False (nothing changed) when it was already closed."""
    assert outcome in FINAL, outcome
    key = keys.failover_record(rid)
    if not client.hsetnx(key, "finished", json.dumps(finished, default=str)):
        return False
    client.hset(key, "outcome", outcome)
    return True


def is_closed(client: Any, rid: str) -> bool:
    """Whether the record was closed (succeeded, failed, escalated, superseded): one ``HEXISTS``."""
    return bool(client.hexists(keys.failover_record(rid), "finished"))


def read(client: Any, rid: str) -> RawRecord | None:
    raw = client.hgetall(keys.failover_record(rid))
    if not raw or "meta" not in raw:
        return None
    return RawRecord(raw)


def open_services(client: Any, since: float) -> set[str]:
    """Services with a chain still running among the records started at or after ``since``: their lease may
    name a candidate in the middle of its promotion, which is not yet (and may never be) the primary."""
    out = set()
    for rid in recent_ids(client, since):
        rec = read(client, rid)
        if rec is not None and rec.is_open:
            try:
                out.add(str(rec.meta["service"]))
            except (KeyError, ValueError):
                continue
    return out


def recent_ids(client: Any, since: float) -> list[str]:
    """Records started at or after ``since`` (unix time), oldest first."""
    return list(client.zrangebyscore(keys.failover_history(), since, "+inf"))


def history_ids(client: Any, limit: int | None = None) -> list[str]:
    """Newest first; all of them when ``limit`` is None."""
    return list(client.zrevrange(keys.failover_history(), 0, -1 if limit is None else limit - 1))


@dataclass(frozen=True)
class Outcome:
    """The few fields of a record that counting failovers needs."""

    id: str
    service: str
    kind: str
    outcome: str
    started: float
    detection: float | None


def outcomes(client: Any) -> list[Outcome]:
    """Every record, newest first; a record whose meta is unreadable is skipped."""
    ids = history_ids(client)
    with client.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hmget(keys.failover_record(rid), "meta", "outcome")
        res = pipe.execute()
    out = []
    for rid, (meta_raw, outcome) in zip(ids, res, strict=True):
        try:
            meta = json.loads(meta_raw)
            detection = meta.get("detection")
            out.append(Outcome(str(rid), str(meta["service"]), str(meta.get("kind") or "failover"),
                               str(outcome or RUNNING), float(meta.get("started") or 0.0),
                               None if detection is None else float(detection)))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return out


def assemble(raw: Mapping[str, str]) -> dict[str, Any]:
    """The reading form of a record: meta, outcome, attempts and steps with durations, MTTR."""
    rec: dict[str, Any] = json.loads(raw["meta"])
    rec["outcome"] = raw.get("outcome", RUNNING)
    finished = json.loads(raw["finished"]) if raw.get("finished") else None
    rec["finished"] = finished.get("at") if finished else None
    rec["finish_detail"] = {k: v for k, v in (finished or {}).items() if k != "at"}
    steps: list[dict[str, Any]] = []
    attempts: dict[int, dict[str, Any]] = {}
    for field, value in raw.items():
        if field.startswith("a:"):
            attempts[int(field[2:])] = json.loads(value)
        if not field.startswith("s:"):
            continue
        _, attempt, step = field.split(":", 2)
        start = json.loads(value)
        end_raw = raw.get(_end_field(int(attempt), step))
        end = json.loads(end_raw) if end_raw else {}
        entry = {"attempt": int(attempt), "step": step, "node": start.get("node"), "start": start["start"],
                 "end": end.get("end"), "ok": end.get("ok"),
                 "duration": round(end["end"] - start["start"], 6) if end.get("end") else None,
                 "redeliveries": int(raw.get(_redelivered_field(int(attempt), step), 0))}
        entry.update({k: v for k, v in end.items() if k not in ("end", "ok")})
        steps.append(entry)
    steps.sort(key=lambda s: (s["attempt"], s["start"]))
    rec["steps"] = steps
    rec["attempts"] = [dict(attempts[a], attempt=a) for a in sorted(attempts)]
    verified = [s for s in steps if s["step"] == "verify" and s["ok"]]
    promoted = [s for s in steps if s["step"] == "promote" and s["ok"]]
    rec["new_primary"] = promoted[-1]["node"] if promoted else None
    rec["epoch"] = promoted[-1].get("epoch") if promoted else None
    rec["duration"] = round(rec["finished"] - rec["started"], 6) if rec["finished"] else None
    fences = [s for s in steps if s["step"] == "fence"]
    # time spent waiting out the old lease + margin before the first fence ran (no step "owns" it)
    rec["lease_wait"] = round(fences[0]["start"] - rec["started"], 6) if fences else None
    # MTTR counted from the last sign of life of the old primary (the failure happened after it)
    origin = rec.get("last_seen") or rec["started"]
    rec["mttr"] = round(verified[-1]["end"] - origin, 6) if verified and verified[-1]["end"] else None
    return rec
