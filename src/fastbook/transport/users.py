"""The credentials file of the embedded broker.

File format (JSON, written by `fastbook users`, mode 0600, replaced atomically):

    {"version": 1,
     "users": {"alice": {"role": "trader", "hash": "scrypt$16384$8$1$<salt b64>$<key b64>"},
               "seq-btc": {"role": "sequencer", "hash": "scrypt$..."}}}

Passwords are never stored: each user has a random 16-byte salt and the scrypt key of the password
(n=2^14, r=8, p=1, 32 bytes); a check recomputes it and compares in constant time.

The topic ACL every connection is held to is fastbook.transport.acl. The MQTT client id must be the
user name (so bob cannot take over alice's session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROLES = ("trader", "sequencer")
USER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A user name is the last level of its private topics; one equal to a public topic's last level
# (reports/log) would make a filter like +/+/+/log match a private topic.
RESERVED_NAMES = frozenset({"book", "trades", "snapshot", "log", "orders", "reports", "replicas",
                            "replay", "request", "response"})
# The client ids fastbook-sequencer uses when it runs without credentials (cli/sequencer.py).
INTERNAL_PREFIX = "fastbook-sequencer-"
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES, SALT_BYTES = 1 << 14, 8, 1, 32, 16
MAX_FILE_BYTES = 8 << 20
MAX_PASSWORD_BYTES = 1024


class UsersFileError(ValueError):
    """The credentials file is unreadable or malformed; the message says where."""


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not USER_RE.fullmatch(name):
        raise ValueError(f"user name must be 1-64 characters of A-Z a-z 0-9 . _ - , got {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"user name {name!r} is reserved (it is a topic name)")
    if name.startswith(INTERNAL_PREFIX):
        raise ValueError(f"user names starting with {INTERNAL_PREFIX!r} are reserved for the broker")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise ValueError("the password is empty")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return password


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(check_password(password).encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                         p=SCRYPT_P, dklen=KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$") if isinstance(encoded, str) else []
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt$n$r$p$salt$key hash")
    n, r, p = (int(x) for x in parts[1:4])
    # Bounds keep a hostile file from making each check take seconds or gigabytes (scrypt needs
    # 128 * r * n bytes: at most 64 MiB here).
    if not (2 <= n <= 1 << 17 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4
            and 128 * r * n <= 64 << 20):
        raise ValueError("scrypt parameters out of range")
    salt = base64.b64decode(parts[4], validate=True)
    key = base64.b64decode(parts[5], validate=True)
    if not salt or not 16 <= len(key) <= 64:
        raise ValueError("bad salt or key length")
    return n, r, p, salt, key


def verify_password(password: str | bytes | None, encoded: str) -> bool:
    """Constant-time check of a password against its stored hash (False on any malformed input)."""
    if password is None:
        return False
    raw = password if isinstance(password, bytes) else str(password).encode()
    if not raw or len(raw) > MAX_PASSWORD_BYTES:
        return False
    try:
        n, r, p, salt, key = _parse_hash(encoded)
        candidate = hashlib.scrypt(raw, salt=salt, n=n, r=r, p=p, dklen=len(key),
                                   maxmem=128 * r * (n + p + 2) + (1 << 20))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, key)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str


class UsersFile:
    """Users loaded from (and saved to) one credentials file."""

    def __init__(self, path: Path, users: dict[str, User] | None = None) -> None:
        self.path = Path(path)
        self.users: dict[str, User] = dict(users or {})

    @classmethod
    def load(cls, path: Path, missing_ok: bool = False) -> UsersFile:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            if missing_ok:
                return cls(path)
            raise UsersFileError(f"credentials file {path} does not exist") from None
        except OSError as exc:
            raise UsersFileError(f"cannot read credentials file {path}: {exc.strerror or exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise UsersFileError(f"credentials file {path} is larger than {MAX_FILE_BYTES} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise UsersFileError(f"credentials file {path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("users"), dict):
            raise UsersFileError(f"credentials file {path}: expected {{\"version\": 1, \"users\": {{...}}}}")
        users: dict[str, User] = {}
        for name, entry in doc["users"].items():
            where = f"credentials file {path}, user {name!r}"
            try:
                check_user_name(name)
            except ValueError as exc:
                raise UsersFileError(f"{where}: {exc}") from None
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise UsersFileError(f"{where}: expected {{\"role\": one of {ROLES}, \"hash\": ...}}")
            try:
                _parse_hash(entry.get("hash"))  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                raise UsersFileError(f"{where}: bad password hash ({exc})") from None
            users[name] = User(name, entry["role"], entry["hash"])
        return cls(path, users)

    def save(self) -> None:
        """Write atomically (temp file in the same directory, fsync, rename), mode 0600."""
        doc = {"version": 1, "users": {u.name: {"role": u.role, "hash": u.password_hash}
                                       for u in sorted(self.users.values(), key=lambda u: u.name)}}
        data = (json.dumps(doc, indent=1) + "\n").encode()
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)  # created 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def set(self, name: str, password: str, role: str = "trader") -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.users[check_user_name(name)] = User(name, role, hash_password(password))

    def remove(self, name: str) -> None:
        if name not in self.users:
            raise KeyError(name)
        del self.users[name]

    def check(self, name: str | None, password: str | bytes | None) -> User | None:
        """The user if name/password match, else None (an unknown name costs a hash too)."""
        user = self.users.get(name) if isinstance(name, str) else None
        if user is None:
            verify_password(password or "x", _DUMMY_HASH)  # same work: no user-name oracle by timing
            return None
        return user if verify_password(password, user.password_hash) else None


_DUMMY_HASH = hash_password("not a password", salt=b"fastbook-dummy-salt")
