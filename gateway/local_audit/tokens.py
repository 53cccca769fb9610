"""Service tokens of the local audit log: endpoint access, configuration access, field
restrictions and expiry, as the API-credentials product document describes them.

Tokens live in the database (table ``service_tokens``), so ``audit-gateway local-audit token
create|list|revoke --db FILE`` manages them while a server runs on the same file: the server
looks a token up on each call (one primary-key read), hence a revocation or an expiry takes
effect on the next call.  Only ``sha256(token)`` is stored; the token text is printed once, at
creation.
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Final

import orjson

from gateway.local_audit.hashing import format_timestamp

__all__ = [
    "ENDPOINTS",
    "RESTRICTABLE_FIELD",
    "Grant",
    "create_token",
    "ensure_schema",
    "grant_config",
    "introspect_token",
    "list_tokens",
    "lookup_token",
    "new_id",
    "revoke_digest",
    "revoke_token",
    "token_digest",
]

# The endpoint scopes a token may be limited to; each names the routes it opens.
ENDPOINTS: Final[dict[str, str]] = {
    "log": "/v1/log, /v2/log, /v2/log_async",
    "log_stream": "/v1/log_stream",
    "search": "/v1/search, /v1/results, /v1/download_results of search results",
    "root": "/v1/root",
    "schema": "/v1/schema",
    "export": "/v1/export, /v1/download_results of exports",
    "config": "/v1beta/config, /create, /update, /delete, /list, /partition_overrides",
}
RESTRICTABLE_FIELD: Final = r"^[a-z][0-9a-z_]*$"


def new_id(prefix: str) -> str:
    """Pangea-style id: prefix + 32 characters of [a-z2-7]."""
    return prefix + base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()


def token_digest(token: str) -> bytes:
    """What is stored of a token: its SHA-256."""
    return sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Grant:
    """What one bearer token may do.

    ``endpoints`` None: every endpoint.  ``restrict``: field -> the only values the token may
    log or search for.  ``token_id`` None for the settings' tokens (the default token), whose
    digest is ``owner``.
    """

    configs: frozenset[str]
    endpoints: frozenset[str] | None = None
    restrict: tuple[tuple[str, frozenset[str]], ...] = ()
    token_id: str | None = None
    client_id: str | None = None
    owner: bytes | None = None  # digest of a settings token; configurations it creates join it

    def allows(self, endpoint: str) -> bool:
        """Whether the token may call routes of ``endpoint`` (a key of :data:`ENDPOINTS`)."""
        return self.endpoints is None or endpoint in self.endpoints


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the token table if missing."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS service_tokens (id TEXT PRIMARY KEY, digest BLOB NOT NULL UNIQUE,"
        " name TEXT NOT NULL, configs TEXT NOT NULL, endpoints TEXT, restrict TEXT NOT NULL,"
        " created_at TEXT NOT NULL, expires_at REAL, revoked_at TEXT, client_id TEXT, scope TEXT,"
        " issued_at REAL NOT NULL)"
    )


def create_token(
    conn: sqlite3.Connection,
    *,
    name: str,
    configs: Iterable[str],
    endpoints: Iterable[str] | None,
    restrict: dict[str, list[str]],
    expires_at: float | None,
    prefix: str = "pts_",
    client_id: str | None = None,
    scope: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Store a new token; returns ``{id, token, expires_at}`` (the only time the token is shown).

    ``client_id``/``scope``: an OAuth2 access token issued to that client."""
    ensure_schema(conn)
    token_id = new_id("pmt_")
    token = new_id(prefix)
    conn.execute(
        "INSERT INTO service_tokens (id, digest, name, configs, endpoints, restrict, created_at, expires_at,"
        " client_id, scope, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            token_id,
            token_digest(token),
            name,
            orjson.dumps(sorted(set(configs))).decode(),
            None if endpoints is None else orjson.dumps(sorted(set(endpoints))).decode(),
            orjson.dumps({k: sorted(set(v)) for k, v in sorted(restrict.items())}).decode(),
            format_timestamp(datetime.now(UTC)),
            expires_at,
            client_id,
            scope,
            time.time() if now is None else now,
        ),
    )
    return {
        "id": token_id,
        "token": token,
        "expires_at": None if expires_at is None else format_timestamp(datetime.fromtimestamp(expires_at, UTC)),
    }


