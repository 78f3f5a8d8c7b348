"""The fleet's services as processes on nodes: their hooks, their health probes and where their files live.

Both sides of a role change need these, so they live below both: the node agent
(:mod:`continuity.detect.agent`) probes the services it holds and runs their
start/demote hooks; the failover steps (:mod:`continuity.failover.steps`) run
the same hooks on the candidate and verify it with the same probes; the backup
engine and the sample service find a service's node-local files through
:mod:`layout`. Nothing here reads Redis or imports ``detect``, ``failover`` or
``backup``.

* :mod:`hooks`  — render and run the blueprint's start / stop / demote hooks (argv, no shell, with a
  deadline); a service's port, probe URL and base URL on a node.
* :mod:`probes` — the service health probes (process, tcp, http, command, file); never raise.
* :mod:`layout` — a service's directory on a node and the routes file (import-light: the sample service
  imports it at start-up).
"""
