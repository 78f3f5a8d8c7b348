"""Metrics: the numbers operators watch, in the Prometheus text format.

The layer already knows how old the last verified restore is, whether each backup set meets its RPO, how long
the last failover took and which node is dead; before this package that knowledge lived only inside
``continuity report --json`` and ``continuity status --json``. Here it becomes Prometheus series, so the usual
tools (Prometheus, Grafana, Alertmanager) can graph it and page on it.

==============  =================================================================================================
module          what
==============  =================================================================================================
``catalogue``   every metric: name, type, labels, meaning (the documentation is generated from it)
``compute``     the pure function: a :class:`~continuity.metrics.read.Reading` -> samples
``read``        one read of Redis and the ops/ files into a typed ``Reading`` (through ``continuity.state``,
                ``continuity.status`` and ``continuity.report``: nothing is decoded twice)
``exporter``    a ``prometheus_client`` collector that reads at scrape time, the HTTP server, text/JSON output
``pulsecheck``  the periodic verification of this host's pulse history file, recorded in Redis
==============  =================================================================================================

The control workers serve it (``workers/observe.py``) and so does ``continuity up``; ``continuity metrics``
prints one scrape. See ``docs/continuity/metrics.md``.
"""
