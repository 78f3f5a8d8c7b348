"""The detector's shared state: node classifications, sweep meta, generation, last attempt.

Keys (all in :mod:`continuity.state.keys`): ``detector:nodes`` (hash node -> classification JSON, written by
the sweep, read by status and the planner), ``detector:meta`` (JSON: TILT, storm, last sweep), ``detector:gen``
(counter bumped by every completed sweep), ``detector:attempt`` (Redis time of the latest attempt),
and ``detector:lock`` (the sweep's mutual exclusion).

Operations and their guarantees:

- :data:`SNAPSHOT` — one server-side call per sweep: Redis ``TIME``, the generation, meta, mode and last
  attempt, and either everything (heartbeats, arrivals, states: when the caller's generation is stale) or the
  drained pending batch plus an audit slice of the heartbeat hash. Draining is atomic with the read, so a
  beat is seen by exactly one sweep or ingest slice (and stays in the heartbeat hash for the audit).
- :data:`INGEST` — drains the pending batch only while the caller's generation is current (a process whose
  memory is stale never swallows beats).
- The sweep lock (``detector:lock``) is a :mod:`continuity.state.locks` lock: two sweeps never act at once.
"""

from __future__ import annotations

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
# KEYS: hb arrivals states meta mode attempt generation pending
# ARGV: generation we hold ('-' forces a full read), audit cursor, audit count
SNAPSHOT = Script("detector.snapshot", """
local function flat(a)
  for i = 1, #a do
    if string.find(a[i], '\\n', 1, true) then a[i] = (string.gsub(a[i], '\\n', ' ')) end
  end
  return table.concat(a, '\\n')
end
local t = redis.call('TIME')
local gen = redis.call('GET', KEYS[7]) or '0'
local pending = redis.call('HGETALL', KEYS[8])
if #pending > 0 then redis.call('DEL', KEYS[8]) end
local out = {t[1], t[2], gen, redis.call('GET', KEYS[4]) or '', redis.call('GET', KEYS[5]) or '',
             redis.call('GET', KEYS[6]) or ''}
if ARGV[1] ~= gen then
  out[7] = 'full'
  out[8] = flat(redis.call('HGETALL', KEYS[1]))
  out[9] = flat(redis.call('HGETALL', KEYS[2]))
  out[10] = flat(redis.call('HGETALL', KEYS[3]))
else
  local scan = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
  out[7] = 'delta'
  out[8] = table.concat(pending, '\\n')
  out[9] = tostring(#pending)
  out[10] = scan[1]
  out[11] = flat(scan[2])
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
