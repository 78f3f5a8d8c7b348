"""The Celery shell: the app, its queues and thin tasks that call into ``continuity``.

Nothing here decides anything; tasks move data between Redis, the disk and the
pure functions of the core.
"""
