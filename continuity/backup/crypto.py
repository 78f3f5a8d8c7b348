"""Keys and authenticated encryption for backup repositories.

Layering (envelope encryption, so passwords and data keys evolve independently):

* each **key file** (``keys/<id>``) wraps the repository's 32-byte *master key*
  with a key derived from one password by scrypt; several key files means
  several passwords open the same repository, and removing one revokes it;
* the master key only decrypts the **keyring** (``keyring/<generation>-<id>``),
  which holds the content-ID key, the chunker seed and every *data key* ever
  used. ``rotate`` appends a new data key that new writes use, while blobs
  written under older keys still decrypt (restic cannot do this: restic#320);
* every stored object is AES-256-GCM sealed with a data key and bound by AAD
  to what it claims to be (a blob to its content ID), so nothing can be
  swapped or altered without the decryption failing.

Key files are read from storage anyone with write access to it can edit, so
their scrypt parameters are capped (:data:`KDF_LIMITS`): a key file asking for
gigabytes of memory is refused with the reason, instead of making every open
of the repository fail with ``MemoryError`` or hang. Each key file also
carries a *keyring stamp*, the newest keyring generation, authenticated with a
key derived from the master key: deleting the newest ``keyring/`` file would
otherwise silently send writers back to a rotated-out data key.
"""

from __future__ import annotations

import base64
import getpass
import hmac
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"C1"
HEADER = struct.Struct(">2sI12s")  # magic, data-key id, nonce
OVERHEAD = HEADER.size + 16


class DecryptError(Exception):
    """Ciphertext failed authentication: the bytes are damaged or were never ours."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def hkdf(secret: bytes, info: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info.encode()).derive(secret)


@dataclass
class Keyring:
    """Secrets shared by everyone who can open the repository."""

    id_key: bytes
    chunker_seed: int
    data_keys: dict[int, bytes]
    current: int
    generation: int = 0
    _aeads: dict[int, AESGCM] = field(default_factory=dict, repr=False)

    @classmethod
    def new(cls) -> Keyring:
        kid = int.from_bytes(os.urandom(4), "big")
        seed = (int.from_bytes(os.urandom(8), "big") >> 1) | 1  # 63 bits; 0 would select the public table
        return cls(id_key=os.urandom(32), chunker_seed=seed, data_keys={kid: os.urandom(32)}, current=kid)

    def rotated(self) -> Keyring:
        kid = int.from_bytes(os.urandom(4), "big")
        while kid in self.data_keys:
            kid = int.from_bytes(os.urandom(4), "big")
        keys = dict(self.data_keys)
        keys[kid] = os.urandom(32)
        return Keyring(self.id_key, self.chunker_seed, keys, kid, self.generation + 1)

    def to_json(self) -> bytes:
        return json.dumps({
            "id_key": self.id_key.hex(),
            "chunker_seed": self.chunker_seed,
            "data_keys": {str(k): v.hex() for k, v in self.data_keys.items()},
            "current": self.current,
            "generation": self.generation,
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Keyring:
        d = json.loads(raw)
        return cls(bytes.fromhex(d["id_key"]), int(d["chunker_seed"]),
                   {int(k): bytes.fromhex(v) for k, v in d["data_keys"].items()},
                   int(d["current"]), int(d.get("generation", 0)))

    def _aead(self, kid: int) -> AESGCM:
        a = self._aeads.get(kid)
        if a is None:
            a = self._aeads[kid] = AESGCM(self.data_keys[kid])
        return a

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt with the current data key; a random 96-bit nonce per object (GCM's safe use)."""
        nonce = os.urandom(12)
        return HEADER.pack(MAGIC, self.current, nonce) + self._aead(self.current).encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        if len(blob) < OVERHEAD:
            raise DecryptError("ciphertext too short")
        magic, kid, nonce = HEADER.unpack_from(blob, 0)
        if magic != MAGIC:
            raise DecryptError("bad magic")
        if kid not in self.data_keys:
            raise DecryptError(f"unknown data key {kid:08x}")
        try:
            return self._aead(kid).decrypt(nonce, memoryview(blob)[HEADER.size:], aad)
        except InvalidTag:
            raise DecryptError("authentication failed") from None


