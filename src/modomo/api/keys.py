"""API keys: create, list, revoke, look up. Stored as SHA-256 digests in ``api_keys``.

A key is ``mdm_`` followed by 43 URL-safe characters (256 random bits from ``secrets``); it
is shown once, at creation. Only its digest and its first characters (``prefix``, to tell
keys apart in listings) are stored. Our own code because the rule is tiny and no library
keeps API keys in *our* database; the randomness and digest come from the standard library.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update

from modomo.db.models import ApiKey, utcnow
from modomo.db.session import session_scope

__all__ = [
    "KEY_PREFIX",
    "ROLES",
    "KeyAmbiguous",
    "KeyNotFound",
    "Principal",
    "create_key",
    "hash_key",
    "list_keys",
    "lookup_key",
    "revoke_key",
]

KEY_PREFIX = "mdm_"
ROLES = ("user", "admin")
"""Roles, weakest first: ``admin`` may do everything ``user`` may."""

_LAST_USED_EVERY_S = 60.0
_last_used_written: dict[uuid.UUID, float] = {}


class KeyNotFound(LookupError):
    """No key matches the id or prefix given."""


class KeyAmbiguous(KeyNotFound):
    """A prefix matches several active keys: nothing was revoked (give more characters or
    the key's id)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``subject`` (``key:<key id>``, ``jwt:<sub>`` or ``local``), ``role``
    and how they proved it (``kind``: ``api_key``, ``jwt`` or ``local`` when auth is
    disabled)."""

    subject: str
    role: str
    kind: str

    @property
    def owner(self) -> str | None:
        """What a job records as its creator (``jobs.created_by``): for a JWT its bare ``sub``
        (what Supabase's row-level security compares with ``auth.uid()::text``), for an API
        key ``key:<key id>``, None when auth is disabled.

        A JWT ``sub`` that holds a colon (never a Supabase user's uuid) is recorded as
        ``jwt:<sub>``, so no token can claim the jobs of a key (``key:…``) or of a schedule
        (``schedule:…``).
        """
        if self.kind == "jwt":
            sub = self.subject.removeprefix("jwt:")
            return self.subject if ":" in sub else sub
        return self.subject if self.kind == "api_key" else None

    @property
    def owners(self) -> tuple[str, ...]:
        """Every ``created_by`` value that names this principal's jobs: :attr:`owner`, and the
        form earlier versions recorded (``jwt:<sub>``, ``key:key:<id>``). Empty when auth is
        disabled (that principal is an admin)."""
        owner = self.owner
        if owner is None:
            return ()
        legacy = self.subject if self.kind == "jwt" else f"key:{self.subject}"
        return (owner,) if legacy == owner else (owner, legacy)

    @property
    def is_admin(self) -> bool:
        """True for the ``admin`` role."""
        return self.role == "admin"


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256 hex digest (64 characters)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str, role: str = "user") -> tuple[dict[str, Any], str]:
    """Create a key; returns its record and the key itself (shown once, never stored).

    Raises:
        ValueError: ``role`` is not one of :data:`ROLES`, or ``name`` is empty.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name.strip():
        raise ValueError("a key needs a name (who or what uses it)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with session_scope() as session:
        row = ApiKey(name=name.strip(), prefix=key[:12], key_hash=hash_key(key), role=role)
        session.add(row)
        session.flush()
        return _record(row), key


def list_keys(include_revoked: bool = False) -> list[dict[str, Any]]:
    """Every key's record (never the key), oldest first."""
    with session_scope() as session:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        return [_record(row) for row in session.scalars(query)]


def revoke_key(id_or_prefix: str) -> dict[str, Any]:
    """Revoke the key with this id (uuid) or prefix (``mdm_…``, at least 8 characters; the
    first 12 are compared, as stored).

    The prefix is matched literally: ``%`` and ``_`` are characters, not SQL wildcards.

    Raises:
        KeyNotFound: no active key matches.
        KeyAmbiguous: a prefix matches several active keys (none is revoked).
    """
    with session_scope() as session:
        match = [ApiKey.prefix == id_or_prefix]
        if len(id_or_prefix) >= 8:
            match.append(ApiKey.prefix.startswith(id_or_prefix[:12], autoescape=True))
        with contextlib.suppress(ValueError):
            match.append(ApiKey.id == uuid.UUID(id_or_prefix))
        rows = list(session.scalars(select(ApiKey).where(or_(*match), ApiKey.revoked_at.is_(None))))
        if not rows:
            raise KeyNotFound(f"no active key matches {id_or_prefix!r}; see `modomo keys list`")
        if len(rows) > 1:
            raise KeyAmbiguous(
                f"{len(rows)} active keys match {id_or_prefix!r}; give more of the prefix or "
                "the key's id"
            )
        rows[0].revoked_at = utcnow()
        return _record(rows[0])


def lookup_key(key: str) -> Principal | None:
    """The principal of an active key, or None for an unknown or revoked key.

    ``last_used_at`` is written at most once a minute per key per process, so checking a
    key costs one indexed read.
    """
    if not key.startswith(KEY_PREFIX):
        return None
    with session_scope() as session:
        row = session.execute(
            select(ApiKey.id, ApiKey.role).where(
                ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        now = time.monotonic()
        if now - _last_used_written.get(row.id, -_LAST_USED_EVERY_S) >= _LAST_USED_EVERY_S:
            _last_used_written[row.id] = now
            session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow()))
        return Principal(subject=f"key:{row.id}", role=row.role, kind="api_key")


def _record(row: ApiKey) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(row.id),
        "name": row.name,
        "prefix": row.prefix,
        "role": row.role,
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
        "revoked_at": iso(row.revoked_at),
    }
