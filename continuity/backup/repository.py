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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import blake3
import zstandard

from continuity import settings
from continuity.backup import crypto
from continuity.backup.blobtable import BlobTable
from continuity.backup.spilltable import SpilledTable
from continuity.backup.storage import AppendOnlyBackend, AppendOnlyRefused, Backend, NotFound
from continuity.errors import ContinuityError, RepositoryMissing, UsageError, WrongKey

FORMAT_VERSION = 1
DATA, TREE = 0, 1
ENTRY = struct.Struct(">B32sIII")  # type, blob id, offset, length, raw length
PACK_HEAD = struct.Struct(">32sI")  # pack id, entry count
INDEX_RATIO = 16  # bound on how far a sealed index file may decompress (real ones: ~1.1x)
_TLS = threading.local()


class DamagedError(ContinuityError):
    """Stored bytes failed authentication or hashing; carries what is damaged."""


class KeyringRollback(ContinuityError):
    """The newest keyring generation a key file records is gone: no write until it is back (or rotated past)."""


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


def decompress(body: bytes | memoryview, limit: int) -> bytes:
    """zstd-decompress at most ``limit`` bytes, or raise ValueError / ZstdError.

    Blobs are authenticated before this runs, but anyone holding the repository key (every node sharing
    it) can seal a few KiB that inflate to gigabytes. python-zstandard trusts a frame's declared content
    size over ``max_output_size`` and allocates it up front, so that size is checked first; a frame
    without one is bounded by ``max_output_size``.
    """
    declared = zstandard.frame_content_size(body)
    if declared > limit:
        raise ValueError(f"compressed frame declares {declared} bytes, {limit} expected")
    return _zd().decompress(body, max_output_size=max(limit, 1))


def file_hash(data: bytes | bytearray | memoryview) -> str:
    return blake3.blake3(data, max_threads=1).hexdigest()


@dataclass(frozen=True, slots=True)  # one per blob in memory: slots halve its size
class IndexEntry:
    pack: str
    offset: int
    length: int
    raw_length: int
    type: int


Entries = list[tuple[int, bytes, int, int, int]] | bytes | bytearray  # tuples, or ENTRY records packed
LOCATION = struct.Struct(">IIIIB")  # pack number, offset, length, raw length, type: a blob's record in memory


def entry_tuples(ents: Entries) -> list[tuple[int, bytes, int, int, int]]:
    """(type, id, offset, length, raw length) of each entry, whichever of the two forms ``ents`` is in."""
    if isinstance(ents, bytes | bytearray):
        return [ENTRY.unpack_from(ents, i) for i in range(0, len(ents), ENTRY.size)]
    return ents