def seal_with(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_with(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 28:
        raise DecryptError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    except InvalidTag:
        raise DecryptError("authentication failed") from None


# scrypt cost: ~0.1 s and 32 MiB here, paid once per command per key file tried.
DEFAULT_KDF = {"n": 2**15, "r": 8, "p": 1}
# What a key file may ask for. scrypt needs 128 * n * r bytes of memory and ~n * r * p units of work; the caps
# allow 8x the default's memory and 32x its work (restic's calibration stays well inside), and refuse the
# n=2**25 that needs 32 GiB.
KDF_LIMITS = {"max_memory": 256 * 1024 * 1024, "max_work": 2**23, "max_r": 32, "max_p": 16}


class KeyFileRefused(DecryptError):
    """A key file this code will not try: unknown KDF, parameters outside the caps, missing fields."""


def check_kdf(params: dict[str, Any]) -> tuple[int, int, int]:
    """``(n, r, p)`` of a key file, or :class:`KeyFileRefused` saying which parameter is out of bounds and why."""
    try:
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    except (KeyError, TypeError, ValueError):
        raise KeyFileRefused("scrypt parameters n, r, p missing or not integers") from None
    if n < 2 or n & (n - 1):
        raise KeyFileRefused(f"scrypt n={n} is not a power of two")
    if not 1 <= r <= KDF_LIMITS["max_r"] or not 1 <= p <= KDF_LIMITS["max_p"]:
        raise KeyFileRefused(f"scrypt r={r}, p={p} outside 1..{KDF_LIMITS['max_r']}, 1..{KDF_LIMITS['max_p']}")
    memory = 128 * n * r
    if memory > KDF_LIMITS["max_memory"]:
        raise KeyFileRefused(f"scrypt n={n}, r={r} needs {memory >> 20} MiB of memory "
                             f"(limit {KDF_LIMITS['max_memory'] >> 20} MiB)")
    if n * r * p > KDF_LIMITS["max_work"]:
        raise KeyFileRefused(f"scrypt n={n}, r={r}, p={p} is {n * r * p // (2**18)}x the default work "
                             f"(limit {KDF_LIMITS['max_work'] // 2**18}x)")
    return n, r, p


def _kek(password: bytes, params: dict[str, Any]) -> bytes:
    n, r, p = check_kdf(params)
    try:
        salt = _unb64(params["salt"])
    except (KeyError, TypeError, ValueError):
        raise KeyFileRefused("salt missing or not base64") from None
    try:
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password)
    except MemoryError:  # within the caps, but this machine has less to give
        raise KeyFileRefused(f"not enough memory for scrypt n={n}, r={r}") from None


def make_key_file(password: bytes, master: bytes, kdf: dict[str, int] | None = None,
                  generation: int = 0) -> dict[str, Any]:
    """A key file: the master key sealed under scrypt(password), stamped with the keyring generation.

    Holds no data key itself. Parameters beyond :data:`KDF_LIMITS` are refused here too, so this code
    never writes a key file it would then refuse to open.
    """
    params: dict[str, Any] = dict(kdf or DEFAULT_KDF)
    params["salt"] = _b64(os.urandom(16))
    kek = _kek(password, params)
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    doc = {
        "version": 1,
        "kdf": "scrypt",
        **params,
        "created": time.time(),
        "hostname": socket.gethostname(),
        "username": user,
        "data": _b64(seal_with(kek, master, b"continuity-master-key")),
    }
    return stamp_key_file(doc, master, generation)


def unwrap_key_file(doc: Any, password: bytes) -> bytes:
    """Return the master key; :class:`KeyFileRefused` for a key file not worth trying, :class:`DecryptError`
    when the password does not fit it."""
    if not isinstance(doc, dict):
        raise KeyFileRefused("not a key file (JSON object expected)")
    if doc.get("kdf") != "scrypt":
        raise KeyFileRefused(f"unsupported kdf {doc.get('kdf')!r}")
    try:
        sealed = _unb64(doc["data"])
    except (KeyError, TypeError, ValueError):
        raise KeyFileRefused("sealed master key missing or not base64") from None
    return open_with(_kek(password, doc), sealed, b"continuity-master-key")


def _stamp_mac(master: bytes, generation: int) -> str:
    return hmac.new(hkdf(master, "continuity keyring stamp v1"), f"keyring-generation:{generation}".encode(),
                    "sha256").hexdigest()


def stamp_key_file(doc: dict[str, Any], master: bytes, generation: int) -> dict[str, Any]:
    """``doc`` recording ``generation`` as the newest keyring, authenticated with the master key."""
    return {**doc, "keyring": {"generation": int(generation), "mac": _stamp_mac(master, int(generation))}}


def stamped_generation(doc: dict[str, Any], master: bytes) -> int | None:
    """The keyring generation a key file vouches for; None when it carries no stamp (an older key file).

    A stamp whose MAC does not verify raises :class:`DecryptError`: someone edited it.
    """
    stamp = doc.get("keyring")
    if stamp is None:
        return None
    try:
        gen = int(stamp["generation"])
        ok = hmac.compare_digest(str(stamp["mac"]), _stamp_mac(master, gen))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise DecryptError("keyring stamp does not authenticate (edited)")
    return gen


def keyring_key(master: bytes) -> bytes:
    return hkdf(master, "continuity keyring v1")
