"""The spool's store: one SQLite file in WAL mode, written by one thread.

Why SQLite: its write-ahead log is a proven torn-write detector.  Every WAL frame carries a
checksum chained over the previous frames, and a commit marker; on open, SQLite replays the
frames up to the last valid commit and ignores a torn or corrupt tail.  So a crash in the
middle of a write loses exactly the transaction being written (whose ``put`` was never
answered) and nothing before it.  A damaged database file (not a torn WAL tail) is set aside
and its readable records are copied into a fresh file.

One *record* per put (per source within a put): the events' item bytes concatenated, their
lengths, their source and their dedup keys.  Writing a request as one record keeps SQLite's
work — and the time the writer thread holds the GIL — per request, not per event.  Record
ids are assigned by the caller, increasing.  A :class:`Spool` is not thread-safe:
:class:`gateway.buffer.disk.DiskBuffer` calls it from a single executor thread.

A full disk.  Deleting delivered records must always be possible: a delete that cannot
commit means the record is sent again after a restart.  So (1) deliveries (deletes and
progress) that shared a transaction with new records are committed on their own when the
disk is full; (2) a *reserve* file (``spool.reserve``, ``reserve_bytes`` of zeros) is kept in
the directory and given back to the filesystem when even they cannot commit; (3) new records
are refused while the reserve cannot be held, so the spool never eats the room its own
deletes need; (4) after deliveries under pressure, the freed pages are handed back to the
filesystem (``auto_vacuum=INCREMENTAL`` and a truncating checkpoint) and the reserve is made
again.  The WAL is checkpointed every ``WAL_AUTOCHECKPOINT_PAGES`` so a checkpoint never needs
more room than the reserve holds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
  id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  n INTEGER NOT NULL,
  lengths BLOB NOT NULL,
  dedup BLOB,
  items BLOB NOT NULL,
  done BLOB
);
"""
_COLUMNS = "id, source, n, lengths, dedup, items, done"

DB_NAME = "spool.db"
RESERVE_NAME = "spool.reserve"
WAL_AUTOCHECKPOINT_PAGES = 256
"""1 MiB of 4 KiB pages: the most a checkpoint must grow the file by, well under the reserve."""
MAKE_ROOM_INTERVAL_SECS = 1.0
"""A write refused for a full disk tries to make room (see ``Spool._make_room``) at most this often."""
ROOM_PROBE_BYTES = 1024 * 1024
"""Room that :meth:`Spool.has_room` wants to see besides the reserve."""
VACUUM_STEP_PAGES = 256
"""Free pages given back per step, each followed by a truncating checkpoint (bounds the WAL)."""


@dataclass(slots=True)
class Record:
    """One put's events for one source: ``items[i]`` with ``dedup_keys[i]``."""

    id: int
    source: str
    items: list[bytes]
    dedup_keys: list[str | None]
    done: bytes | None = None
    """Progress saved before a restart: ``done[i]`` is 1 when event ``i`` was already delivered."""

    @property
    def size(self) -> int:
        return sum(len(i) for i in self.items)