class Index:
    """Blob id → location. Built from index files (and pack headers when an index file is damaged).

    Held compactly (see :mod:`continuity.backup.blobtable`): the locations in a :class:`BlobTable`, each
    pack's entries as their packed 45-byte records. ``entries`` and ``packs`` are read-only mapping views
    that decode on access, so callers still see :class:`IndexEntry` values and lists of tuples.
    """

    def __init__(self, *, pack_entries: bool = True, expected: int = 0) -> None:
        # without ``pack_entries`` (a restore: ids to locations is all it needs) each pack's entry list is
        # not kept, and the locations go to a temporary file (:mod:`continuity.backup.spilltable`), sized for
        # ``expected`` blobs, so a restore's memory does not grow with the repository; ``packs`` then reads
        # the index files again the first time it is used
        self.pack_entries = pack_entries
        self.reload: Callable[[], Index] | None = None
        self._table: BlobTable | SpilledTable = (BlobTable(LOCATION.size) if pack_entries
                                                 else SpilledTable(LOCATION.size, expected))
        self._pack_names: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._packs: dict[str, bytearray] = {}
        self.files: dict[str, set[str]] = {}  # index file -> packs it names
        self.damaged_files: dict[str, str] = {}
        self.recovered: set[str] = set()  # packs read from their own header, in no index file
        self.entries = _EntriesView(self)
        self.packs = _PacksView(self)

    def add(self, pack: str, entries: Entries) -> None:
        no = self._pack_no.get(pack)
        if no is None:
            no = self._pack_no[pack] = len(self._pack_names)
            self._pack_names.append(pack)
            self._packs[pack] = bytearray()
        ents = self._packs[pack]
        table = self._table
        if not self.pack_entries:
            for typ, bid, off, length, raw in entry_tuples(entries):
                table.add(bid, LOCATION.pack(no, off, length, raw, typ))
            return
        if isinstance(entries, bytes | bytearray):
            ents += entries
            entries = entry_tuples(entries)
            for typ, bid, off, length, raw in entries:
                table.add(bid, LOCATION.pack(no, off, length, raw, typ))
            return
        for typ, bid, off, length, raw in entries:
            table.add(bid, LOCATION.pack(no, off, length, raw, typ))
            ents += ENTRY.pack(typ, bid, off, length, raw)

    def __contains__(self, bid: object) -> bool:
        return bid in self._table

    def loaded(self) -> None:
        """Every index file is in: a table in a file puts its records in place now, once."""
        if isinstance(self._table, SpilledTable):
            self._table.seal()

    def need_pack_entries(self) -> None:
        """Make ``packs`` complete: a lean index (see ``pack_entries``) is read again, in full, once."""
        if self.pack_entries:
            return
        if self.reload is None:
            raise RuntimeError("this index was loaded without pack entries and cannot read them again")
        full = self.reload()
        if isinstance(self._table, SpilledTable):
            self._table.close()
        self._table, self._pack_names, self._pack_no, self._packs = full._table, full._pack_names, \
            full._pack_no, full._packs
        self.files, self.damaged_files, self.recovered = full.files, full.damaged_files, full.recovered
        self.pack_entries = True
        self.packs._packs = self._packs

    def __len__(self) -> int:
        return len(self._table)

    def get(self, bid: bytes) -> IndexEntry | None:
        rec = self._table.get(bid)
        if rec is None:
            return None
        no, off, length, raw, typ = LOCATION.unpack(rec)
        return IndexEntry(self._pack_names[no], off, length, raw, typ)


class _EntriesView(Mapping[bytes, IndexEntry]):
    """``index.entries``: blob id → :class:`IndexEntry`, decoded from the compact table on access."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def __getitem__(self, bid: bytes) -> IndexEntry:
        e = self._index.get(bid)
        if e is None:
            raise KeyError(bid)
        return e

    def __contains__(self, bid: object) -> bool:
        return bid in self._index._table

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._index._table)

    def __len__(self) -> int:
        return len(self._index._table)


class _PacksView(Mapping[str, list[tuple[int, bytes, int, int, int]]]):
    """``index.packs``: pack → its entries as tuples, decoded from the packed records on access."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._packs = index._packs

    def __getitem__(self, pack: str) -> list[tuple[int, bytes, int, int, int]]:
        self._index.need_pack_entries()
        return entry_tuples(self._packs[pack])

    def __contains__(self, pack: object) -> bool:
        return pack in self._packs

    def __iter__(self) -> Iterator[str]:
        return iter(self._packs)

    def __len__(self) -> int:
        return len(self._packs)


