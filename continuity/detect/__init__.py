"""Watch: signed heartbeats, role leases, service probes and the failure detector.

Pure deciders: the detector (:mod:`detector`), the continuity mode (:mod:`mode`)
and local recovery (:mod:`recovery`) are functions of data and a clock passed in.
I/O shells: :mod:`sweep` (one detector step against Redis), :mod:`loop` (the
long-running, leader-elected detector that runs the sweeps in every control worker) and
:mod:`agent` (a node's heartbeats, leases and hooks) talk to Redis and the local host, so the Celery
shells in ``workers/agent.py`` and ``workers/control.py`` stay thin. The Redis
side (heartbeat wire format, leases, node states) lives in :mod:`continuity.state`,
the service hooks and probes in :mod:`continuity.services`; nothing here imports
:mod:`continuity.failover` (the control shell injects the planner and launcher into the loop).
"""
