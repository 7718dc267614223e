"""Users, API keys and login tokens on the database: the logic behind the ``api_keys`` plugin.

- Passwords are hashed with scrypt (memory-hard, in the standard library) and a random
  salt; checks compare in constant time.
- API keys are ``lgk_`` and 43 random URL-safe characters. Only the SHA-256 of the key and
  a 12-character display prefix are stored; a key is found by its prefix and compared by
  hash in constant time. Keys may expire and be revoked; ``last_used_at`` is written at
  most once a minute per key, so authentication does not write on every call.
- Login tokens are JWTs signed with HS256 only (the algorithm is pinned when verifying, so
  ``alg: none`` and other algorithms are refused) and must carry ``exp``, ``iat`` and ``sub``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select

from ...db import ApiKey, AuditEvent, Database, User
from ...db.models import utcnow
from ...kernel.errors import AuthenticationFailed, Conflict, InvalidInput
from ...kernel.types import Identity

ROLES = ("read", "write", "admin")
TIERS = ("standard", "premium")
KEY_PREFIX = "lgk_"
DISPLAY_LENGTH = 12
JWT_ALGORITHM = "HS256"
#: Failed logins allowed per user name and per client address in five minutes.
LOGIN_FAILURES = parse("5/5minute")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def roles_of(role: str, permissions: list[str] | None = None) -> frozenset[str]:
    """The roles a role grants (each includes those below it), narrowed to ``permissions`` when given."""
    granted = frozenset(ROLES[: ROLES.index(role) + 1])
    return granted & frozenset(permissions) if permissions is not None else granted


def top_role(roles: frozenset[str] | list[str]) -> str:
    """The highest of ``roles``."""
    return max(roles, key=ROLES.index) if roles else "read"


def parse_duration(value: int | str | None) -> int | None:
    """Seconds from ``3600``, ``"90m"``, ``"12h"``, ``"30d"``… (``None``: no expiry)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput("expires_in must be seconds or a duration like '30d'", details={"field": "expires_in"})
    match = _DURATION.match(str(value).strip())
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not match or not 60 <= seconds <= 10 * 365 * 86400:
        raise InvalidInput(
            "expires_in must be between one minute and ten years, as seconds or like '12h' or '30d'",
            details={"field": "expires_in"},
        )
    return seconds


