"""The ``api_keys`` plugin: API keys and login tokens on the database, and their CLI commands.

It recognises ``Authorization: Bearer <key or login token>`` and ``X-API-Key: <key>``;
credentials it cannot verify (unknown, expired or revoked key, bad token) fail the call
with AUTHENTICATION_FAILED rather than falling through to another plugin. It puts an
:class:`~.accounts.Accounts` into ``kernel.services[ACCOUNTS]`` for the auth endpoints.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import click

from ...db import DATABASE
from ...kernel.errors import AuthenticationFailed
from ...kernel.hookspecs import hookimpl
from ...kernel.kernel import Kernel
from ...kernel.types import Credentials, Identity, PluginInfo
from . import ACCOUNTS
from .accounts import ROLES, TIERS, Accounts, jwt_secret, parse_duration


def accounts_for(kernel_or_settings: Any) -> Accounts:
    """Accounts on the database of a kernel (or of settings, for the CLI)."""
    from ...db import Database

    settings = kernel_or_settings.settings if isinstance(kernel_or_settings, Kernel) else kernel_or_settings
    db = Database(settings.database, auto_upgrade=settings.db_auto_upgrade)
    if isinstance(kernel_or_settings, Kernel):  # one database per kernel, whichever plugin starts first
        db = kernel_or_settings.services.setdefault(DATABASE, db)
    return Accounts(db, lambda: jwt_secret(settings.jwt_secret, settings.data_dir), settings.jwt_expires)


class ApiKeyAuth:
    """Authenticates API keys and login tokens."""

    PLUGIN_INFO = PluginInfo(
        name="API keys",
        category="auth",
        description="API keys (hashed, expiring, revocable) and dashboard login tokens (JWT), with roles.",
        essential=True,
    )

    def __init__(self) -> None:
        self.accounts: Accounts | None = None

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        """Check the signing secret and share the accounts (the database is opened on first use)."""
        self.accounts = accounts_for(kernel)
        self.accounts.check_secret()  # an empty or short secret fails the start, not the first login
        kernel.services[ACCOUNTS] = self.accounts

    @hookimpl
    def register_routes(self, register: Callable[[Any], None]) -> None:
        """Logins, logouts and API keys: ``/api/v1/auth/…`` and ``/v1/auth/…``."""
        from .routes import bp, openai_bp

        register(bp)
        register(openai_bp)

    @hookimpl
    def shutdown(self, kernel: Kernel) -> None:
        """Stop sharing the accounts."""
        kernel.services.discard(ACCOUNTS, self.accounts)

    @hookimpl
    def authenticate(self, credentials: Credentials, kernel: Kernel) -> Identity | None:
        """The key's or the token's identity; ``None`` when nothing was presented.

        With ``LLAMA_GPU_AUTH=off`` credentials that do not verify are ignored (clients such
        as the official OpenAI one always send some key), and the caller is anonymous.
        """
        accounts = self.accounts
        presented = credentials.api_key or credentials.bearer_token
        if accounts is None or not presented:
            return None
        try:
            if credentials.api_key is None and presented.count(".") == 2:
                return accounts.identity_of_token(presented)
            return accounts.authenticate_key(presented)
        except AuthenticationFailed:
            if kernel.settings.auth == "off":
                return None
            raise

    @hookimpl
    def register_commands(self, register: Callable[[Any], None]) -> None:
        """``llama-gpu users …`` and ``llama-gpu keys …``."""
        register(users)
        register(keys)


def _accounts() -> Accounts:
    from ...kernel.config import Settings

    return accounts_for(Settings.from_env())


@click.group()
def users() -> None:
    """Dashboard users."""


@users.command("create")
@click.option("--username", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice(ROLES), default="admin", show_default=True)
def create_user(username: str, password: str, role: str) -> None:
    """Create a user."""
    user = _accounts().create_user(username, password, role, actor="cli")
    click.echo(f"created user {user.username} (id {user.id}, role {user.role})")


@users.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable a user: their login tokens and every key they own are refused at once."""
    _accounts().set_user_disabled(username, True, actor="cli")
    click.echo(f"disabled user {username}")


@users.command("enable")
@click.argument("username")
def enable_user(username: str) -> None:
    """Enable a disabled user again."""
    _accounts().set_user_disabled(username, False, actor="cli")
    click.echo(f"enabled user {username}")


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(ROLES), default="write", show_default=True)
@click.option("--expires-in", default=None, help="Seconds, or a duration like 12h or 30d.")
@click.option("--tier", type=click.Choice(TIERS), default="standard", show_default=True)
def create_key(name: str, role: str, expires_in: str | None, tier: str) -> None:
    """Create a key and print it (it is shown only this once)."""
    key, secret = _accounts().create_key(name, role, expires_in=parse_duration(expires_in), tier=tier, actor="cli")
    click.echo(f"key id {key.id} ({key.role}, {key.tier}); expires {key.expires_at or 'never'}", err=True)
    click.echo(secret)


@keys.command("list")
def list_keys() -> None:
    """List keys (prefixes only)."""
    admin = Identity(id="cli", kind="cli", roles=frozenset(ROLES))
    for key in _accounts().list_keys(admin):
        state = "revoked" if key.revoked_at else ("expires " + str(key.expires_at) if key.expires_at else "active")
        click.echo(f"{key.id}\t{key.prefix}…\t{key.name}\t{key.role}\t{key.tier}\t{state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
def revoke_key(key_id: int) -> None:
    """Revoke a key."""
    admin = Identity(id="cli", kind="cli", roles=frozenset(ROLES))
    _accounts().revoke_key(key_id, admin)
    click.echo(f"revoked key {key_id}")


def bootstrap_admin(settings: Any) -> tuple[str, str, str] | None:
    """On the first start, create the ``admin`` user and an admin key; (user, password, key) once, else ``None``."""
    accounts = accounts_for(settings)
    if accounts.count_users():
        return None
    password = secrets.token_urlsafe(12)
    user = accounts.create_user("admin", password, "admin", actor="bootstrap")
    _, key = accounts.create_key("bootstrap admin key", "admin", actor="bootstrap", user_id=user.id)
    return "admin", password, key
