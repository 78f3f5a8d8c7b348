"""One registry for every Lua script the fleet runs against Redis.

Each state module declares its scripts with :class:`Script` next to the keys and
parser they belong to; this module only knows how to load them. A script is
registered once per client (redis-py keeps the SHA and falls back to ``EVAL``
after a Redis restart flushed the script cache), so callers never think about
loading, and a pipeline can queue a script like any other command.

Why one registry: four ways of loading scripts used to exist (per-module caches
on the client under different attribute names, ``register_script`` on every
agent start, ad-hoc SHAs); a test now lists :data:`REGISTRY` to prove every
script in the tree is declared here and compiles on a real server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REGISTRY: dict[str, Script] = {}
_CACHE_ATTR = "_continuity_scripts"


@dataclass(frozen=True)
class Script:
    """A named Lua source; calling it runs it on ``client`` (or queues it on ``pipe``)."""

    name: str
    source: str

    def __post_init__(self) -> None:
        known = REGISTRY.get(self.name)
        if known is not None and known.source != self.source:
            raise ValueError(f"two different Lua scripts are both named {self.name!r}")
        REGISTRY[self.name] = self

    def load(self, client: Any) -> Any:
        """The redis-py ``Script`` object for ``client`` (registered on first use, then cached on the client)."""
        cache = client.__dict__.setdefault(_CACHE_ATTR, {})
        loaded = cache.get(self.name)
        if loaded is None:
            loaded = cache[self.name] = client.register_script(self.source)
        return loaded

    def sha(self, client: Any) -> str:
        return str(self.load(client).sha)

    def __call__(self, client: Any, keys: Sequence[str] = (), args: Sequence[Any] = (), pipe: Any = None) -> Any:
        return self.load(client)(keys=list(keys), args=list(args), client=pipe)
