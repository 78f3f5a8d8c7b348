"""Every Lua script goes through the one registry, and every registered script compiles on a real redis-server."""

from __future__ import annotations

import importlib
import pkgutil
import re

import continuity.state
from continuity.state.scripts import REGISTRY
from tests.helpers import ROOT

LOADERS = re.compile(r"register_script\(|\.eval\(|evalsha|script_load\(")


def _load_all_state_modules() -> None:
    for info in pkgutil.iter_modules(continuity.state.__path__):
        importlib.import_module(f"continuity.state.{info.name}")


def test_no_script_is_loaded_outside_the_registry() -> None:
    offenders = []
    for base in ("continuity", "workers"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "continuity/state/scripts.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if LOADERS.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    # the detector's reads reload a registered script by its source after NOSCRIPT (they call EVALSHA themselves,
    # to get raw bytes back)
    allowed = {o for o in offenders if o.startswith("continuity/state/detection.py") and ".source)" in o}
    assert sorted(set(offenders) - allowed) == [], "\n".join(sorted(set(offenders) - allowed))


def test_every_registered_script_compiles(rds) -> None:
    _load_all_state_modules()
    assert len(REGISTRY) >= 12
    for name, script in REGISTRY.items():
        sha = rds.script_load(script.source)
        assert rds.script_exists(sha) == [True], name
        assert script.sha(rds) == sha, name
