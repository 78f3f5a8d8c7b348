"""The one owner of everything the fleet shares through Redis.

Each concept is one module holding its key names (built in :mod:`~continuity.state.keys`), its value type, its
parser, its Lua scripts (declared with :class:`~continuity.state.scripts.Script`, loaded by one registry) and its
atomic operations. Each module's docstring lists its operations and the guarantee each one gives; this is the
index. Nothing outside this package spells a key, decodes one of these values or runs Lua. The package imports
only ``keys``/``paths``/``errors``/``settings`` from the rest of the project (the layering test holds it to that),
so every layer above may use it and it never needs them.

=================  ==========================================================================================
module             concept
=================  ==========================================================================================
``keys``           every key, under one prefix
``scripts``        the Lua script registry (one way to load and run a script, in a pipeline or not)
``leases``         role leases: acquire / renew / release / give up (with the service-failed marker) / read /
                   bootstrap; the last holder's record
``epochs``         fencing epochs: compare-and-set bump (refused while another node holds the lease), check,
                   read
``durability``     epoch writes (bump, bootstrap, acquire) confirmed by ``WAIT`` on the replicas, else
                   :class:`~continuity.state.durability.Unconfirmed`
``routes``         routes (compare-and-set publish + pub/sub) and **the** rule for "who is primary now":
                   :func:`~continuity.state.routes.primary_of`
``heartbeats``     the signed heartbeat wire format, the beat script every agent runs (beat + lease renewal +
                   orphan detection in one call) and the pending batch the sweep drains
``detection``      the detector's own state and its one-call snapshot / ingest scripts; the sweep journal
``detector_leader`` the detector's leader lease: which control worker sweeps (claim / release / guard / read)
``nodes``          node registry, last-seen times, the detector's classifications
``controls``       maintenance pauses and cool-downs (claimed ``NX`` so one launcher wins)
``locks``          short token locks (failover steps) that a dead holder frees by itself
``failover_records`` failover records: the ``meta``/``a:``/``c:``/``s:``/``e:``/``r:`` fields and their one parser
``step_markers``   a failover step's done / failed / lock / resent markers (exactly-once effects)
``incidents``      open incidents (drills refuse while any is open)
``mode``           the continuity mode the sweep writes
``fleet``          the one pipelined read behind ``continuity status``
``drills``         drill records, the one-drill lock, registered rollbacks
``links``          drill link faults and the link proxy's status
``backups``        per backup set freshness (last snapshot, last verified restore)
``pulse_stream``   the pulse history's Redis Stream (exactly-once delivery script, reads, counters by kind)
``pulse_checks``   the last verification of each host's pulse history file
``notifications``  webhook deliveries owed and made: the stream cursor, pending/done ids, claims, counters
``config_errors``  config files a running process cannot load (it keeps the last good content)
``values``         decoding JSON read from Redis without raising
=================  ==========================================================================================

Why a package and not a client class: Patroni's HA loop talks to one abstract store whose every operation states
its guarantee; here the store is always Redis, so plain functions over a ``redis.Redis`` (or a pipeline) are the
narrowest interface that says the same thing.
"""
