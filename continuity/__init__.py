"""continuity: back up critical state, detect failed nodes, fail over without split brain, prove RTO/RPO.

The package is the functional core: nothing under ``continuity/`` imports Celery.
The Celery shell lives in ``workers/``.
"""

__version__ = "0.1.0"
