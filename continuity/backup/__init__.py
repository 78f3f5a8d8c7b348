"""Backup engine: encrypted, deduplicated, crash-safe snapshots with restore drills.

Modules, in the order data flows: ``chunker`` (keyed FastCDC) → ``crypto``
(AES-256-GCM, scrypt key files, keyring) → ``repository`` (packs, index,
snapshot records; write order) on ``storage`` (local dir / S3) →
``snapshot`` + ``sources`` (directories, SQLite, ledgers) → ``restore`` /
``verify`` (checks and restore drills) → ``retention`` (pure forget policy)
/ ``prune`` → ``replicate`` (copy). ``locks`` keeps prune alone; ``config``
loads ``ops/backup/continuity.yml``; ``api`` is the entry point for tasks.
Nothing here imports Celery.
"""