def encode_index(packs: Mapping[str, Entries]) -> bytes:
    out = bytearray(b"IDX1")
    for pack, ents in sorted(packs.items()):
        if isinstance(ents, bytes | bytearray):
            out += PACK_HEAD.pack(bytes.fromhex(pack), len(ents) // ENTRY.size)
            out += ents
            continue
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
        self.key_problems: list[str] = []  # key files tried before the one that opened, and why each failed
        self.keyring_problem: str | None = None  # set when the newest keyring generation is missing
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
        try:
            doc = crypto.make_key_file(password, master, kdf, ring.generation)
        except crypto.KeyFileRefused as exc:
            raise UsageError(f"key parameters refused: {exc}") from None
        backend.write(f"keys/{key_id}", json.dumps(doc).encode())
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
        except OSError as exc:  # unreadable (permissions, I/O): said in one line, as restic does
            raise ContinuityError(f"cannot read the repository config at {backend.url}: "
                                  f"{exc.strerror or exc}") from None
        if config.get("version") != FORMAT_VERSION:
            raise ContinuityError(f"unsupported repository format {config.get('version')!r}")
        failures: list[str] = []
        for name, _ in sorted(backend.list("keys")):
            kid = name.split("/")[-1]
            try:
                doc = json.loads(backend.read(name))
                master = crypto.unwrap_key_file(doc, password)
            except crypto.KeyFileRefused as exc:
                failures.append(f"{kid[:8]}: refused, {exc}")
                continue
            except crypto.DecryptError:
                failures.append(f"{kid[:8]}: the password does not open it")
                continue
            except (ValueError, NotFound) as exc:
                failures.append(f"{kid[:8]}: unreadable ({'not JSON' if isinstance(exc, ValueError) else 'gone'})")
                continue
            if doc.get("append_only"):
                # an add-only credential: the guard stands between every later command and the storage
                backend = AppendOnlyBackend(backend)
            ring = cls._load_keyring(backend, master)
            repo = cls(backend, ring, master, kid, config)
            repo.key_problems = failures
            repo._check_stamp(doc)
            return repo
        tried = f"{len(failures)} key file(s) tried: " + "; ".join(failures) if failures else "no key files"
        raise WrongKey(f"wrong password or no usable key for repository {backend.url} ({tried})")

    def _check_stamp(self, doc: dict[str, Any]) -> None:
        """Compare the keyring generation the key file vouches for with the newest readable one.

        Fewer generations than stamped means a ``keyring/`` file was deleted or damaged: writing now would
        seal new data with a data key that ``rotate`` retired. Reads still work (blobs under the lost data
        key report as damaged); every write refuses (:meth:`require_writable`) and ``verify`` reports it.
        """
        try:
            stamped = crypto.stamped_generation(doc, self.master)
        except crypto.DecryptError as exc:
            self.keyring_problem = f"key file {self.key_id[:8]}: {exc}"
            return
        if stamped is not None and stamped > self.keyring.generation:
            self.keyring_problem = (f"keyring generation {stamped} is missing (key file {self.key_id[:8]} records it; "
                                    f"the newest readable is {self.keyring.generation}): writing would reuse a "
                                    "retired data key; put the keyring file back, or `continuity backup key "
                                    "rotate` to start a new generation")

    def require_deletable(self, operation: str) -> None:
        """Refuse ``forget``/``prune`` up front, before any work, when this credential or server only adds."""
        if not self.backend.can_delete():
            raise AppendOnlyRefused(f"repository {self.backend.url} is append-only for this credential: "
                                    f"{operation} refused (it needs a full-access key or server credential)")

    def require_writable(self) -> None:
        """Refuse to write anything while the keyring is older than the key files record."""
        if self.keyring_problem:
            raise KeyringRollback(f"repository {self.backend.url}: {self.keyring_problem}")

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
                crypto.check_kdf(d)
            except (ValueError, NotFound, AttributeError):
                out.append({"id": kid, "damaged": True, "current": kid == self.key_id})
                continue
            except crypto.KeyFileRefused as exc:
                out.append({"id": kid, "refused": str(exc), "current": False})
                continue
            out.append({"id": kid, "current": kid == self.key_id, "hostname": d.get("hostname"),
                        "username": d.get("username"), "created": d.get("created"),
                        "append_only": bool(d.get("append_only"))})
        return out

    def add_key(self, password: bytes, kdf: dict[str, int] | None = None, *, append_only: bool = False) -> str:
        """A new password; ``append_only`` makes it a credential that adds snapshots but never deletes."""
        self.require_writable()
        try:
            doc = crypto.make_key_file(password, self.master, kdf, self.keyring.generation)
        except crypto.KeyFileRefused as exc:
            raise UsageError(f"key parameters refused: {exc}") from None
        if append_only:
            doc["append_only"] = True
        kid = uuid.uuid4().hex
        self.backend.write(f"keys/{kid}", json.dumps(doc).encode())
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
        """Start a new data key for new writes; old data keys stay in the keyring to read old blobs.

        The new generation is written first, then every key file this master key opens is re-stamped with
        it, so deleting the new ``keyring/`` file afterwards is noticed by whoever opens the repository. A
        rotate is also how a repository whose newest generation was lost is brought back into service: the
        new generation is numbered above the lost one.
        """
        ring = self.keyring.rotated()
        ring.generation = max(ring.generation, self._stamped_max() + 1)
        self._save_keyring(ring)
        self.keyring = ring
        self.keyring_problem = None
        self._restamp(ring.generation)
        return ring.current

    def _key_docs(self) -> Iterator[tuple[str, dict[str, Any], int | None]]:
        """Every key file that parses, with the generation its stamp vouches for (None: none, or edited)."""
        for name, _ in sorted(self.backend.list("keys")):
            try:
                doc = json.loads(self.backend.read(name))
            except (ValueError, NotFound):
                continue
            if not isinstance(doc, dict):
                continue
            try:
                gen = crypto.stamped_generation(doc, self.master)
            except crypto.DecryptError:
                gen = None
            yield name, doc, gen

    def _stamped_max(self) -> int:
        return max((gen or 0 for _, _, gen in self._key_docs()), default=0)

    def _restamp(self, generation: int) -> None:
        for name, doc, gen in self._key_docs():
            if gen is None or gen < generation:
                self.backend.write(name, json.dumps(crypto.stamp_key_file(doc, self.master, generation)).encode())

    # ---------------------------------------------------------------- blobs
    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        return blake3.blake3(data, key=self.keyring.id_key, max_threads=1).digest()

    def seal_blob(self, bid: bytes, typ: int, data: bytes | bytearray | memoryview) -> bytes:
        comp = _zc().compress(data)
        payload = b"\x01" + comp if len(comp) < len(data) else b"\x00" + bytes(data)
        return self.keyring.seal(payload, bid + bytes([typ]))

    def open_blob(self, bid: bytes, typ: int, sealed: bytes | memoryview, raw_length: int) -> bytes:
        """Decrypt, decompress and check the content hash: the only way blob bytes leave storage.

        ``raw_length`` is the plaintext length the index declares; decompression never produces more.
        """
        data = self.open_blob_view(bid, typ, sealed, raw_length)
        return data if isinstance(data, bytes) else bytes(data)

    def open_blob_view(self, bid: bytes, typ: int, sealed: bytes | memoryview,
                       raw_length: int) -> bytes | memoryview:
        """As :meth:`open_blob`, checked the same way, but a blob stored uncompressed comes back as a view
        of the decrypted payload: restore writes it out directly, sparing a copy of up to 4 MiB per thread."""
        try:
            payload = self.keyring.open(sealed, bid + bytes([typ]))
        except crypto.DecryptError as exc:
            raise DamagedError(f"blob {bid.hex()[:16]}: {exc}") from None
        body = memoryview(payload)[1:]
        try:
            data = decompress(body, raw_length) if payload[:1] == b"\x01" else body
        except (zstandard.ZstdError, ValueError) as exc:
            raise DamagedError(f"blob {bid.hex()[:16]}: {exc}") from None
        if self.blob_id(data) != bid:
            raise DamagedError(f"blob {bid.hex()[:16]}: content hash mismatch")
        return data

    # ---------------------------------------------------------------- index
    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = self.load_index()
        return self._index

    def lean_index(self) -> Index:
        """The index for reading blobs only (a restore): loaded without each pack's entry list if not yet
        loaded. ``packs`` still works on it (it reads the index files again, once)."""
        if self._index is None:
            self._index = self.load_index(pack_entries=False)
        return self._index

    def load_index(self, *, rebuild_missing: bool = True, pack_entries: bool = True) -> Index:
        listing = sorted(self.backend.list("index"))
        idx = Index(pack_entries=pack_entries, expected=sum(size for _, size in listing) // ENTRY.size)
        idx.reload = lambda: self.load_index(rebuild_missing=rebuild_missing)
        for name, _ in listing:
            fid = name.split("/")[-1]
            try:
                sealed = self.backend.read(name)
                if file_hash(sealed) != fid:
                    raise ValueError("file content does not match its name")
                # an index entry is 45 bytes of mostly random ids: a real index barely compresses
                raw = decompress(self.keyring.open(sealed, b"index"), INDEX_RATIO * len(sealed) + 65536)
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
        idx.loaded()
        return idx

    def drop_index(self) -> None:
        """Forget the in-memory index; the next use reads it again from the index files."""
        self._index = None

    def save_index(self, packs: Mapping[str, Entries], *, adopt_recovered: bool = True) -> str:
        """Write one index file for ``packs``, after they are durable.

        Packs recovered from their own headers (left by an interrupted run)
        are adopted too: this run may have deduplicated against their blobs,
        and a committed snapshot must never depend on a pack no index names.
        """
        self.require_writable()
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
        return self.open_blob(bid, e.type, sealed, e.raw_length)

    # ---------------------------------------------------------------- files (snapshots)
    def save_file(self, kind: str, obj: Any) -> str:
        self.require_writable()
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
                 on_pack: Callable[[str, int], None] | None = None, index_every: int | None = None) -> None:
        repo.require_writable()
        self.repo = repo
        # with ``index_every``: once the uploaded packs hold that many blobs, they are made durable and an
        # index file names them, so what is kept for the final index stays bounded (restic does the same);
        # an index file naming packs no snapshot uses is harmless (prune collects them)
        self.index_every = index_every
        self.packs_written = 0
        # $CONTINUITY_PACK_SIZE, ~16 MiB: few objects per GB (cheap listing, S3 requests) yet cheap to repack
        self.target = target or settings.PACK_SIZE.get()
        self.on_pack = on_pack
        self._lock = threading.Lock()
        self._known = repo.index
        self._pending = BlobTable()  # ids reserved by this writer: compact, it holds every new blob of a run
        self._buf = bytearray()
        self._entries: list[tuple[int, bytes, int, int, int]] = []
        # pack id -> its entries as packed ENTRY records (45 bytes a blob: they stay until the index is written)
        self.written: dict[str, bytes] = {}
        self.bytes_added = 0
        self.blobs_added = 0
        # one pack waiting while one uploads and one fills: each is ~16 MiB of peak memory
        self._q: queue.Queue[tuple[bytearray, bytes] | None] = queue.Queue(1)
        self._error: BaseException | None = None
        self._uploader = threading.Thread(target=self._upload_loop, name="pack-upload", daemon=True)
        self._uploader.start()

    def reserve(self, bid: bytes) -> bool:
        with self._lock:
            return bid not in self._known and self._pending.add(bid)

    def unreserve(self, bid: bytes) -> None:
        with self._lock:
            self._pending.remove(bid)

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

    def _take(self) -> tuple[bytearray, bytes] | None:
        if not self._entries:
            return None
        buf, ents = self._buf, self._entries
        self._buf, self._entries = bytearray(), []
        plain = b"".join(ENTRY.pack(*e) for e in ents)
        header = self.repo.keyring.seal(plain, b"pack-header")
        buf += header
        buf += struct.pack(">I", len(header))
        return buf, plain  # handed on as is: a bytes() copy would hold a second pack in memory

    def _submit(self, item: tuple[bytearray, bytes]) -> None:
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
                    self.packs_written += 1
                    full = self.index_every and sum(map(len, self.written.values())) >= self.index_every * ENTRY.size
                    chunk = self.written if full else None
                    if full:
                        self.written = {}
                if chunk:
                    self.repo.backend.barrier()
                    self.repo.save_index(chunk, adopt_recovered=False)
                if self.on_pack:
                    self.on_pack(pid, len(data))
            except BaseException as exc:  # surfaced to the caller at the next add/finish
                self._error = exc

    def finish(self, *, update_index: bool = True) -> dict[str, bytes]:
        """Flush, wait for uploads, make packs durable; returns pack → entries (packed) for the index.

        Without ``update_index`` the repository's in-memory index is dropped instead of extended (it is
        read again if used): a snapshot that only writes the index file need not hold a second copy.
        """
        with self._lock:
            last = self._take()
        if last is not None:
            self._submit(last)
        self._q.put(None)
        self._uploader.join()
        if self._error:
            raise self._error
        self.repo.backend.barrier()
        self._pending = BlobTable()
        if not update_index:
            return self.written
        idx = self.repo.index
        for pid, ents in self.written.items():
            idx.add(pid, ents)
        return self.written

    def abort(self) -> None:
        self._q.put(None)
        self._uploader.join(timeout=30)
