"""The spool's store: one SQLite file in WAL mode, written by one thread.

Why SQLite: its write-ahead log is a proven torn-write detector.  Every WAL frame carries a
checksum chained over the previous frames and a commit marker; on open, SQLite replays the
frames up to the last valid commit and ignores a torn or corrupt tail.  So a crash in the
middle of a write loses exactly the transaction that was being written (whose ``put`` was
never answered) and nothing before it.

Rows are ``(id, source, dedup_key, item)``; ids are assigned by the caller, increasing.  A
:class:`Spool` is not thread-safe: :class:`gateway.buffer.disk.DiskBuffer` calls it from a
single executor thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SpoolRow = tuple[int, str, str | None, bytes]
"""``(id, source, dedup_key, item)``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  dedup_key TEXT,
  item BLOB NOT NULL
);
"""

DB_NAME = "spool.db"


class SpoolError(Exception):
    """A spool write failed; nothing of that write is durable."""

    def __init__(self, message: str, *, disk_full: bool) -> None:
        super().__init__(message)
        self.disk_full = disk_full


@dataclass(frozen=True, slots=True)
class SpoolStats:
    rows: int
    bytes: int
    max_id: int


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (disk or ``max_page_count`` reached) and ENOSPC-like I/O errors."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space" in text


def _compress(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ids → inclusive ranges: deliveries come in runs, so few DELETEs are needed."""
    out: list[tuple[int, int]] = []
    for i in sorted(ids):
        if out and out[-1][1] + 1 == i:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class Spool:
    """The SQLite file behind a disk buffer (one per destination)."""

    def __init__(self, directory: Path, *, cache_kib: int = 16_384) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_NAME
        try:
            self._db = self._open(self.path, cache_kib)
        except sqlite3.DatabaseError:
            self._salvage(cache_kib)
            return
        if not self._healthy():
            self._db.close()
            self._salvage(cache_kib)

    @staticmethod
    def _open(path: Path, cache_kib: int) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit fsyncs the WAL, so a committed put survives power loss.
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        db.execute("PRAGMA journal_size_limit=67108864")
        db.execute("PRAGMA temp_store=MEMORY")
        db.executescript(_SCHEMA)
        return db

    def _healthy(self) -> bool:
        try:
            row = self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError:
            return False
        return bool(row) and row[0] == "ok"

    def _salvage(self, cache_kib: int) -> None:
        """A damaged file (not a torn WAL tail, which SQLite handles): keep what can be read."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        self._db = self._open(self.path, cache_kib)
        saved = 0
        try:
            old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
            try:
                saved = self._copy_readable(old)
            finally:
                old.close()
        except sqlite3.DatabaseError:
            pass
        log.error("spool file was damaged; readable rows salvaged", extra={"path": str(aside), "rows": saved})

    def _copy_readable(self, old: sqlite3.Connection) -> int:
        """Copy every row that can still be read, chunk by chunk, row by row around damage."""
        (max_id,) = old.execute("SELECT coalesce(max(id), 0) FROM spool").fetchone()
        sql = "SELECT id, source, dedup_key, item FROM spool WHERE id BETWEEN ? AND ?"
        saved = 0
        step = 256
        for lo in range(1, int(max_id) + 1, step):
            hi = lo + step - 1
            try:
                chunk = old.execute(sql, (lo, hi)).fetchall()
            except sqlite3.DatabaseError:
                chunk = []
                for i in range(lo, hi + 1):
                    try:
                        chunk.extend(old.execute(sql, (i, i)).fetchall())
                    except sqlite3.DatabaseError:
                        continue
            if chunk:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR IGNORE INTO spool VALUES (?,?,?,?)", chunk)
                self._db.execute("COMMIT")
                saved += len(chunk)
        return saved

    def stats(self) -> SpoolStats:
        rows, size, max_id = self._db.execute(
            "SELECT count(*), coalesce(sum(length(item)), 0), coalesce(max(id), 0) FROM spool"
        ).fetchone()
        return SpoolStats(int(rows), int(size), int(max_id))

    def write(self, rows: list[SpoolRow], deletes: list[int]) -> None:
        """Insert ``rows`` and delete ``deletes`` in one durable transaction (all or nothing)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            if rows:
                db.executemany("INSERT INTO spool(id, source, dedup_key, item) VALUES (?,?,?,?)", rows)
            if deletes:
                db.executemany("DELETE FROM spool WHERE id BETWEEN ? AND ?", _compress(deletes))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("spool rollback failed")
            raise SpoolError(str(exc), disk_full=is_disk_full(exc)) from exc

    def read(self, from_id: int, limit: int) -> list[SpoolRow]:
        """Up to ``limit`` rows with ``id >= from_id``, in id order."""
        cur = self._db.execute(
            "SELECT id, source, dedup_key, item FROM spool WHERE id >= ? ORDER BY id LIMIT ?", (from_id, limit)
        )
        return [(int(r[0]), str(r[1]), r[2], bytes(r[3])) for r in cur.fetchall()]

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.warning("spool checkpoint at close failed", exc_info=True)
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection (tests inject faults through it, e.g. ``PRAGMA max_page_count``)."""
        return self._db
