"""Users, API keys and login tokens on the database: the logic behind the ``api_keys`` plugin.

- Passwords are hashed by Werkzeug with scrypt at OWASP's parameters (N=2^15, r=8, p=3:
  32 MiB) and a random salt; checks compare in constant time. Hashes of the earlier
  format (``scrypt$n$r$p$salt$hash``, N=2^14) still verify and are rehashed at the next login.
- API keys are ``lgk_`` and 43 random URL-safe characters. Only the SHA-256 of the key and
  a 12-character display prefix are stored; a key is found by its prefix and compared by
  hash in constant time. Keys may expire and be revoked; ``last_used_at`` is written at
  most once a minute per key, so authentication does not write on every call.
- Key lineage: a key made by a key records its parent and never outlives it (its expiry is
  capped at the parent's); revoking a key revokes every key below it, and a key is refused
  while any key above it is revoked or expired or its owning user is disabled. A key's owner
  (``owner_user_id``: the user at the root of its lineage) sees and revokes all of them, and
  rate limits count per owner (``Identity.owner``), so minting keys does not multiply limits.
- Login tokens are JWTs signed with HS256 only (the algorithm is pinned when verifying, so
  ``alg: none`` and other algorithms are refused) and must carry ``exp``, ``iat``, ``sub``,
  ``jti``, ``iss`` and ``aud`` (both ``llama-gpu``). A logout puts the ``jti`` on a deny-list
  (``revoked_tokens``) until the token would have expired. The signing secret must be at
  least 32 bytes; generated, it is written atomically, mode 0600, in the 0700 data folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from ...db import ApiKey, AuditEvent, Database, RevokedToken, User
from ...db.models import utcnow
from ...kernel.config import ENV_PREFIX
from ...kernel.errors import AuthenticationFailed, ConfigurationError, Conflict, InvalidInput, NotFound
from ...kernel.private import private_dir, write_private
from ...kernel.types import Identity

ROLES = ("read", "write", "admin")
TIERS = ("standard", "premium")
KEY_PREFIX = "lgk_"
DISPLAY_LENGTH = 12
JWT_ALGORITHM = "HS256"
#: ``iss`` and ``aud`` of login tokens: a token signed for something else with the same secret is refused.
JWT_ISSUER = "llama-gpu"
JWT_AUDIENCE = "llama-gpu"
#: Shortest signing secret accepted, in bytes.
MIN_SECRET_BYTES = 32
#: Werkzeug's method string for new password hashes: scrypt, N=2^15, r=8, p=3 (OWASP, 32 MiB).
PASSWORD_METHOD = "scrypt:32768:8:3"
#: How deep a key lineage may go (a key made by a key made by a key…).
MAX_LINEAGE = 16
#: Failed logins allowed per user name and per client address in five minutes.
LOGIN_FAILURES = parse("5/5minute")
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
    """Werkzeug's ``scrypt:32768:8:3$salt$hash`` of ``password``."""
    return generate_password_hash(password, method=PASSWORD_METHOD)


def password_needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than :data:`PASSWORD_METHOD`."""
    return not stored.startswith(PASSWORD_METHOD + "$")


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (either format; constant-time comparison)."""
    try:
        if stored.startswith("scrypt$"):  # the format before Werkzeug's
            _, n, r, p, salt, digest = stored.split("$")
            actual = hashlib.scrypt(
                password.encode(),
                salt=base64.b64decode(salt),
                n=int(n),
                r=int(r),
                p=int(p),
                maxmem=64 * 2**20,
                dklen=32,
            )
            return hmac.compare_digest(actual, base64.b64decode(digest))
        return check_password_hash(stored, password)
    except (ValueError, TypeError):
        return False