class SpoolError(GatewayError):
    """A spool write failed: none of its new records is durable.

    ``finished``: its deletes and progress were committed all the same (on their own).
    """

    def __init__(self, message: str, *, disk_full: bool, finished: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full
        self.finished = finished


@dataclass(frozen=True, slots=True)
class SpoolStats:
    records: int
    events: int
    bytes: int
    max_id: int


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (disk or ``max_page_count`` reached) and ENOSPC-like I/O errors.

    SQLITE_IOERR_SHMSIZE is what a WAL-mode open meets when it cannot size its ``-shm`` file.
    """
    if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE):
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


def encode(record: Record) -> tuple[int, str, int, bytes, bytes | None, bytes, bytes | None]:
    lengths = array("I", [len(i) for i in record.items])
    if sys.byteorder != "little":
        lengths.byteswap()
    keys = record.dedup_keys
    dedup = orjson.dumps(keys) if any(k is not None for k in keys) else None
    return (record.id, record.source, len(record.items), lengths.tobytes(), dedup, b"".join(record.items), None)


def decode(row: Sequence[Any]) -> Record:
    rid, source, n, raw_lengths, dedup, blob, done = row
    lengths = array("I")
    lengths.frombytes(bytes(raw_lengths))
    if sys.byteorder != "little":
        lengths.byteswap()
    data = bytes(blob)
    if len(lengths) != n or sum(lengths) != len(data):
        raise ValueError(f"spool record {rid} is inconsistent")
    items: list[bytes] = []
    pos = 0
    for ln in lengths:
        items.append(data[pos : pos + ln])
        pos += ln
    keys: list[str | None] = orjson.loads(bytes(dedup)) if dedup is not None else [None] * len(items)
    if len(keys) != len(items) or (done is not None and len(done) != len(items)):
        raise ValueError(f"spool record {rid} is inconsistent")
    return Record(int(rid), str(source), items, keys, bytes(done) if done is not None else None)


class Spool:
    """The SQLite file behind a disk buffer (one per destination)."""

    def __init__(
        self,
        directory: Path,
        *,
        cache_kib: int = 16_384,
        reserve_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        """Monotonic seconds (injected by tests): how often the reserve is remade."""
        self.path = directory / DB_NAME
        self._cache_kib = cache_kib
        self.reserve_path = directory / RESERVE_NAME
        self.reserve_bytes = reserve_bytes
        self.reserved = False
        """Whether the reserve file is in place (always True when ``reserve_bytes`` is 0)."""
        self._room_made_at = float("-inf")
        self._db: sqlite3.Connection
        self.make_reserve()
        try:
            healthy = self._open_with_room()
        except sqlite3.DatabaseError:
            healthy = False
            self._db = None  # type: ignore[assignment]
        if not healthy:
            if self._db is not None:
                self._db.close()
            self._salvage()

    def _open_with_room(self) -> bool:
        """Open the file and check it; whether it is healthy.

        A full disk is not damage (a WAL-mode open creates the ``-wal`` and ``-shm`` files, the
        first read needs them): the open is tried again with the reserve given back, and then
        raises SpoolError rather than let a sound file be set aside as damaged.
        """
        for attempt in (1, 2):
            try:
                self._db = self._open(self.path, self._cache_kib)
                try:
                    return self._healthy()
                except sqlite3.DatabaseError:
                    self._db.close()
                    raise
            except sqlite3.DatabaseError as exc:
                if not is_disk_full(exc):
                    raise
                if attempt == 2 or not self.release_reserve():
                    raise SpoolError(f"spool cannot be opened: {exc}", disk_full=True) from exc
                log.warning("disk full: spool reserve given back to open the spool", extra={"path": str(self.path)})
        raise AssertionError("unreachable")

    @staticmethod
    def _open(path: Path, cache_kib: int) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            if db.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new file: freed pages can then be given back to the filesystem without a
                # full VACUUM, which a full disk has no room for.  (Only here: on an existing
                # file the statement may write, and the disk may be full.)
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit fsyncs the WAL, so a committed put survives a power cut.
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            db.execute("PRAGMA journal_size_limit=67108864")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            # Many builds (Debian's) default to secure_delete=ON: every freed page is zeroed, so
            # deleting delivered records costs as much WAL room as they held, and on a full disk
            # the deletes cannot commit.  FAST zeroes only what costs no extra I/O.
            db.execute("PRAGMA secure_delete=FAST")
            Spool._migrate(db)
            db.executescript(_SCHEMA)
            (vacuum_mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
            if vacuum_mode == 0 and db.execute("SELECT 1 FROM spool LIMIT 1").fetchone() is None:
                # A file made before auto_vacuum was set: converting it takes a VACUUM, cheap while
                # empty.  Not possible on a full disk: then it is done at a later start.
                try:
                    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    db.execute("VACUUM")
                except sqlite3.OperationalError as exc:
                    log.warning("spool not converted to auto_vacuum", extra={"path": str(path), "error": str(exc)})
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Spools of the first layout (one row per event, no ``n``) become one record per row."""
        cols = {r[1] for r in db.execute("PRAGMA table_info(spool)")}
        if not cols or "n" in cols:
            if cols and "done" not in cols:
                db.execute("ALTER TABLE spool ADD COLUMN done BLOB")
            return
        db.execute("BEGIN IMMEDIATE")
        db.execute("ALTER TABLE spool RENAME TO spool_v1")
        db.execute(_SCHEMA.replace("CREATE TABLE IF NOT EXISTS spool", "CREATE TABLE spool").strip().rstrip(";"))
        rows = db.execute("SELECT id, source, dedup_key, item FROM spool_v1 ORDER BY id").fetchall()
        db.executemany(
            f"INSERT INTO spool({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",  # noqa: S608 - constant
            [encode(Record(int(i), str(src), [bytes(item)], [key])) for i, src, key, item in rows],
        )
        db.execute("DROP TABLE spool_v1")
        db.execute("COMMIT")
        log.info("spool migrated to one record per write", extra={"records": len(rows)})

    def _healthy(self) -> bool:
        try:
            row = self._db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise  # no room to read it, not damage
            return False
        return bool(row) and row[0] == "ok"

    def _salvage(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        self._db = self._open(self.path, self._cache_kib)
        saved = 0
        try:
            old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
            try:
                saved = self._copy_readable(old)
            finally:
                old.close()
        except sqlite3.DatabaseError:
            pass
        log.error("spool file was damaged; readable records salvaged", extra={"path": str(aside), "records": saved})

    def _copy_readable(self, old: sqlite3.Connection) -> int:
        """Copy every record that can still be read: in chunks, record by record around damage."""
        (max_id,) = old.execute("SELECT coalesce(max(id), 0) FROM spool").fetchone()
        sql = f"SELECT {_COLUMNS} FROM spool WHERE id BETWEEN ? AND ?"  # noqa: S608 - constant
        saved = 0
        step = 64
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
            good = []
            for row in chunk:
                try:
                    decode(row)
                except (ValueError, orjson.JSONDecodeError, TypeError):
                    continue
                good.append(row)
            if good:
                self._db.execute("BEGIN IMMEDIATE")
                sql = f"INSERT OR IGNORE INTO spool({_COLUMNS}) VALUES (?,?,?,?,?,?,?)"  # noqa: S608 - constant
                self._db.executemany(sql, good)
                self._db.execute("COMMIT")
                saved += len(good)
        return saved

    def stats(self) -> SpoolStats:
        records, events, size, max_id = self._db.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(items)), 0), coalesce(max(id), 0) FROM spool"
        ).fetchone()
        return SpoolStats(int(records), int(events), int(size), int(max_id))

    def write(self, records: list[Record], deletes: list[int], progress: Sequence[tuple[int, bytes]] = ()) -> None:
        """One durable transaction: insert ``records``, delete record ids ``deletes``, and save
        ``progress`` — ``(id, done)`` of records some of whose events are delivered already.

        When the disk is full, the deletes and progress are still committed on their own
        (giving the reserve back if that is what it takes) and the :class:`SpoolError`
        raised for the records says ``finished``.  New records are refused while the
        reserve cannot be held.
        """
        finish = bool(deletes or progress)
        if records and not self.make_reserve() and not self._make_room():
            finished = finish and self._finish(deletes, progress)
            raise SpoolError("disk is full: no room for the spool's reserve", disk_full=True, finished=finished)
        try:
            self._commit(records, deletes, progress)
        except SpoolError as exc:
            if not exc.disk_full:
                raise
            full = exc
        else:
            if finish and not self.reserved:
                self.reclaim()  # room was short: what these deletes freed may let the reserve back
            return
        # The disk is full.  The deliveries must be recorded all the same (a restart would send
        # them again): on their own, and with the reserve given back if need be.
        if finish and not self._finish(deletes, progress, tried=not records):
            raise SpoolError(str(full), disk_full=True) from full
        if not records:
            return
        # Then the records: an unfinished checkpoint and free pages may be all that is in the way.
        if self._make_room():
            try:
                self._commit(records, [], ())
                return
            except SpoolError as exc:
                if not exc.disk_full:
                    raise SpoolError(str(exc), disk_full=False, finished=finish) from exc
        raise SpoolError(str(full), disk_full=True, finished=finish) from full

    def _make_room(self) -> bool:
        """Give the reserve back, finish the checkpoint and hand free pages to the filesystem,
        then hold the reserve again; True if it is held.  At most every ``MAKE_ROOM_INTERVAL_SECS``
        (it rewrites the reserve file)."""
        now = self._clock()
        if now - self._room_made_at < MAKE_ROOM_INTERVAL_SECS:
            return False
        self._room_made_at = now
        self.release_reserve()
        self.reclaim()
        return self.reserved

    def _finish(self, deletes: list[int], progress: Sequence[tuple[int, bytes]], *, tried: bool = False) -> bool:
        """Commit deliveries alone on a full disk, then give the freed room back.

        ``tried``: they already failed on their own, go straight to the reserve.  Returns
        False when they failed and there was no reserve left to give; raises SpoolError
        when they fail even so.
        """
        if not tried:
            try:
                self._commit([], deletes, progress)
            except SpoolError as exc:
                if not exc.disk_full:
                    raise
                tried = True
        if tried:
            if not self.release_reserve():
                return False
            log.warning(
                "disk full: spool reserve given back so deliveries can be recorded", extra={"path": str(self.path)}
            )
            self._commit([], deletes, progress)
        self.reclaim()
        return True

    def _commit(self, records: list[Record], deletes: list[int], progress: Sequence[tuple[int, bytes]]) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            if records:
                db.executemany(
                    f"INSERT INTO spool({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",  # noqa: S608 - constant
                    [encode(r) for r in records],
                )
            if progress:
                db.executemany("UPDATE spool SET done = ? WHERE id = ?", [(d, i) for i, d in progress])
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

    # ---------------------------------------------------------------- room on a full disk

    def make_reserve(self) -> bool:
        """Put the reserve file in place if it is missing and the filesystem has room for it."""
        if self.reserved or self.reserve_bytes <= 0:
            self.reserved = True
            return True
        want = self.reserve_bytes
        try:
            if self.reserve_path.exists() and self.reserve_path.stat().st_size >= want:
                self.reserved = True
                return True
            st = os.statvfs(self.reserve_path.parent)
            if st.f_bavail * st.f_frsize < want:
                return False  # writing it would only fail (and take the last free blocks meanwhile)
            chunk = bytes(min(want, 1 << 20))
            with self.reserve_path.open("wb") as f:
                left = want
                while left > 0:
                    left -= f.write(chunk[: min(left, len(chunk))])
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("spool reserve cannot be made", extra={"path": str(self.reserve_path), "error": str(exc)})
            return False
        self.reserved = True
        return True

    def has_room(self) -> bool:
        """Whether a write stands a chance (a probe, no write of the spool's own): the reserve is
        held and the filesystem, or the file's free pages, have ``ROOM_PROBE_BYTES`` besides."""
        if not self.make_reserve():
            return False
        st = os.statvfs(self.path.parent)
        if st.f_bavail * st.f_frsize >= ROOM_PROBE_BYTES:
            return True
        try:
            (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
            (size,) = self._db.execute("PRAGMA page_size").fetchone()
        except sqlite3.Error:
            return False
        return bool(free * size >= ROOM_PROBE_BYTES)

    def release_reserve(self) -> bool:
        """Give the reserve file's room back to the filesystem; False when there was none."""
        if self.reserve_bytes <= 0 or not self.reserved:
            return False
        self.reserved = False
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    def reclaim(self) -> None:
        """Hand the spool's free pages back to the filesystem, then make the reserve again.

        In steps, each followed by a truncating checkpoint, so the WAL never needs much room.
        Best effort: on failure the pages stay free inside the file, where new records reuse them.
        """
        db = self._db
        try:
            while True:
                (free,) = db.execute("PRAGMA freelist_count").fetchone()
                if not free:
                    break
                db.execute(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES})").fetchall()
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                (after,) = db.execute("PRAGMA freelist_count").fetchone()
                if after >= free:
                    break  # not an auto-vacuum file (made by an older version): nothing to give back
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("spool could not give free pages back", extra={"path": str(self.path), "error": str(exc)})
        self.make_reserve()

    def read(self, from_id: int, limit: int) -> tuple[list[Record], int]:
        """Up to ``limit`` records with ``id >= from_id``, in id order, and the last id looked at.

        A record that cannot be decoded (damaged in place) is logged and skipped.
        """
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM spool WHERE id >= ? ORDER BY id LIMIT ?",  # noqa: S608 - constant
            (from_id, limit),
        )
        out: list[Record] = []
        last = from_id - 1
        for row in cur.fetchall():
            last = int(row[0])
            try:
                out.append(decode(row))
            except (ValueError, TypeError, orjson.JSONDecodeError):
                log.error("spool record cannot be decoded; skipped", extra={"path": str(self.path), "id": last})
        return out, last

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
