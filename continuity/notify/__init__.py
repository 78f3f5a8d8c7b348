"""Notifications for people without Prometheus: webhooks told when a failover happened, a drill failed, a node
died, the continuity mode changed or a backup failed — and, watched by the layer itself, when a backup went
stale, a pause was forgotten or a standby fell behind its RPO (and when each of those ended).

==============  ==================================================================================================
module          what
==============  ==================================================================================================
``config``      ``ops/notifications.yml``: webhooks (URL or the variable holding it, format, topics), retry policy
``topics``      which pulse events are worth telling, as a :class:`~continuity.notify.topics.Notice` (pure)
``conditions``  the watched conditions: which hold, which episodes begin and end (pure, typed inputs and the time)
``watch``       one read of the fleet for the conditions, through the metrics' own computations
``payloads``    a notice as a generic JSON, Slack-compatible or Alertmanager-compatible body (pure)
``deliver``     the loop: events and episodes -> deliveries owed (deduplicated) -> POSTs with backoff, until
                delivered or given up
==============  ==================================================================================================

Delivery state lives in Redis (:mod:`continuity.state.notifications`), so any control worker can carry on where
another stopped. See ``docs/continuity/metrics.md``.
"""