def new_api_key() -> tuple[str, str, str]:
    """A new key: (the key, its display prefix, its SHA-256)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:DISPLAY_LENGTH], key_hash(key)


def key_hash(key: str) -> str:
    """SHA-256 of a key, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_secret(value: str, source: str) -> str:
    """``value`` if it is a usable signing secret (at least 32 bytes), else ConfigurationError naming ``source``."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{source} holds a JWT signing secret of {len(value.encode())} bytes; at least {MIN_SECRET_BYTES} "
            "random bytes are needed (e.g. the output of `openssl rand -hex 32`)",
            details={"source": source, "min_bytes": MIN_SECRET_BYTES},
        )
    return value


def jwt_secret(configured: str, data_dir: str) -> str:
    """The signing secret: configured, else read from (or created once in) ``<data_dir>/jwt-secret``.

    The file is written atomically (exclusive create, mode 0600, fsync, link into place) in
    the 0700 data folder; an empty or short secret, configured or in the file, is refused.
    """
    if configured:
        return check_secret(configured, f"{ENV_PREFIX}JWT_SECRET")
    path = private_dir(data_dir) / "jwt-secret"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(48))  # of racing processes one wins; all read its secret
    return check_secret(
        path.read_text().strip(), f"{path} (delete it to have a new one generated, or set {ENV_PREFIX}JWT_SECRET)"
    )


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
        """The user if ``password`` is right (time spent hashing either way); an old-format hash is renewed."""
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == username))
            stored = user.password_hash if user is not None else _dummy_hash()
            ok = verify_password(password, stored) and user is not None and not user.disabled
            if ok and user is not None:
                user.last_login_at = utcnow()
                if password_needs_rehash(stored):
                    user.password_hash = hash_password(password)
            return user if ok else None

    def set_user_disabled(self, username: str, disabled: bool, actor: str | None = None) -> User:
        """Disable (or enable) a user: a disabled user's tokens and keys are refused from the next call on."""
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user {username!r}", details={"username": username})
            user.disabled = disabled
            action = "user.disable" if disabled else "user.enable"
            session.add(AuditEvent(actor=actor, action=action, target=f"user:{user.id}"))
            return user

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
        """A new key and its secret (shown once, never stored).

        A child key (``parent_key_id``) expires no later than its parent and belongs to the
        parent's owner; it cannot be made below a revoked or expired key.
        """
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
            owner_user_id = user_id
            if parent_key_id is not None:
                parent = session.get(ApiKey, parent_key_id)
                if parent is None:
                    raise NotFound(f"no API key {parent_key_id}", details={"key_id": parent_key_id})
                lineage = _lineage(session, parent)
                problem = _lineage_problem(lineage, utcnow())
                if problem:
                    raise AuthenticationFailed(problem, details={"key_id": parent_key_id})
                if len(lineage) >= MAX_LINEAGE:
                    raise InvalidInput(
                        f"keys may be made from keys at most {MAX_LINEAGE} deep", details={"max_depth": MAX_LINEAGE}
                    )
                ceilings = [_aware(k.expires_at) for k in lineage if k.expires_at is not None]
                if ceilings and (expires is None or expires > min(ceilings)):
                    expires = min(ceilings)  # a child never outlives its parent
                owner_user_id = owner_user_id or _owner_of(lineage)
            key = ApiKey(
                name=name,
                prefix=prefix,
                key_hash=digest,
                role=role,
                permissions=sorted(permissions) if permissions is not None else None,
                tier=tier,
                user_id=user_id,
                parent_key_id=parent_key_id,
                owner_user_id=owner_user_id,
                expires_at=expires,
            )
            session.add(key)
            session.flush()
            details = {"role": role, "name": name, "prefix": prefix, "parent_key_id": parent_key_id}
            session.add(AuditEvent(actor=actor, action="key.create", target=f"api_key:{key.id}", details=details))
        return key, full

    def find_key(self, presented: str) -> ApiKey:
        """The live key for ``presented``; AUTHENTICATION_FAILED when unknown, expired or revoked."""
        return self._find_key(presented)[0]

    def authenticate_key(self, presented: str) -> Identity:
        """The identity of the live key ``presented`` (AUTHENTICATION_FAILED otherwise)."""
        return self.identity_of_key(*self._find_key(presented))

    def _find_key(self, presented: str) -> tuple[ApiKey, str]:
        """The live key and its rate-limit owner (``user:<id>``, else ``api_key:<root id>``)."""
        if not presented.startswith(KEY_PREFIX) or len(presented) > 128:
            raise AuthenticationFailed("invalid API key")
        digest = key_hash(presented)
        with self.db.session() as session:
            candidates = session.scalars(select(ApiKey).where(ApiKey.prefix == presented[:DISPLAY_LENGTH])).all()
            key = next((k for k in candidates if hmac.compare_digest(k.key_hash, digest)), None)
            if key is None:
                raise AuthenticationFailed("invalid API key")
            now = utcnow()
            lineage = _lineage(session, key)
            problem = _lineage_problem(lineage, now)
            if problem:
                raise AuthenticationFailed(problem, details={"key_id": key.id})
            owner_id = _owner_of(lineage)
            if owner_id is not None:
                user = session.get(User, owner_id)
                if user is not None and user.disabled:
                    raise AuthenticationFailed(
                        "the user this API key belongs to is disabled", details={"key_id": key.id}
                    )
            if self._due(key.id):
                key.last_used_at = now
            session.expunge(key)
            return key, f"user:{owner_id}" if owner_id is not None else f"api_key:{lineage[-1].id}"

    def _due(self, key_id: int) -> bool:
        now = time.monotonic()
        with self._touch_lock:
            if now - self._touched.get(key_id, -1e9) < 60:
                return False
            self._touched[key_id] = now
            return True

    def list_keys(
        self, owner: Identity, limit: int | None = None, offset: int = 0, *, admin: bool | None = None
    ) -> list[ApiKey]:
        """A page of the keys ``owner`` may see: all (admin), a user's and their descendants, a key's descendants.

        ``admin``: whether ``owner`` manages every key (what ``check_permission`` answered; default: its roles).
        """
        admin = owner.has("admin") if admin is None else admin
        with self.db.session() as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if owner.kind == "api_key" and not admin:
                below = sorted(_descendants(session, [int(owner.id)]), key=lambda k: k.id)
                return below[offset : None if limit is None else offset + limit]
            if not admin:
                query = query.where(ApiKey.owner_user_id == int(owner.id) if owner.kind == "user" else ApiKey.id == -1)
            return list(session.scalars(query.offset(offset).limit(limit)).all())

    def revoke_key(self, key_id: int, by: Identity, remote: str | None = None, *, admin: bool | None = None) -> ApiKey:
        """Revoke a key ``by`` may manage, and every key made from it; NOT_FOUND otherwise (ids are not revealed).

        ``admin``: whether ``by`` manages every key (what ``check_permission`` answered; default: its roles).
        """
        admin = by.has("admin") if admin is None else admin
        with self.db.session() as session:
            key = session.get(ApiKey, key_id)
            if key is None or not (admin or _manages(session, by, key)):
                raise NotFound(f"no API key {key_id}", details={"key_id": key_id})
            now = utcnow()
            below = _descendants(session, [key.id])
            for target in (key, *below):
                if target.revoked_at is None:
                    target.revoked_at = now
            session.add(
                AuditEvent(
                    actor=f"{by.kind}:{by.id}",
                    action="key.revoke",
                    target=f"api_key:{key_id}",
                    details={"also_revoked": sorted(k.id for k in below)} if below else None,
                    remote_addr=remote,
                )
            )
            return key

    def identity_of_key(self, key: ApiKey, owner: str | None = None) -> Identity:
        """The identity a key authenticates as (``owner``: whose rate limits it counts against)."""
        if owner is None:
            owner = f"user:{key.owner_user_id}" if key.owner_user_id is not None else f"api_key:{key.id}"
        return Identity(
            id=str(key.id),
            kind="api_key",
            roles=roles_of(key.role, key.permissions),
            name=key.name,
            tier=key.tier,
            owner=owner,
        )

    # tokens -----------------------------------------------------------------------------------
    @property
    def _secret(self) -> str:
        if self._secret_value is None:
            self._secret_value = self._secret_source()
        return self._secret_value

    def check_secret(self) -> None:
        """Load the signing secret now: ConfigurationError at start-up rather than at the first login."""
        self._secret  # noqa: B018

    def issue_token(self, user: User) -> str:
        """A login token for ``user``."""
        import jwt

        now = int(time.time())
        claims = {
            "sub": str(user.id),
            "iat": now,
            "exp": now + self.token_seconds,
            "role": user.role,
            "jti": secrets.token_urlsafe(16),
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
        }
        return str(jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM))

    def _claims(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
            )
            claims["sub"] = int(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationFailed("invalid or expired login token") from None
        if not isinstance(claims["jti"], str) or not 1 <= len(claims["jti"]) <= 64:
            raise AuthenticationFailed("invalid or expired login token")
        return dict(claims)

    def identity_of_token(self, token: str) -> Identity:
        """The user a valid, unrevoked token was issued to; AUTHENTICATION_FAILED for anything else."""
        claims = self._claims(token)
        with self.db.session() as session:
            user = session.get(User, claims["sub"])
            if user is None or user.disabled:
                raise AuthenticationFailed("invalid or expired login token")
            if session.get(RevokedToken, claims["jti"]) is not None:
                raise AuthenticationFailed("this login token was revoked (logged out)")
            return Identity(
                id=str(user.id), kind="user", roles=roles_of(user.role), name=user.username, owner=f"user:{user.id}"
            )

    def revoke_token(self, token: str, remote: str | None = None) -> None:
        """Log out: refuse ``token`` from now on (its ``jti`` is kept until it would have expired)."""
        claims = self._claims(token)
        now = utcnow()
        with self.db.session() as session:
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))  # the deny-list stays bounded
            if session.get(RevokedToken, claims["jti"]) is None:
                expires = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
                session.add(RevokedToken(jti=claims["jti"], user_id=claims["sub"], expires_at=expires, revoked_at=now))
            actor = f"user:{claims['sub']}"
            session.add(AuditEvent(actor=actor, action="logout", target=actor, remote_addr=remote))

    def audit(self, actor: str | None, action: str, target: str | None = None, **details: Any) -> None:
        """Record an audit event."""
        remote = details.pop("remote_addr", None)
        with self.db.session() as session:
            session.add(
                AuditEvent(actor=actor, action=action, target=target, details=details or None, remote_addr=remote)
            )


