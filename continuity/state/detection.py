"""The detector's shared state: node classifications, sweep meta, generation, the sweep journal.

Keys (all in :mod:`continuity.state.keys`): ``detector:nodes`` (hash node -> classification JSON, written by
the sweep, read by status and the planner), ``detector:meta`` (JSON: TILT, grace, storm, last sweep),
``detector:gen`` (counter bumped by every completed sweep) and ``detector:sweeps`` (stream: one entry per
sweep, trimmed). Who may sweep is :mod:`continuity.state.detector_leader`'s (the leader lease).

Operations and their guarantees:

- :data:`SNAPSHOT` — one server-side call per sweep: Redis ``TIME``, the generation, meta and mode, and either
  everything (heartbeats, arrivals, states: when the caller's generation is stale) or the drained pending
  batch plus an audit slice of the heartbeat hash. Draining is atomic with the read, so a beat is seen by
  exactly one sweep or ingest slice (and stays in the heartbeat hash for the audit).
- :data:`INGEST` — drains the pending batch only while the caller's generation is current (a process whose
  memory is stale never swallows beats).
- :func:`read` — the sweep's one round trip (:data:`SNAPSHOT` + every service's lease, holder, failed marker and
  epoch) parsed into an immutable :class:`Snapshot`; :func:`read_beats` — the recheck's second look.
- :func:`drain` — one ingest slice (:data:`INGEST`).
- :func:`write` — a sweep's states, meta, mode, storm incidents and journal entry in one ``MULTI`` under
  ``WATCH`` of the leader lease, which it renews: nothing is written by a process that lost the lease
  (:func:`continuity.state.detector_leader.guard`).
- :func:`sweeps` — the journal as :class:`SweepMark` entries (oldest first), for gaps in the detector's watch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, WatchError

from continuity.state import detector_leader, heartbeats, incidents, keys, leases
from continuity.state import mode as state_mode
from continuity.state.controls import GLOBAL as GLOBAL_PAUSE
from continuity.state.scripts import Script

# One server-side call per sweep. Steady state ("delta"): it drains the pending hash, where the agent's beat
# script puts each beat it stores (node -> "<arrival> <beat>", one entry per node however many beats came),
# and returns a rotating HSCAN slice of the heartbeat hash for the audit (a beat written there by anything but
# the beat script is still verified and reported). When another process swept since our last sweep (generation
# changed) our memory is stale, so it returns everything instead ("full"): all beats, arrivals and states.
# Values come back joined into a few big strings (parsing 20,000 replies costs more than the sweep may take).
# In the full read and the audit a newline inside a value (only a forger writes one) is blanked so it cannot
# shift the pairs; the drained batch is joined as is and its element count returned, so the sweep can detect
# a shifted batch and fall back to a full read instead of paying a scan of every value every second.
# KEYS: hb arrivals states meta mode generation pending
# ARGV: generation we hold ('-' forces a full read), audit cursor, audit count
SNAPSHOT = Script("detector.snapshot", """
local function flat(a)
  for i = 1, #a do
    if string.find(a[i], '\\n', 1, true) then a[i] = (string.gsub(a[i], '\\n', ' ')) end
  end
  return table.concat(a, '\\n')
end
local t = redis.call('TIME')
local gen = redis.call('GET', KEYS[6]) or '0'
local pending = redis.call('HGETALL', KEYS[7])
if #pending > 0 then redis.call('DEL', KEYS[7]) end
local out = {t[1], t[2], gen, redis.call('GET', KEYS[4]) or '', redis.call('GET', KEYS[5]) or ''}
if ARGV[1] ~= gen then
  out[6] = 'full'
  out[7] = flat(redis.call('HGETALL', KEYS[1]))
  out[8] = flat(redis.call('HGETALL', KEYS[2]))
  out[9] = flat(redis.call('HGETALL', KEYS[3]))
