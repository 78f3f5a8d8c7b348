"""The repository: packs of encrypted blobs, an index, and snapshot records.

Layout (every object write-once and named by the BLAKE3 hash of its stored
bytes, so a name is also a checksum)::

    config                  plaintext JSON: format version, repository id
    keys/<id>               key files (master key wrapped by scrypt(password))
    keyring/<gen>-<hash>    keyring sealed with the master key
    data/<xx>/<hash>        packs: sealed blobs + sealed header + u32 header length
    index/<hash>            sealed, compressed: which blob lives where
    snapshots/<hash>        sealed JSON snapshot record
    locks/<uuid>            plaintext lock files

Crash safety is write *order*: packs (fsynced) → directory barrier → index
(temp, fsync, rename, fsync dir) → snapshot record the same way. A crash at
any point leaves earlier snapshots complete and at worst packs no index names,
which prune collects. Blob IDs are keyed BLAKE3 of the plaintext, so dedup
works across snapshots and nodes sharing the repository without revealing
content hashes to whoever holds the storage.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3
import zstandard

from continuity import settings
from continuity.backup import crypto
from continuity.backup.storage import Backend, NotFound
from continuity.errors import ContinuityError, RepositoryMissing, UsageError, WrongKey

FORMAT_VERSION = 1
DATA, TREE = 0, 1
ENTRY = struct.Struct(">B32sIII")  # type, blob id, offset, length, raw length
PACK_HEAD = struct.Struct(">32sI")  # pack id, entry count
_TLS = threading.local()


class DamagedError(ContinuityError):
    """Stored bytes failed authentication or hashing; carries what is damaged."""


def _zc() -> zstandard.ZstdCompressor:
    c = getattr(_TLS, "zc", None)
    if c is None:
        c = _TLS.zc = zstandard.ZstdCompressor(level=3)
    return c


def _zd() -> zstandard.ZstdDecompressor:
    d = getattr(_TLS, "zd", None)
    if d is None:
        d = _TLS.zd = zstandard.ZstdDecompressor()
    return d


def file_hash(data: bytes | bytearray | memoryview) -> str:
    return blake3.blake3(data, max_threads=1).hexdigest()


@dataclass(frozen=True)
class IndexEntry:
    pack: str
    offset: int
    length: int
    raw_length: int
    type: int


@dataclass
class Index:
    """Blob id → location. Built from index files (and pack headers when an index file is damaged)."""

    entries: dict[bytes, IndexEntry] = field(default_factory=dict)
    packs: dict[str, list[tuple[int, bytes, int, int, int]]] = field(default_factory=dict)
    files: dict[str, set[str]] = field(default_factory=dict)  # index file -> packs it names
    damaged_files: dict[str, str] = field(default_factory=dict)
    recovered: set[str] = field(default_factory=set)  # packs read from their own header, in no index file

    def add(self, pack: str, entries: Iterable[tuple[int, bytes, int, int, int]]) -> None:
        ents = self.packs.setdefault(pack, [])
        for typ, bid, off, length, raw in entries:
            if bid not in self.entries:
                self.entries[bid] = IndexEntry(pack, off, length, raw, typ)
            ents.append((typ, bid, off, length, raw))

    def __contains__(self, bid: object) -> bool:
        return bid in self.entries

    def get(self, bid: bytes) -> IndexEntry | None:
        return self.entries.get(bid)


def encode_index(packs: dict[str, list[tuple[int, bytes, int, int, int]]]) -> bytes:
    out = bytearray(b"IDX1")
    for pack, ents in sorted(packs.items()):
        out += PACK_HEAD.pack(bytes.fromhex(pack), len(ents))
        for e in ents:
            out += ENTRY.pack(*e)
    return bytes(out)


def decode_index(raw: bytes) -> Iterator[tuple[str, list[tuple[int, bytes, int, int, int]]]]:
    if raw[:4] != b"IDX1":
        raise ValueError("not an index")
    pos = 4
    while pos < len(raw):
        pid, count = PACK_HEAD.unpack_from(raw, pos)
        pos += PACK_HEAD.size
        ents = [ENTRY.unpack_from(raw, pos + i * ENTRY.size) for i in range(count)]
        pos += count * ENTRY.size
        yield pid.hex(), ents


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


class Repository:
    """An opened repository: storage plus the secrets to read and write it."""

    def __init__(self, backend: Backend, keyring: crypto.Keyring, master: bytes, key_id: str,
                 config: dict[str, Any]) -> None:
        self.backend = backend
        self.keyring = keyring
        self.master = master
        self.key_id = key_id
        self.config = config
        self._index: Index | None = None
        self._pack_cache: dict[str, bytes] = {}
        self._pack_cache_lock = threading.Lock()

    # ---------------------------------------------------------------- open / init
    @classmethod
    def init(cls, backend: Backend, password: bytes, *, kdf: dict[str, int] | None = None,
             keyring: crypto.Keyring | None = None) -> Repository:
        if backend.exists("config"):
            raise UsageError(f"a repository already exists at {backend.url}")
        if hasattr(backend, "ensure_bucket"):
            backend.ensure_bucket()
        master = os.urandom(32)
        ring = keyring or crypto.Keyring.new()
        ring.generation = 0
        config = {"version": FORMAT_VERSION, "id": uuid.uuid4().hex, "created": time.time(),
                  "chunker": "fastcdc-keyed", "hash": "blake3-keyed", "cipher": "aes-256-gcm",
                  "compression": "zstd-3"}
        key_id = uuid.uuid4().hex
        repo = cls(backend, ring, master, key_id, config)
        backend.write(f"keys/{key_id}", json.dumps(crypto.make_key_file(password, master, kdf)).encode())
        repo._save_keyring(ring)
        backend.write("config", json.dumps(config, sort_keys=True).encode())  # last: marks "initialised"
        return repo

    @classmethod
    def open(cls, backend: Backend, password: bytes) -> Repository:
        try:
            config = json.loads(backend.read("config"))
        except NotFound:
            raise RepositoryMissing(f"no repository at {backend.url} (create one with "
                                    f"`continuity backup init --repo {backend.url}`)") from None
        except ValueError:
            raise ContinuityError(f"repository config at {backend.url} is damaged") from None
        if config.get("version") != FORMAT_VERSION:
            raise ContinuityError(f"unsupported repository format {config.get('version')!r}")
        for name, _ in sorted(backend.list("keys")):
            try:
                doc = json.loads(backend.read(name))
                master = crypto.unwrap_key_file(doc, password)
            except (crypto.DecryptError, ValueError, KeyError, NotFound):
                continue
            ring = cls._load_keyring(backend, master)
            return cls(backend, ring, master, name.split("/")[-1], config)
        raise WrongKey(f"wrong password or no key for repository {backend.url}")

    @staticmethod
    def _load_keyring(backend: Backend, master: bytes) -> crypto.Keyring:
        kk = crypto.keyring_key(master)
        best: crypto.Keyring | None = None
        merged: dict[int, bytes] = {}
        for name, _ in backend.list("keyring"):
            try:
                ring = crypto.Keyring.from_json(crypto.open_with(kk, backend.read(name), b"keyring"))
            except (crypto.DecryptError, ValueError, KeyError, NotFound):
                continue  # a damaged keyring generation: older/newer ones still carry all keys
            merged.update(ring.data_keys)
            if best is None or ring.generation > best.generation:
                best = ring
        if best is None:
            raise ContinuityError(f"repository {backend.url}: no readable keyring")
        best.data_keys = merged
        return best

    def _save_keyring(self, ring: crypto.Keyring) -> None:
        sealed = crypto.seal_with(crypto.keyring_key(self.master), ring.to_json(), b"keyring")
        self.backend.write(f"keyring/{ring.generation:08d}-{file_hash(sealed)[:16]}", sealed)

    # ---------------------------------------------------------------- keys
    def list_keys(self) -> list[dict[str, Any]]:
        out = []
        for name, _ in sorted(self.backend.list("keys")):
            kid = name.split("/")[-1]
            try:
                d = json.loads(self.backend.read(name))
            except (ValueError, NotFound):
                out.append({"id": kid, "damaged": True, "current": kid == self.key_id})
                continue
            out.append({"id": kid, "current": kid == self.key_id, "hostname": d.get("hostname"),
                        "username": d.get("username"), "created": d.get("created")})
        return out

    def add_key(self, password: bytes, kdf: dict[str, int] | None = None) -> str:
        kid = uuid.uuid4().hex
        self.backend.write(f"keys/{kid}", json.dumps(crypto.make_key_file(password, self.master, kdf)).encode())
        return kid

    def remove_key(self, key_id: str) -> None:
        names = [n.split("/")[-1] for n, _ in self.backend.list("keys")]
        matches = [n for n in names if n.startswith(key_id)]
        if len(matches) != 1:
            raise UsageError(f"key {key_id!r} matches {len(matches)} keys")
        if matches[0] == self.key_id:
            raise UsageError("refusing to remove the key this command was opened with")
        self.backend.delete(f"keys/{matches[0]}")

    def rotate(self) -> int:
        """Start a new data key for new writes; old data keys stay in the keyring to read old blobs."""
        ring = self.keyring.rotated()
        self._save_keyring(ring)
        self.keyring = ring
        return ring.current

    # ---------------------------------------------------------------- blobs
    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        return blake3.blake3(data, key=self.keyring.id_key, max_threads=1).digest()

    def seal_blob(self, bid: bytes, typ: int, data: bytes | bytearray | memoryview) -> bytes:
        comp = _zc().compress(data)
        payload = b"\x01" + comp if len(comp) < len(data) else b"\x00" + bytes(data)
        return self.keyring.seal(payload, bid + bytes([typ]))

    def open_blob(self, bid: bytes, typ: int, sealed: bytes | memoryview) -> bytes:
        """Decrypt, decompress and check the content hash: the only way blob bytes leave storage."""
        data = self.open_blob_view(bid, typ, sealed)
        return data if isinstance(data, bytes) else bytes(data)

    def open_blob_view(self, bid: bytes, typ: int, sealed: bytes | memoryview) -> bytes | memoryview:
        """As :meth:`open_blob`, checked the same way, but a blob stored uncompressed comes back as a view
        of the decrypted payload: restore writes it out directly, sparing a copy of up to 4 MiB per thread."""
        try:
            payload = self.keyring.open(sealed, bid + bytes([typ]))
        except crypto.DecryptError as exc:
            raise DamagedError(f"blob {bid.hex()[:16]}: {exc}") from None
        body = memoryview(payload)[1:]
        try:
            data = _zd().decompress(body) if payload[:1] == b"\x01" else body
        except zstandard.ZstdError:
            raise DamagedError(f"blob {bid.hex()[:16]}: bad compression") from None
        if self.blob_id(data) != bid:
            raise DamagedError(f"blob {bid.hex()[:16]}: content hash mismatch")
        return data

    # ---------------------------------------------------------------- index
    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = self.load_index()
        return self._index

    def load_index(self, *, rebuild_missing: bool = True) -> Index:
        idx = Index()
        for name, _ in sorted(self.backend.list("index")):
            fid = name.split("/")[-1]
            try:
                sealed = self.backend.read(name)
                if file_hash(sealed) != fid:
                    raise ValueError("file content does not match its name")
                raw = _zd().decompress(self.keyring.open(sealed, b"index"))
                named = set()
                for pack, ents in decode_index(raw):
                    idx.add(pack, ents)
                    named.add(pack)
                idx.files[fid] = named
            except (crypto.DecryptError, ValueError, zstandard.ZstdError, struct.error, NotFound) as exc:
                idx.damaged_files[fid] = str(exc) or type(exc).__name__
        if rebuild_missing:
            # A damaged or lost index file must not make intact packs unreachable: packs no index file
            # names are read from their own header. Normally these are only leftovers of an interrupted
            # snapshot (or one still running elsewhere), which no snapshot references.
            for pack, size in self.list_packs().items():
                if pack not in idx.packs:
                    try:
                        idx.add(pack, self.read_pack_header(pack, size=size))
                        idx.recovered.add(pack)
                    except DamagedError:
                        continue
        return idx

    def save_index(self, packs: dict[str, list[tuple[int, bytes, int, int, int]]], *,
                   adopt_recovered: bool = True) -> str:
        """Write one index file for ``packs``, after they are durable.

        Packs recovered from their own headers (left by an interrupted run)
        are adopted too: this run may have deduplicated against their blobs,
        and a committed snapshot must never depend on a pack no index names.
        """
        if adopt_recovered and self._index is not None and self._index.recovered:
            packs = {**{p: self._index.packs[p] for p in self._index.recovered}, **packs}
            self._index.recovered = set()
        sealed = self.keyring.seal(_zc().compress(encode_index(packs)), b"index")
        fid = file_hash(sealed)
        self.backend.write(f"index/{fid}", sealed)
        return fid

    def list_packs(self) -> dict[str, int]:
        out = {}
        for name, size in self.backend.list("data"):
            pid = name.split("/")[-1]
            if len(pid) == 64:
                out[pid] = size
        return out

    def read_pack_header(self, pack: str, raw: bytes | None = None,
                         size: int | None = None) -> list[tuple[int, bytes, int, int, int]]:
        try:
            if raw is not None:
                (hlen,) = struct.unpack(">I", raw[-4:])
                sealed = raw[-4 - hlen:-4]
            else:
                name = pack_name(pack)
                if size is None:
                    size = len(self.backend.read(name))
                (hlen,) = struct.unpack(">I", self.backend.read_range(name, size - 4, 4))
                if hlen + 4 > size:
                    raise ValueError("header length out of range")
                sealed = self.backend.read_range(name, size - 4 - hlen, hlen)
            plain = self.keyring.open(sealed, b"pack-header")
        except (crypto.DecryptError, struct.error, NotFound, ValueError) as exc:
            raise DamagedError(f"pack {pack[:16]}: header unreadable ({exc})") from None
        return [ENTRY.unpack_from(plain, i) for i in range(0, len(plain), ENTRY.size)]

    # ---------------------------------------------------------------- reading blobs
    def read_pack(self, pack: str) -> bytes:
        return self.backend.read(pack_name(pack))

    def read_blob(self, bid: bytes) -> bytes:
        e = self.index.get(bid)
        if e is None:
            raise DamagedError(f"blob {bid.hex()[:16]} is missing from the index")
        try:
            sealed = self.backend.read_range(pack_name(e.pack), e.offset, e.length)
        except NotFound:
            raise DamagedError(f"blob {bid.hex()[:16]}: pack {e.pack[:16]} is missing") from None
        return self.open_blob(bid, e.type, sealed)

    # ---------------------------------------------------------------- files (snapshots)
    def save_file(self, kind: str, obj: Any) -> str:
        sealed = self.keyring.seal(json.dumps(obj, sort_keys=True).encode(), kind.encode())
        fid = file_hash(sealed)
        self.backend.write(f"{kind}/{fid}", sealed)
        return fid

    def load_file(self, kind: str, fid: str) -> Any:
        try:
            sealed = self.backend.read(f"{kind}/{fid}")
        except NotFound:
            raise DamagedError(f"{kind} {fid[:8]} is missing") from None
        if file_hash(sealed) != fid:
            raise DamagedError(f"{kind} {fid[:8]}: content does not match its name")
        try:
            return json.loads(self.keyring.open(sealed, kind.encode()))
        except (crypto.DecryptError, ValueError) as exc:
            raise DamagedError(f"{kind} {fid[:8]}: {exc}") from None

    def snapshot_ids(self) -> list[str]:
        return sorted(n.split("/")[-1] for n, _ in self.backend.list("snapshots"))

    def load_snapshots(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """All readable snapshots (oldest first) and {id: reason} for the damaged ones."""
        good, bad = [], {}
        for sid in self.snapshot_ids():
            try:
                snap = self.load_file("snapshots", sid)
            except DamagedError as exc:
                bad[sid] = str(exc)
                continue
            snap["id"] = sid
            good.append(snap)
        good.sort(key=lambda s: (s["time"], s["id"]))
        return good, bad

    def find_snapshot(self, ref: str, snapshots: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        snaps = snapshots if snapshots is not None else self.load_snapshots()[0]
        if ref == "latest":
            if not snaps:
                raise UsageError("the repository has no snapshots")
            return snaps[-1]
        hits = [s for s in snaps if s["id"].startswith(ref)]
        if len(hits) != 1:
            if not hits and any(sid.startswith(ref) for sid in self.snapshot_ids()):
                raise DamagedError(f"snapshot {ref} is damaged")
            raise UsageError(f"snapshot {ref!r} matches {len(hits)} snapshots")
        return hits[0]

    def load_tree(self, tid: str) -> list[dict[str, Any]]:
        return json.loads(self.read_blob(bytes.fromhex(tid)))["nodes"]


class PackWriter:
    """Assembles sealed blobs into ~16 MiB packs and uploads them from a background thread.

    Thread-safe: worker threads call :meth:`reserve` before doing the work of
    compressing and sealing a blob, so two files sharing a chunk seal it once.
    """

    def __init__(self, repo: Repository, *, target: int | None = None,
                 on_pack: Callable[[str, int], None] | None = None) -> None:
        self.repo = repo
        # $CONTINUITY_PACK_SIZE, ~16 MiB: few objects per GB (cheap listing, S3 requests) yet cheap to repack
        self.target = target or settings.PACK_SIZE.get()
        self.on_pack = on_pack
        self._lock = threading.Lock()
        self._known = repo.index
        self._pending: set[bytes] = set()
        self._buf = bytearray()
        self._entries: list[tuple[int, bytes, int, int, int]] = []
        self.written: dict[str, list[tuple[int, bytes, int, int, int]]] = {}
        self.bytes_added = 0
        self.blobs_added = 0
        self._q: queue.Queue[tuple[bytes, list[tuple[int, bytes, int, int, int]]] | None] = queue.Queue(2)
        self._error: BaseException | None = None
        self._uploader = threading.Thread(target=self._upload_loop, name="pack-upload", daemon=True)
        self._uploader.start()

    def reserve(self, bid: bytes) -> bool:
        with self._lock:
            if bid in self._known or bid in self._pending:
                return False
            self._pending.add(bid)
            return True

    def unreserve(self, bid: bytes) -> None:
        with self._lock:
            self._pending.discard(bid)

    def add(self, bid: bytes, typ: int, sealed: bytes, raw_len: int) -> None:
        full = None
        with self._lock:
            self._entries.append((typ, bid, len(self._buf), len(sealed), raw_len))
            self._buf += sealed
            self.bytes_added += len(sealed)
            self.blobs_added += 1
            if len(self._buf) >= self.target:
                full = self._take()
        if full is not None:
            self._submit(full)

    def save(self, typ: int, data: bytes) -> bytes:
        bid = self.repo.blob_id(data)
        if self.reserve(bid):
            self.add(bid, typ, self.repo.seal_blob(bid, typ, data), len(data))
        return bid

    def _take(self) -> tuple[bytes, list[tuple[int, bytes, int, int, int]]] | None:
        if not self._entries:
            return None
        buf, ents = self._buf, self._entries
        self._buf, self._entries = bytearray(), []
        header = self.repo.keyring.seal(b"".join(ENTRY.pack(*e) for e in ents), b"pack-header")
        buf += header
        buf += struct.pack(">I", len(header))
        return bytes(buf), ents

    def _submit(self, item: tuple[bytes, list[tuple[int, bytes, int, int, int]]]) -> None:
        if self._error:
            raise self._error
        self._q.put(item)

    def _upload_loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error:
                continue
            data, ents = item
            try:
                pid = file_hash(data)
                self.repo.backend.write(pack_name(pid), data, sync=False)
                with self._lock:
                    self.written[pid] = ents
                if self.on_pack:
                    self.on_pack(pid, len(data))
            except BaseException as exc:  # surfaced to the caller at the next add/finish
                self._error = exc

    def finish(self) -> dict[str, list[tuple[int, bytes, int, int, int]]]:
        """Flush, wait for uploads, make packs durable; returns pack → entries for the index."""
        with self._lock:
            last = self._take()
        if last is not None:
            self._submit(last)
        self._q.put(None)
        self._uploader.join()
        if self._error:
            raise self._error
        self.repo.backend.barrier()
        idx = self.repo.index
        for pid, ents in self.written.items():
            idx.add(pid, ents)
        return self.written

    def abort(self) -> None:
        self._q.put(None)
        self._uploader.join(timeout=30)