# --------------------------------------------------------------------------------- secrets
def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` of ``password``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 2**20, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20, dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_api_key() -> tuple[str, str, str]:
    """A new key: (the key, its display prefix, its SHA-256)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:DISPLAY_LENGTH], key_hash(key)


def key_hash(key: str) -> str:
    """SHA-256 of a key, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def jwt_secret(configured: str, data_dir: str) -> str:
    """The signing secret: configured, else read from (or created once in) ``<data_dir>/jwt-secret`` (mode 0600)."""
    if configured:
        return configured
    path = Path(data_dir) / "jwt-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


# --------------------------------------------------------------------------------- accounts
class Accounts:
    """Users, keys and tokens of one database."""

    def __init__(self, db: Database, secret: Callable[[], str], token_seconds: int) -> None:
        self.db = db
        self._secret_source = secret
        self._secret_value: str | None = None
        self.token_seconds = token_seconds
        self._touched: dict[int, float] = {}
        self._touch_lock = threading.Lock()
        self._login_failures = MovingWindowRateLimiter(MemoryStorage())

    # users ------------------------------------------------------------------------------------
    def create_user(self, username: str, password: str, role: str, actor: str | None = None) -> User:
        """A new user; CONFLICT when the name is taken."""
        if not _USERNAME.match(username or ""):
            raise InvalidInput("username: 1-64 letters, digits or . _ @ -", details={"field": "username"})
        if len(password or "") < 8:
            raise InvalidInput("password: at least 8 characters", details={"field": "password"})
        _check_role(role)
        with self.db.session() as session:
            if session.scalar(select(User).where(User.username == username)) is not None:
                raise Conflict(f"user {username!r} exists", details={"username": username})
            user = User(username=username, password_hash=hash_password(password), role=role)
            session.add(user)
            session.flush()
            session.add(AuditEvent(actor=actor, action="user.create", target=f"user:{user.id}", details={"role": role}))
            return user

    def count_users(self) -> int:
        """How many users exist."""
        with self.db.session() as session:
            return len(session.scalars(select(User.id)).all())

    def check_password(self, username: str, password: str) -> User | None:
        """The user if ``password`` is right (time spent hashing either way)."""
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == username))
            stored = user.password_hash if user is not None else _DUMMY_HASH
            ok = verify_password(password, stored) and user is not None and not user.disabled
            if ok and user is not None:
                user.last_login_at = utcnow()
            return user if ok else None

    def login_throttled(self, keys: tuple[str, ...]) -> int:
        """Seconds to wait before logging in as/from ``keys`` again (0: go ahead)."""
        for key in keys:
            if not self._login_failures.test(LOGIN_FAILURES, "login", key):
                reset, _ = self._login_failures.get_window_stats(LOGIN_FAILURES, "login", key)
                return max(1, int(reset - time.time()) + 1)
        return 0

    def login_failed(self, keys: tuple[str, ...]) -> None:
        """Count a failed login against each of ``keys`` (user name, client address)."""
        for key in keys:
            self._login_failures.hit(LOGIN_FAILURES, "login", key)

    # keys -------------------------------------------------------------------------------------
    def create_key(
        self,
        name: str,
        role: str,
        *,
        permissions: list[str] | None = None,
        expires_in: int | None = None,
        tier: str = "standard",
        user_id: int | None = None,
        parent_key_id: int | None = None,
        actor: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once, never stored)."""
        _check_role(role)
        if tier not in TIERS:
            raise InvalidInput(f"tier must be one of {', '.join(TIERS)}", details={"field": "tier"})
        if permissions is not None:
            unknown = sorted(set(permissions) - set(ROLES))
            if unknown:
                raise InvalidInput(f"unknown permissions: {unknown}", details={"field": "permissions"})
        full, prefix, digest = new_api_key()
        expires = utcnow() + dt.timedelta(seconds=expires_in) if expires_in else None
        with self.db.session() as session:
            key = ApiKey(
                name=name,
                prefix=prefix,
                key_hash=digest,
                role=role,
                permissions=sorted(permissions) if permissions is not None else None,
                tier=tier,
                user_id=user_id,
                parent_key_id=parent_key_id,
                expires_at=expires,
            )
            session.add(key)
            session.flush()
            details = {"role": role, "name": name, "prefix": prefix}
            session.add(AuditEvent(actor=actor, action="key.create", target=f"api_key:{key.id}", details=details))
        return key, full

    def find_key(self, presented: str) -> ApiKey:
        """The live key for ``presented``; AUTHENTICATION_FAILED when unknown, expired or revoked."""
        if not presented.startswith(KEY_PREFIX) or len(presented) > 128:
            raise AuthenticationFailed("invalid API key")
        digest = key_hash(presented)
        with self.db.session() as session:
            candidates = session.scalars(select(ApiKey).where(ApiKey.prefix == presented[:DISPLAY_LENGTH])).all()
            key = next((k for k in candidates if hmac.compare_digest(k.key_hash, digest)), None)
            if key is None:
                raise AuthenticationFailed("invalid API key")
            now = utcnow()
            if key.revoked_at is not None:
                raise AuthenticationFailed("this API key was revoked", details={"key_id": key.id})
            if key.expires_at is not None and _aware(key.expires_at) <= now:
                raise AuthenticationFailed("this API key has expired", details={"key_id": key.id})
            if self._due(key.id):
                key.last_used_at = now
            session.expunge(key)
            return key

    def _due(self, key_id: int) -> bool:
        now = time.monotonic()
        with self._touch_lock:
            if now - self._touched.get(key_id, -1e9) < 60:
                return False
            self._touched[key_id] = now
            return True

    def list_keys(self, owner: Identity, limit: int | None = None, offset: int = 0) -> list[ApiKey]:
        """The keys ``owner`` may see (all for an admin, else those it created), a page of ``limit`` from ``offset``."""
        with self.db.session() as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if not owner.has("admin"):
                query = query.where(*_owned_by(owner))
            return list(session.scalars(query.offset(offset).limit(limit)).all())

    def revoke_key(self, key_id: int, by: Identity, remote: str | None = None) -> ApiKey:
        """Revoke a key ``by`` may manage; NOT_FOUND otherwise (other keys' ids are not revealed)."""
        from ...kernel.errors import NotFound

        with self.db.session() as session:
            query = select(ApiKey).where(ApiKey.id == key_id)
            if not by.has("admin"):
                query = query.where(*_owned_by(by))
            key = session.scalar(query)
            if key is None:
                raise NotFound(f"no API key {key_id}", details={"key_id": key_id})
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            session.add(
                AuditEvent(
                    actor=f"{by.kind}:{by.id}", action="key.revoke", target=f"api_key:{key_id}", remote_addr=remote
                )
            )
            return key

    def identity_of_key(self, key: ApiKey) -> Identity:
        """The identity a key authenticates as."""
        return Identity(
            id=str(key.id), kind="api_key", roles=roles_of(key.role, key.permissions), name=key.name, tier=key.tier
        )

    # tokens -----------------------------------------------------------------------------------
    @property
    def _secret(self) -> str:
        if self._secret_value is None:
            self._secret_value = self._secret_source()
        return self._secret_value

    def issue_token(self, user: User) -> str:
        """A login token for ``user``."""
        import jwt

        now = int(time.time())
        claims = {"sub": str(user.id), "iat": now, "exp": now + self.token_seconds, "role": user.role}
        return str(jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM))

    def identity_of_token(self, token: str) -> Identity:
        """The user a valid token was issued to; AUTHENTICATION_FAILED for anything else."""
        import jwt

        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "iat", "sub"]}
            )
            user_id = int(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationFailed("invalid or expired login token") from None
        with self.db.session() as session:
            user = session.get(User, user_id)
            if user is None or user.disabled:
                raise AuthenticationFailed("invalid or expired login token")
            return Identity(id=str(user.id), kind="user", roles=roles_of(user.role), name=user.username)

    def audit(self, actor: str | None, action: str, target: str | None = None, **details: Any) -> None:
        """Record an audit event."""
        remote = details.pop("remote_addr", None)
        with self.db.session() as session:
            session.add(
                AuditEvent(actor=actor, action=action, target=target, details=details or None, remote_addr=remote)
            )


def _owned_by(identity: Identity) -> list[Any]:
    if identity.kind == "user":
        return [ApiKey.user_id == int(identity.id)]
    if identity.kind == "api_key":
        return [ApiKey.parent_key_id == int(identity.id)]
    return [ApiKey.id == -1]


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", details={"field": "role"})


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
