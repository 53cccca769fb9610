"""The local dead-letter store: a SQLite file under the data directory.

Every row keeps what is needed to judge and resend the event: source, destination, reason,
detail, the original bytes and the time received.  ``audit-gateway dlq list|show|replay``
reads the file (:class:`DeadLetterDb`); a replayed row is marked ``replayed_at`` and kept,
a failed replay counts ``replay_attempts`` and keeps its ``replay_error``.

A write that fails raises :class:`DeadLetterWriteError`: the sink then resolves the events
ERRORED (they are resent) rather than REJECTED-and-forgotten, so a dead letter is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.sinks.deadletter.base import DeadLetter
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.reasons import Reason, rejection_reason

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deadletters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  received_at REAL NOT NULL,
  recorded_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
  source TEXT NOT NULL,
  destination TEXT,
  reason TEXT NOT NULL,
  detail TEXT NOT NULL,
  payload BLOB NOT NULL,
  replayed_at REAL
);
CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters(reason);
"""
_ADDED_COLUMNS = {
    "replay_attempts": "INTEGER NOT NULL DEFAULT 0",
    "replay_error": "TEXT",
}


class DeadLetterWriteError(GatewayError):
    """Dead letters could not be recorded; the caller must not treat the events as handled."""


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(_SCHEMA)
    have = {row[1] for row in db.execute("PRAGMA table_info(deadletters)")}
    for name, decl in _ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE deadletters ADD COLUMN {name} {decl}")
    return db


class LocalDeadLetterStore:
    """Dead letters in SQLite (WAL): inspect with ``audit-gateway dlq list|show|replay``."""

    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self._db = _open(path)
        self._lock = asyncio.Lock()
        self._closed = False

    def _insert(self, letters: list[DeadLetter]) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO deadletters(received_at, source, destination, reason, detail, payload)"
                " VALUES (?,?,?,?,?,?)",
                [(d.received_at, d.source, d.destination, d.reason, d.detail, d.payload) for d in letters],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def write(self, letters: list[DeadLetter]) -> None:
        """Record ``letters`` durably; raises :class:`DeadLetterWriteError` if they could not be."""
        if not letters:
            return
        async with self._lock:
            if self._closed:
                raise DeadLetterWriteError("the dead-letter store is closed")
            try:
                await asyncio.to_thread(self._insert, letters)
            except sqlite3.Error as exc:
                log.exception("cannot write dead letters", extra={"count": len(letters)})
                raise DeadLetterWriteError(f"cannot write dead letters: {exc}") from exc
        count_and_log(self.metrics, letters)

    async def close(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def count_and_log(metrics: Metrics, letters: Sequence[DeadLetter]) -> None:
    """``gateway_deadletters_total{source, reason}`` and one log line per write."""
    counts: dict[tuple[str, Reason], int] = {}
    for d in letters:
        key = (d.source, rejection_reason(d.reason))  # the vocabulary, whatever an older writer said
        counts[key] = counts.get(key, 0) + 1
    for (source, reason), n in counts.items():
        metrics.deadletters.labels(source, reason.value).inc(n)
    log.warning("events dead-lettered", extra={"count": len(letters), "reasons": sorted({d.reason for d in letters})})


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A row of the local store, as ``dlq list|show`` present it."""

    id: int
    received_at: float
    recorded_at: float
    source: str
    destination: str | None
    reason: str
    detail: str
    payload: bytes
    replayed_at: float | None
    replay_attempts: int
    replay_error: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at,
            "source": self.source,
            "destination": self.destination,
            "reason": self.reason,
            "replayed_at": self.replayed_at,
            "replay_attempts": self.replay_attempts,
            "bytes": len(self.payload),
        }


_COLUMNS = (
    "id, received_at, recorded_at, source, destination, reason, detail, payload, replayed_at, replay_attempts,"
    " replay_error"
)


def _row(r: Sequence[Any]) -> StoredDeadLetter:
    return StoredDeadLetter(
        int(r[0]), float(r[1]), float(r[2]), str(r[3]), r[4], str(r[5]), str(r[6]), bytes(r[7]), r[8], int(r[9]), r[10]
    )


class DeadLetterDb:
    """Synchronous access to the local store for the ``dlq`` commands (safe beside a running gateway)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _open(path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DeadLetterDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list(
        self,
        *,
        reason: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        include_replayed: bool = False,
        ids: Sequence[int] | None = None,
    ) -> list[StoredDeadLetter]:
        where: list[str] = []
        args: list[Any] = []
        if reason is not None:
            where.append("reason = ?")
            args.append(reason)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if not include_replayed:
            where.append("replayed_at IS NULL")
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        sql = f"SELECT {_COLUMNS} FROM deadletters"  # noqa: S608 - constant fragments, values are bound
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row(r) for r in self._db.execute(sql, args)]

    def get(self, letter_id: int) -> StoredDeadLetter | None:
        sql = f"SELECT {_COLUMNS} FROM deadletters WHERE id = ?"  # noqa: S608 - constant fragments
        r = self._db.execute(sql, (letter_id,)).fetchone()
        return _row(r) if r is not None else None

    def counts(self) -> dict[str, int]:
        """Not yet replayed dead letters by reason."""
        rows = self._db.execute(
            "SELECT reason, count(*) FROM deadletters WHERE replayed_at IS NULL GROUP BY reason ORDER BY reason"
        )
        return {str(r): int(n) for r, n in rows}

    def mark_replayed(self, ids: Sequence[int]) -> None:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE deadletters SET replayed_at = ?, replay_attempts = replay_attempts + 1, replay_error = NULL"
                " WHERE id = ?",
                [(now, i) for i in ids],
            )

    def mark_failed(self, failures: Sequence[tuple[int, str]]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE deadletters SET replay_attempts = replay_attempts + 1, replay_error = ? WHERE id = ?",
                [(err, i) for i, err in failures],
            )
