"""The local dead-letter store: a SQLite file under the data directory."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from gateway.sinks.deadletter.base import DeadLetter
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deadletters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  received_at REAL NOT NULL,
  recorded_at REAL NOT NULL DEFAULT (unixepoch('subsec')),
  source TEXT NOT NULL,
  destination TEXT,
  reason TEXT NOT NULL,
  detail TEXT NOT NULL,
  payload BLOB NOT NULL,
  replayed_at REAL
);
CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters(reason);
"""


class LocalDeadLetterStore:
    """Dead letters in SQLite (WAL): inspect with ``audit-gateway dlq list|show|replay``."""

    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = asyncio.Lock()

    def _insert(self, letters: list[DeadLetter]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO deadletters(received_at, source, destination, reason, detail, payload)"
                " VALUES (?,?,?,?,?,?)",
                [(d.received_at, d.source, d.destination, d.reason, d.detail, d.payload) for d in letters],
            )

    async def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        async with self._lock:
            try:
                await asyncio.to_thread(self._insert, letters)
            except sqlite3.Error:
                log.exception("cannot write dead letters", extra={"count": len(letters)})
                return
        counts: dict[tuple[str, str], int] = {}
        for d in letters:
            counts[(d.source, d.reason)] = counts.get((d.source, d.reason), 0) + 1
        for (source, reason), n in counts.items():
            self.metrics.deadletters.labels(source, reason).inc(n)
        log.warning(
            "events dead-lettered", extra={"count": len(letters), "reasons": sorted({d.reason for d in letters})}
        )

    async def close(self) -> None:
        async with self._lock:
            self._db.close()