def lookup_token(conn: sqlite3.Connection, digest: bytes, now: float | None = None) -> Grant | None:
    """The grant of an active token (not revoked, not expired), or None."""
    row = conn.execute(
        "SELECT id, configs, endpoints, restrict, expires_at, revoked_at, client_id FROM service_tokens"
        " WHERE digest = ?",
        (digest,),
    ).fetchone()
    if row is None:
        return None
    token_id, configs, endpoints, restrict, expires_at, revoked_at, client_id = row
    if revoked_at is not None:
        return None
    if expires_at is not None and expires_at <= (time.time() if now is None else now):
        return None
    return Grant(
        configs=frozenset(orjson.loads(configs)),
        endpoints=None if endpoints is None else frozenset(orjson.loads(endpoints)),
        restrict=tuple((k, frozenset(v)) for k, v in orjson.loads(restrict).items()),
        token_id=token_id,
        client_id=client_id,
    )


def introspect_token(conn: sqlite3.Connection, digest: bytes, now: float) -> dict[str, Any] | None:
    """``{id, name, client_id, scope, issued_at, expires_at}`` of an active token, or None."""
    row = conn.execute(
        "SELECT id, name, client_id, scope, issued_at, expires_at FROM service_tokens"
        " WHERE digest = ? AND revoked_at IS NULL",
        (digest,),
    ).fetchone()
    if row is None or (row[5] is not None and row[5] <= now):
        return None
    return dict(zip(("id", "name", "client_id", "scope", "issued_at", "expires_at"), row, strict=True))


def revoke_digest(conn: sqlite3.Connection, digest: bytes, client_id: str) -> bool:
    """Revoke the active token with this digest if ``client_id`` was issued it."""
    cur = conn.execute(
        "UPDATE service_tokens SET revoked_at = ? WHERE digest = ? AND client_id = ? AND revoked_at IS NULL",
        (format_timestamp(datetime.now(UTC)), digest, client_id),
    )
    return cur.rowcount > 0


def grant_config(conn: sqlite3.Connection, token_id: str, config_id: str) -> None:
    """Give a token access to one more configuration (the one it just created)."""
    (configs,) = conn.execute("SELECT configs FROM service_tokens WHERE id = ?", (token_id,)).fetchone()
    merged = sorted({*orjson.loads(configs), config_id})
    conn.execute("UPDATE service_tokens SET configs = ? WHERE id = ?", (orjson.dumps(merged).decode(), token_id))


def list_tokens(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every token's description (never its text or digest), oldest first."""
    ensure_schema(conn)
    out = []
    for row in conn.execute(
        "SELECT id, name, configs, endpoints, restrict, created_at, expires_at, revoked_at, client_id"
        " FROM service_tokens WHERE client_id IS NULL ORDER BY created_at, id"
    ):
        token_id, name, configs, endpoints, restrict, created_at, expires_at, revoked_at, _ = row
        out.append(
            {
                "id": token_id,
                "name": name,
                "configs": orjson.loads(configs),
                "endpoints": None if endpoints is None else orjson.loads(endpoints),
                "restrict": orjson.loads(restrict),
                "created_at": created_at,
                "expires_at": None if expires_at is None else format_timestamp(datetime.fromtimestamp(expires_at, UTC)),
                "revoked_at": revoked_at,
            }
        )
    return out


def revoke_token(conn: sqlite3.Connection, token_id: str) -> bool:
    """Revoke a token by id; False when no active token has that id."""
    ensure_schema(conn)
    cur = conn.execute(
        "UPDATE service_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (format_timestamp(datetime.now(UTC)), token_id),
    )
    return cur.rowcount > 0
