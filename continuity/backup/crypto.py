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
"""

from __future__ import annotations

import base64
import getpass
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


def _kek(password: bytes, params: dict[str, Any]) -> bytes:
    return Scrypt(salt=_unb64(params["salt"]), length=32, n=int(params["n"]),
                  r=int(params["r"]), p=int(params["p"])).derive(password)


def make_key_file(password: bytes, master: bytes, kdf: dict[str, int] | None = None) -> dict[str, Any]:
    """A key file: the master key sealed under scrypt(password). Holds no data key itself."""
    params: dict[str, Any] = dict(kdf or DEFAULT_KDF)
    params["salt"] = _b64(os.urandom(16))
    kek = _kek(password, params)
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return {
        "version": 1,
        "kdf": "scrypt",
        **params,
        "created": time.time(),
        "hostname": socket.gethostname(),
        "username": user,
        "data": _b64(seal_with(kek, master, b"continuity-master-key")),
    }


def unwrap_key_file(doc: dict[str, Any], password: bytes) -> bytes:
    """Return the master key, or raise DecryptError when the password does not fit this key file."""
    if doc.get("kdf") != "scrypt":
        raise DecryptError(f"unsupported kdf {doc.get('kdf')!r}")
    return open_with(_kek(password, doc), _unb64(doc["data"]), b"continuity-master-key")


def keyring_key(master: bytes) -> bytes:
    return hkdf(master, "continuity keyring v1")
