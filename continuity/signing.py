"""Ed25519 key files: the pulse writer's key and operators' keys.

One format for both, readable by people and by :mod:`cryptography`::

    # continuity pulse writer key: core-a.example
    -----BEGIN PRIVATE KEY-----
    (PKCS#8, unencrypted)
    -----END PRIVATE KEY-----

The file is created ``O_EXCL`` with mode 0600 in a 0700 directory and is
refused when group or others can read it: a signing key anyone on the machine
can copy proves nothing. The public half is one line another machine can pin,
``continuity-ed25519 <64 hex digits> <name>``; a key is named by its *key id*,
the first 16 hex digits of SHA-256 of the raw public key.

Why Ed25519: small keys and signatures, deterministic signing (no nonce to get
wrong), ~30 µs to sign and ~100 µs to verify here, and already a dependency
(``cryptography``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from continuity.errors import ContinuityError, ExitCode

PUBLIC_TAG = "continuity-ed25519"


class KeyFileError(ContinuityError):
    """A key file that cannot be used: unreadable, not a key, or readable by others. A setup mistake."""

    exit_code = ExitCode.USAGE


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes
    name: str = ""

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def line(self) -> str:
        return f"{PUBLIC_TAG} {self.raw.hex()} {self.name}".rstrip()


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    public: PublicKey
    path: Path

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @property
    def name(self) -> str:
        return self.public.name

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def public_bytes(private: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public half of ``private``."""
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_key(path: Path, role: str) -> SigningKey:
    """Read a key file; :class:`KeyFileError` naming the file and the fix when it cannot be used."""
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{role} key {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {role} key {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if st.st_mode & 0o077:
        raise KeyFileError(f"{role} key {path} is readable by group or others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}): run `chmod 600 {path}`")
    name = ""
    for line in text.splitlines():
        if line.startswith("#") and ":" in line:
            name = line.split(":", 1)[1].strip()
            break
    start = text.find("-----BEGIN")
    try:
        private = serialization.load_pem_private_key(text[start:].encode(), password=None) if start >= 0 else None
    except (ValueError, TypeError):
        private = None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{role} key {path} is not an unencrypted Ed25519 private key")
    return SigningKey(private, PublicKey(public_bytes(private), name), path)


def create_key(path: Path, role: str, name: str) -> SigningKey:
    """Write a new key file (0600, never over an existing one) and its ``.pub`` line beside it.

    The key is written whole under a temporary name and hard-linked into place, so a process starting at
    the same moment either finds no key or a complete one; two racing creators both end up with the
    one that was linked first.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"# continuity {role} key: {name}\n{pem}")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return load_key(path, role)
    finally:
        tmp.unlink(missing_ok=True)
    key = SigningKey(private, PublicKey(public_bytes(private), name), path)
    pub = public_path(path)
    tmp = pub.with_name(pub.name + f".tmp-{os.getpid()}")
    tmp.write_text(key.public.line() + "\n", encoding="utf-8")
    os.replace(tmp, pub)
    return key


def ensure_key(path: Path, role: str, name: str) -> SigningKey:
    try:
        return load_key(path, role)
    except KeyFileError:
        if path.exists():
            raise
    return create_key(path, role, name)


def public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def read_public_keys(path: Path) -> list[PublicKey]:
    """The keys in a public-key file (one ``continuity-ed25519 <hex> [name]`` per line), or in a private key file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read public key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if "-----BEGIN" in text:
        return [load_key(path, "trusted").public]
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split(None, 2)
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if parts[0] != PUBLIC_TAG or len(parts) < 2:
                raise ValueError
            raw = bytes.fromhex(parts[1])
            Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise KeyFileError(f"{path}:{n}: expected `{PUBLIC_TAG} <64 hex digits> [name]`") from None
        found.append(PublicKey(raw, parts[2].strip() if len(parts) > 2 else ""))
    return found