else
  local scan = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
  out[6] = 'delta'
  out[7] = table.concat(pending, '\\n')
  out[8] = tostring(#pending)
  out[9] = scan[1]
  out[10] = flat(scan[2])
end
return out
""")

# One ingest slice: drain the pending hash, but only while the caller's memory is current (the generation in
# Redis is the one it holds); otherwise leave it to the sweep. Same batch form as the sweep's delta drain.
# KEYS: generation pending   ARGV: generation we hold
INGEST = Script("detector.ingest", """
local gen = redis.call('GET', KEYS[1]) or '0'
if gen ~= ARGV[1] then return {'stale', gen} end
local pending = redis.call('HGETALL', KEYS[2])
if #pending > 0 then redis.call('DEL', KEYS[2]) end
return {'ok', gen, table.concat(pending, '\\n'), tostring(#pending)}
""")


@dataclass(frozen=True)
class Snapshot:
    """One sweep's view of the fleet, read in one round trip. Frozen: no field is reassigned after the read; the
    sweep's recheck only adds beats it found late to ``entries``."""


    now: float
    full: bool
    entries: dict[str, tuple[bytes, bytes | None]]  # node -> (raw beat, arrival) to consider
    states: dict[str, str] | None  # None: unchanged since the generation we hold
    generation: str
    meta: str
    mode: str
    leases: dict[str, leases.Lease | None]
    records: dict[str, leases.Lease | None] = field(default_factory=dict)  # last holder per service (no TTL)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> its service-failed marker
    epochs: dict[str, int] = field(default_factory=dict)  # service -> current fencing epoch (with a marker)
    audit: dict[str, bytes] = field(default_factory=dict)  # delta only: a slice of the heartbeat hash
    misaligned: bool = False  # the drained batch had a newline inside a value: re-read in full
    cursor: str | None = None  # delta only: where the next audit slice starts
    pauses: dict[str, Any] = field(default_factory=dict)  # scope (GLOBAL_PAUSE: the fleet) -> raw pause note


def _eval_raw(pipe: Any, sha: str, keys_: list[str], args: list[Any]) -> None:
    """Queue EVALSHA with replies left as bytes: beats are checked as bytes, and a forged value that is not
    UTF-8 must not make the sweep's read fail."""
    pipe.execute_command("EVALSHA", sha, len(keys_), *keys_, *args, **{NEVER_DECODE: []})


def read(client: Any, services: Sequence[str], generation: str, cursor: str, audit_count: int,
         names: Callable[[Iterable[bytes]], Iterable[str]]) -> Snapshot:
    """The sweep's read: :data:`SNAPSHOT` plus every service's lease, holder record, failed marker and epoch.

    ``generation`` is the one the caller's memory holds ("-" forces a full read); ``names`` turns raw hash
    fields into node names (the caller caches that mapping per blueprint).
    """
    snap_sha = SNAPSHOT.sha(client)
    args = [generation, cursor, audit_count]
    keys_ = [keys.heartbeats(), keys.heartbeat_arrivals(), keys.node_state(), keys.detector_meta(), keys.mode(),
             keys.detector_generation(), keys.heartbeats_pending()]
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        _eval_raw(pipe, snap_sha, keys_, args)
        for s in services:
            leases.READ(client, keys=[keys.lease(s)], pipe=pipe)
        for s in services:
            pipe.get(keys.lease_holder(s))
        for s in services:
            pipe.get(keys.service_failed(s))
        for s in services:
            pipe.get(keys.epoch(s))
        pipe.get(keys.failover_pause())  # every sweep: the detector remembers which notes it honoured
        for s in services:
            pipe.get(keys.failover_pause(s))
        try:
            res = pipe.execute()
            break
        except NoScriptError:
            if attempt:
                raise
            client.script_load(SNAPSHOT.source)
    n = len(services)
    pauses = dict(zip([GLOBAL_PAUSE, *services], res[1 + 4 * n:], strict=True))
    res = res[:1 + 4 * n]
    markers = {s: leases.read_failed(raw) for s, raw in zip(services, res[1 + 2 * n:1 + 3 * n], strict=True)}
    failed = {s: m for s, m in markers.items() if m is not None}
    epochs = {s: int(_text(raw or 0)) for s, raw in zip(services, res[1 + 3 * n:], strict=True) if s in failed}
    res = res[:1 + 2 * n]
    head = res[0]
    secs, micros, gen, meta, mode, kind = (_text(v) for v in head[:6])
    out = Snapshot(now=int(secs) + int(micros) / 1e6, full=kind == "full", entries={}, states=None, generation=gen,
                   meta=meta, mode=mode,
                   leases={s: leases.parse(s, raw) for s, raw in zip(services, res[1:1 + len(services)], strict=True)},
                   records={s: leases.parse_record(s, raw) for s, raw in zip(services, res[1 + len(services):],
                                                                              strict=True)},
                   failed=failed, epochs=epochs, pauses=pauses)
    if out.full:
        beats, arrivals = _pairs(head[6]), _pairs(head[7])
        states = _pairs(head[8])
        return replace(out, entries=dict(zip(names(beats), zip(beats.values(), map(arrivals.get, beats), strict=True),
                                             strict=True)),
                       states=dict(zip(names(states), (v.decode(errors="replace") for v in states.values()),
                                       strict=True)))
    split = heartbeats.split_pending(head[6], int(head[7]))
    if split is None:
        return replace(out, misaligned=True)
    batch_names, arrivals, raws = split
    audit = _pairs(head[9])
    return replace(out, entries=dict(zip(names(batch_names), zip(raws, arrivals, strict=True), strict=True)),
                   cursor=_text(head[8]), audit=dict(zip(names(audit), audit.values(), strict=True)))


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _pairs(flat: bytes) -> dict[bytes, bytes]:
    if not flat:
        return {}
    parts = flat.split(b"\n")
    return dict(zip(parts[0::2], parts[1::2], strict=False))

def read_beats(client: Any, names: Sequence[str]) -> tuple[list[bytes | None], list[bytes | None]]:
    """The stored beats and their arrival stamps of ``names``, as bytes (the recheck's second look)."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("HMGET", keys.heartbeats(), *names, **{NEVER_DECODE: []})
    pipe.execute_command("HMGET", keys.heartbeat_arrivals(), *names, **{NEVER_DECODE: []})
    raws, arrivals = pipe.execute()
    return raws, arrivals


def drain(client: Any, generation: str) -> tuple[bytes, int] | None:
    """One ingest slice (:data:`INGEST`): the drained batch and its element count, or None when another process
    swept since ``generation`` (its memory is stale; the sweep there reads in full)."""
    args = ["EVALSHA", INGEST.sha(client), 2, keys.detector_generation(), keys.heartbeats_pending(), generation]
    try:
        res = client.execute_command(*args, **{NEVER_DECODE: []})
    except NoScriptError:
        client.script_load(INGEST.source)
        res = client.execute_command(*args, **{NEVER_DECODE: []})
    if res[0] != b"ok":
        return None
    return res[2], int(res[3])


SWEEPS_KEPT = 600  # about ten minutes of sweeps at 1 Hz (approximate trimming: Redis keeps a few more)


@dataclass(frozen=True)
class SweepMark:
    """One journal entry: a sweep at ``at`` (Redis time), ``gap`` seconds after the one before, by ``node``."""

    at: float
    gap: float | None
    node: str
    term: int


def write(client: Any, holder: str, *, changed: Mapping[str, str], stale: Sequence[str], meta: Mapping[str, Any],
          mode: Mapping[str, Any] | None, open_incidents: Mapping[str, Mapping[str, Any]],
          close_incidents: Sequence[str], mark: SweepMark, lease_ttl: float) -> str | None:
    """Write a sweep's results in one transaction, only while ``holder`` still holds the leader lease (``WATCH``),
    renewing it: a process that lost the lease while it stalled must not overwrite newer states with old ones.
    Returns the new generation, or None when the lease was lost (nothing written)."""
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(detector_leader.key())
            if not detector_leader.guard(pipe, holder):
                raise WatchError("lease lost")
            pipe.multi()
            if changed:
                pipe.hset(keys.node_state(), mapping=dict(changed))
            if stale:
                pipe.hdel(keys.node_state(), *stale)
            pipe.set(keys.detector_meta(), json.dumps(dict(meta)))
            if mode is not None:
                state_mode.write(client, mode, pipe=pipe)
            for iid, body in open_incidents.items():
                incidents.open_(client, iid, body, pipe=pipe)
            if close_incidents:
                incidents.close(client, *close_incidents, pipe=pipe)
            pipe.xadd(keys.detector_sweeps(), {"at": f"{mark.at:.6f}",
                                               "gap": "" if mark.gap is None else f"{mark.gap:.6f}",
                                               "node": mark.node, "term": str(mark.term)},
                      maxlen=SWEEPS_KEPT, approximate=True)
            detector_leader.renew(pipe, lease_ttl)
            pipe.incr(keys.detector_generation())
            return str(pipe.execute()[-1])
        except WatchError:
            return None


def sweeps(client: Any, count: int = SWEEPS_KEPT) -> list[SweepMark]:
    """The newest ``count`` journal entries, oldest first (entries that do not parse are skipped)."""
    out = []
    for _id, fields in reversed(client.xrevrange(keys.detector_sweeps(), count=count)):
        doc = {_text(k): _text(v) for k, v in fields.items()}
        try:
            out.append(SweepMark(at=float(doc["at"]), gap=float(doc["gap"]) if doc.get("gap") else None,
                                 node=doc.get("node", ""), term=int(doc.get("term") or 0)))
        except (KeyError, ValueError):
            continue
    return out
