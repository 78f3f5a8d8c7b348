"""restic's REST protocol (version 2), so a repository can live behind restic's ``rest-server``.

The protocol has six object types, each a flat directory: ``config``,
``data``, ``index``, ``keys``, ``locks``, ``snapshots``. Our names map onto
them: ``data/ab/<id>`` is ``/data/<id>`` (the server does its own fan-out) and
the one type restic lacks, ``keyring/<gen>-<id>``, is stored as
``/keys/keyring-<gen>-<id>`` and hidden from listings of ``keys``.

The server makes uploads atomic (it writes a temporary file and renames it
once the whole body has arrived), so a client killed mid-upload leaves
nothing under the final name. ``rest-server --append-only`` answers
``403 Forbidden`` to every delete but a lock's: that becomes
:class:`AppendOnlyRefused` (exit 1, as restic). Pack names are BLAKE3 hashes,
not restic's SHA-256, so a stock rest-server needs ``--no-verify-upload``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from continuity.backup.storage.append_only import refusal
from continuity.backup.storage.base import Backend, NotFound
from continuity.errors import ContinuityError, UsageError

V2 = "application/vnd.x.restic.rest.v2"
TYPES = ("data", "index", "keys", "locks", "snapshots")
KEYRING = "keyring-"


class RestBackend(Backend):
    read_window = 8 * 1024 * 1024
    read_gap = 1024 * 1024
    read_threads = 8  # reads wait on the network: overlap them

    def __init__(self, base: str) -> None:
        import urllib3

        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"bad REST URL {base!r}: use rest:http://host:port/ or rest:https://user:pass@host/")
        headers: dict[str, str] = {}
        if parts.username is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{parts.username}:{parts.password or ''}"))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/", "", ""))
        self.url = f"rest:{self.base}"  # no credentials: this string is printed and logged
        self._headers = headers
        self._http = urllib3.PoolManager(maxsize=16, headers=headers,
                                         retries=urllib3.Retry(total=4, connect=4, read=2, backoff_factor=0.2,
                                                               allowed_methods=None, status_forcelist=(502, 503, 504)),
                                         timeout=urllib3.Timeout(connect=30, read=300))

    @classmethod
    def from_url(cls, url: str) -> RestBackend:
        return cls(url.removeprefix("rest:"))

    def _where(self, name: str) -> str:
        if name == "config":
            return self.base + "config"
        kind, _, rest = name.partition("/")
        leaf = rest.rsplit("/", 1)[-1]
        if not leaf or leaf in (".", "..") or "/" in rest and kind != "data":
            raise ValueError(f"bad object name {name!r}")
        if kind == "keyring":
            return f"{self.base}keys/{KEYRING}{leaf}"
        if kind not in TYPES:
            raise ValueError(f"object type {kind!r} has no place in restic's REST protocol")
        return f"{self.base}{kind}/{leaf}"

    def _req(self, method: str, url: str, **kw: Any) -> Any:
        import urllib3

        try:
            return self._http.request(method, url, **kw)
        except urllib3.exceptions.HTTPError as exc:
            raise ContinuityError(f"REST server {self.base}: {method} failed: {exc}") from None

    def _check(self, r: Any, method: str, name: str) -> None:
        if r.status == 404:
            raise NotFound(name)
        if r.status in (401, 403) and method in ("DELETE", "POST"):
            what = "deleting" if method == "DELETE" else "writing"
            raise refusal(self.url, f"{what} {name} (server answered {r.status})")
        if r.status >= 300:
            raise ContinuityError(f"REST server {self.base}: {method} {name}: HTTP {r.status}")

    def create(self) -> None:
        """Ask the server to create the repository's directories (``POST /?create=true``)."""
        r = self._req("POST", self.base + "?create=true")
        if r.status >= 300:
            raise ContinuityError(f"REST server {self.base}: creating the repository: HTTP {r.status}")

    ensure_bucket = create  # Repository.init prepares the storage through this name

    def read(self, name: str) -> bytes:
        r = self._req("GET", self._where(name))
        self._check(r, "GET", name)
        return bytes(r.data)

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        r = self._req("GET", self._where(name), headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        self._check(r, "GET", name)
        data = bytes(r.data)
        if r.status == 200:  # a server that ignores Range sends everything
            data = data[offset:offset + length]
        return data

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        body = bytes(data) if not isinstance(data, bytes) else data
        r = self._req("POST", self._where(name), body=body,
                      headers={"Content-Type": "application/octet-stream"})
        self._check(r, "POST", name)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        kind = prefix.strip("/").split("/")[0]
        wire = "keys" if kind == "keyring" else kind
        if wire not in TYPES:
            return
        r = self._req("GET", f"{self.base}{wire}/", headers={"Accept": V2})
        if r.status == 404:
            return
        self._check(r, "GET", prefix)
        for e in json.loads(r.data):
            leaf, size = str(e["name"]), int(e["size"])
            if kind == "keyring":
                if leaf.startswith(KEYRING):
                    yield f"keyring/{leaf[len(KEYRING):]}", size
            elif kind == "keys" and leaf.startswith(KEYRING):
                continue
            elif kind == "data":
                yield f"data/{leaf[:2]}/{leaf}", size
            else:
                yield f"{kind}/{leaf}", size

    def delete(self, name: str) -> None:
        r = self._req("DELETE", self._where(name))
        if r.status == 404:
            return
        self._check(r, "DELETE", name)

    def exists(self, name: str) -> bool:
        r = self._req("HEAD", self._where(name))
        if r.status == 404:
            return False
        self._check(r, "HEAD", name)
        return True

    def can_delete(self) -> bool:
        """rest-server --append-only answers 403 to a delete before looking whether the file exists."""
        if self.append_only:
            return False
        r = self._req("DELETE", f"{self.base}snapshots/{uuid.uuid4().hex}{uuid.uuid4().hex}")
        return r.status not in (401, 403)

    def close(self) -> None:
        self._http.clear()
