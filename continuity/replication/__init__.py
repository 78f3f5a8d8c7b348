"""Continuous node-to-node replication of each service's declared data; sync mode; lag.

Nodes own their disks (DESIGN invariant 8): what a node acknowledged survives
its loss only if another node holds it. Each node runs a replicator (started by
its worker, ``workers/replication.py``) that streams what it is primary of to the
standbys of the placement and follows, as a standby, what other nodes are
primary of — over TCP on the nodes' addresses, authenticated with node keys,
encrypted when configured, and only ever from the node holding the lease.

=====================  ========================================================================================
module                 what it does
=====================  ========================================================================================
``wire``               frames, MACs / AES-GCM, session keys
``handshake``          hello / welcome: who may connect, for what, at which epoch
``authority``          the lease, read with its TTL: who may send, whether a frame may be applied
``ledger``             a JSON-lines ledger as a log: positions, hash chain, tailing, checked appends, cutting
``streams``            a ledger on its primary: standbys, acknowledgements, lag, sync-mode waits
``server``             the primary's side of a connection
``follower``           the standby's side: sessions, resume, divergence, apply, acknowledge
``sqlite``             SQLite: consistent images, page-level transfer, crash-safe swap on the standby
``directory``          directories: content-defined chunks, only changed chunks travel
``local``              the local call services make to wait for replication (sync mode), and its client
``context``            what the parts share; the highest applied epoch of each replica
``node``               one node's replicator: roles from leases, publishing lag, events
=====================  ========================================================================================

See docs/continuity/replication.md for the protocol, the local call, and the measurements.
"""
