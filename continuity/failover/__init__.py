"""Failover: which services move, to which node, in which steps — and the fencing that keeps it safe.

The decision (:mod:`planner`) is pure; the effects (:mod:`steps`, :mod:`fencing`,
:mod:`records`) are plain functions over a Redis client and the node's disk, so
the Celery tasks in ``workers/failover.py`` stay thin and everything here can be
tested without a broker.
"""
