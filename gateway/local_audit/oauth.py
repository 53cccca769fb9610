"""OAuth2 service clients of the local audit log (Client Credentials grant), as the
API-credentials product document describes them.

A client (``psa_...`` id, ``pck_...`` secret) is created with ``audit-gateway local-audit client
create --db FILE --name worker --configs pci_... --scopes ...``; only a SHA-256 of its secret is
kept, and ``client rotate`` replaces the secret (the old one stops working at once).  Access
tokens it obtains at ``/v1beta/oauth/token`` are service tokens (``tokens.py``) bound to the
client: its configurations, the endpoints of the granted scopes, and an expiry.

Scopes (space-separated, as OAuth2 has them) and the endpoint scopes of ``tokens.ENDPOINTS``
they open:

=================================  ==========================================
``pangea:service:audit:log``       log, log_stream
``pangea:service:audit:read``      search, root, schema, export
``pangea:service:audit:manage``    config
=================================  ==========================================
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from gateway.local_audit.hashing import format_timestamp
from gateway.local_audit.tokens import new_id, token_digest

__all__ = [
    "SCOPES",
    "Client",
    "create_client",
    "ensure_schema",
    "find_client",
    "list_clients",
    "rotate_secret",
    "scope_endpoints",
]

SCOPES: Final[dict[str, frozenset[str]]] = {
    "pangea:service:audit:log": frozenset(("log", "log_stream")),
    "pangea:service:audit:read": frozenset(("search", "root", "schema", "export")),
    "pangea:service:audit:manage": frozenset(("config",)),
}
DEFAULT_TOKEN_TTL_SECS: Final = 3600


@dataclass(frozen=True, slots=True)
class Client:
    """A client as the token endpoint needs it."""

    client_id: str
    name: str
    configs: tuple[str, ...]
    scopes: tuple[str, ...]
    token_ttl_secs: int


def scope_endpoints(scopes: Iterable[str]) -> frozenset[str]:
    """The endpoint scopes (``tokens.ENDPOINTS`` keys) that OAuth2 ``scopes`` open."""
    out: set[str] = set()
    for scope in scopes:
        out |= SCOPES.get(scope, frozenset())
    return frozenset(out)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the client table if missing."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS oauth_clients (client_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        " secret_digest BLOB NOT NULL, configs TEXT NOT NULL, scopes TEXT NOT NULL,"
        " token_ttl_secs INTEGER NOT NULL, created_at TEXT NOT NULL, rotated_at TEXT)"
    )


def create_client(
    conn: sqlite3.Connection, *, name: str, configs: Iterable[str], scopes: Iterable[str], token_ttl_secs: int
) -> dict[str, str]:
    """Store a new client; returns ``{client_id, client_secret}`` (the only time the secret is shown).

    Raises ``sqlite3.IntegrityError`` when the name is taken (names are unique, as upstream)."""
    ensure_schema(conn)
    client_id = new_id("psa_")
    secret = new_id("pck_")
    conn.execute(
        "INSERT INTO oauth_clients (client_id, name, secret_digest, configs, scopes, token_ttl_secs, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            client_id,
            name,
            token_digest(secret),
            orjson.dumps(sorted(set(configs))).decode(),
            orjson.dumps(sorted(set(scopes))).decode(),
            token_ttl_secs,
            format_timestamp(datetime.now(UTC)),
        ),
    )
    return {"client_id": client_id, "client_secret": secret}


def rotate_secret(conn: sqlite3.Connection, client_id: str) -> dict[str, str] | None:
    """A new secret for a client (the old one stops working); None when there is no such client."""
    ensure_schema(conn)
    secret = new_id("pck_")
    cur = conn.execute(
        "UPDATE oauth_clients SET secret_digest = ?, rotated_at = ? WHERE client_id = ?",
        (token_digest(secret), format_timestamp(datetime.now(UTC)), client_id),
    )
    return {"client_id": client_id, "client_secret": secret} if cur.rowcount else None


def find_client(conn: sqlite3.Connection, client_id: str, secret: str) -> Client | None:
    """The client whose id and secret these are, or None."""
    row = conn.execute(
        "SELECT name, secret_digest, configs, scopes, token_ttl_secs FROM oauth_clients WHERE client_id = ?",
        (client_id,),
    ).fetchone()
    if row is None or row[1] != token_digest(secret):
        return None
    return Client(client_id, row[0], tuple(orjson.loads(row[2])), tuple(orjson.loads(row[3])), int(row[4]))


def list_clients(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every client's description (never its secret), oldest first."""
    ensure_schema(conn)
    return [
        {
            "client_id": r[0],
            "name": r[1],
            "configs": orjson.loads(r[2]),
            "scopes": orjson.loads(r[3]),
            "token_ttl_secs": r[4],
            "created_at": r[5],
            "rotated_at": r[6],
        }
        for r in conn.execute(
            "SELECT client_id, name, configs, scopes, token_ttl_secs, created_at, rotated_at FROM oauth_clients"
            " ORDER BY created_at, client_id"
        )
    ]
