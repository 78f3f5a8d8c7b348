"""Failover: which services move, to which node, in which steps — and the fencing that keeps it safe.

Pure deciders: :mod:`planner` (which services, which candidate, not before when)
and :mod:`prepare` (where the candidate's data comes from). I/O shells: :mod:`steps`,
:mod:`records` and :mod:`control` are plain functions over a Redis client and the
node's disk (fencing epochs and leases are :mod:`continuity.state`'s), so the Celery
tasks in ``workers/failover.py`` stay thin and everything here can be tested
without a broker. Nothing here imports :mod:`continuity.detect`; hooks and probes
come from :mod:`continuity.services`, snapshots from :mod:`continuity.backup`.
"""