def _lineage(session: Session, key: ApiKey) -> list[ApiKey]:
    """``key`` and the keys above it, up to the root (at most ``MAX_LINEAGE + 1``)."""
    chain, seen = [key], {key.id}
    while chain[-1].parent_key_id is not None and len(chain) <= MAX_LINEAGE:
        parent = session.get(ApiKey, chain[-1].parent_key_id)
        if parent is None or parent.id in seen:
            break
        chain.append(parent)
        seen.add(parent.id)
    return chain


def _lineage_problem(lineage: list[ApiKey], now: dt.datetime) -> str | None:
    """Why a key with this lineage is refused, or ``None``."""
    for depth, key in enumerate(lineage):
        whose = "this API key" if depth == 0 else "a key this API key was made from"
        if key.revoked_at is not None:
            return f"{whose} was revoked"
        if key.expires_at is not None and _aware(key.expires_at) <= now:
            return f"{whose} has expired"
    return None


def _owner_of(lineage: list[ApiKey]) -> int | None:
    """The user a lineage belongs to: the first owner or creating user from the key up."""
    for key in lineage:
        owner = key.owner_user_id if key.owner_user_id is not None else key.user_id
        if owner is not None:
            return owner
    return None


def _descendants(session: Session, roots: list[int]) -> list[ApiKey]:
    """Every key made (transitively) from the keys ``roots``, not including them."""
    found: dict[int, ApiKey] = {}
    frontier = list(roots)
    while frontier:
        children = session.scalars(select(ApiKey).where(ApiKey.parent_key_id.in_(frontier))).all()
        frontier = [k.id for k in children if k.id not in found and k.id not in roots]
        found.update((k.id, k) for k in children if k.id not in roots)
    return list(found.values())


def _manages(session: Session, identity: Identity, key: ApiKey) -> bool:
    """Whether ``identity`` (not an admin) may see and revoke ``key``."""
    if identity.kind == "user":
        return _owner_of(_lineage(session, key)) == int(identity.id)
    if identity.kind == "api_key":
        return any(k.id == int(identity.id) for k in _lineage(session, key)[1:])
    return False


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", details={"field": "role"})


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC


@functools.cache
def _dummy_hash() -> str:
    """A hash to spend time on for unknown users (made on first use: hashing takes a third of a second)."""
    return hash_password(secrets.token_urlsafe(16))
