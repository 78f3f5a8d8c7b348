"""``python -m continuity`` runs the CLI (tests use it to avoid depending on PATH)."""

from continuity.cli import main

main()
