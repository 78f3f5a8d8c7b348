"""Watch: signed heartbeats, role leases, service probes and the failure detector.

The detector (:mod:`detector`) and the continuity mode (:mod:`mode`) are pure
functions of data and a clock; :mod:`heartbeat`, :mod:`leases` and
:mod:`agent` are the small pieces that talk to Redis and the local host, so the
Celery shells in ``workers/agent.py`` and ``workers/control.py`` stay thin.
"""
