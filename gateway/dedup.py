"""De-duplication of events that carry a source-given id, over a bounded window that survives restarts.

Vendors resend: Auth0 retries a delivery whose answer was lost, Okta once, an SDK retries a
request that timed out (``X-Pangea-Retried-Request-Ids`` names the earlier attempts).  Where
a source gives an id (:attr:`gateway.event.Event.dedup_key`: Auth0 ``log_id``, Okta
``uuid``, GitHub ``X-GitHub-Delivery``/``_document_id``; for SDK calls the gateway's own
request id), the window remembers it so the resend does not become a second record.

An SDK request's id is remembered together with a digest of its events (their request item
bytes, in order): a request naming earlier ids in ``X-Pangea-Retried-Request-Ids`` is a
duplicate only if an earlier request with one of those ids carried the same events.  A header
naming an earlier request but carrying other events (a client that reuses the header, a
proxy, a hostile sender) is processed as new: a wrong id can cost a duplicate, never an event.

Semantics that lose nothing:

* a key is **recorded** only once its event is DELIVERED — accepted by the upstream, or
  written to the durable spool (whose ack means exactly that);
* at admission an event whose key is recorded is dropped as a duplicate: its ack resolves
  DELIVERED at once (the sender gets its 2xx) and ``gateway_duplicates_dropped_total`` counts it;
* keys of events that failed are never recorded, so the vendor's retry still gets through;
* an event whose key is *in flight* in another request waits (up to ``pending_wait_secs``)
  for that request's outcome: delivered → duplicate; failed or still open → admitted.

The window holds at most ``max_entries`` keys, none older than ``max_age_secs``; it lives in
memory and in a SQLite file under the data directory (written in the background: after a
crash the last fraction of a second of keys may be missing, which can only let a duplicate
through, never lose an event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from itertools import chain, groupby, islice, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from gateway.acks import AckGroup, AckStatus, exhaust
from gateway.configbase import StrictModel
from gateway.event import Event, item_of
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

_SEP = "\x1f"
_dedup_key_of = attrgetter("dedup_key")
_NOBODY = (None, -1)
"""What the registry of ids in flight holds for an id no tracker registered."""
_BIG_ENDIAN = sys.byteorder == "big"
"""The lengths :func:`events_digest` hashes are little-endian on every machine."""
FLUSH_SECS = 0.05
PRUNE_SECS = 60.0


class DedupConfig(StrictModel):
    """Drop resent events whose source-given id was already accepted (a bounded, persistent window)."""

    enabled: bool = Field(default=True, description="De-duplicate events that carry a source id.")
    max_entries: int = Field(default=200_000, ge=1, description="Most ids remembered (oldest forgotten first).")
    max_age_secs: float = Field(default=86_400.0, gt=0, description="Ids older than this are forgotten.")
    pending_wait_secs: float = Field(
        default=10.0,
        ge=0,
        description="How long a resend waits for the outcome of the same id still in flight before it is admitted.",
    )


def ns_key(source: str, key: str) -> str:
    """Keys are per source: two vendors may use the same id for different events."""
    return f"{source}{_SEP}{key}"


def events_digest(events: Sequence[Event]) -> str:
    """Digest of a request's events (their item bytes, in order), kept with its request id.

    128 bits of SHA-256 over the count and every item's length (8 bytes each, little-endian),
    then the items joined: the lengths say where each item ends, so no two different lists of
    items hash the same bytes.
    """
    # One array of the lengths and one join, built by C calls, and SHA-256 (the CPU's SHA
    # instructions): 15 us instead of 27 for a 100-event, 23 KB request, where the former
    # blake2b of per-item big-endian prefixes built a bytes object per item (issue 18).  A
    # digest an older build persisted no longer matches: a retry of a request answered
    # before the upgrade is delivered again (a duplicate), never lost.
    items = list(map(item_of, events))
    lengths = array("Q", (len(items),))
    lengths.extend(map(len, items))
    if _BIG_ENDIAN:
        lengths.byteswap()
    digest = sha256(lengths.tobytes())
    digest.update(b"".join(items))
    return digest.hexdigest()[:32]


def _json_blob(value: object) -> bytes:
    """``value`` as JSON (the stdlib's, escaped, for an id orjson refuses)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate in an id
        return json.dumps(value).encode()


def _from_json(blob: bytes) -> Any:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:
        return json.loads(blob)


def _runs_of(pairs: list[tuple[str, float]]) -> list[tuple[float, list[str]]]:
    """``[(id, at), ...]`` (a flush of the former format) as its runs of one time, in order."""
    return [(at, list(map(itemgetter(0), run))) for at, run in groupby(pairs, key=itemgetter(1))]


def request_key(source: str, request_id: str, digest: str) -> str:
    """Window key of an SDK request: its id and the digest of its events (see the module docstring)."""
    return ns_key(source, f"request{_SEP}{request_id}{_SEP}{digest}")


class _Arrival:
    """The ids of one :meth:`DedupWindow.record_many` call (or of one run of a loaded file): the
    window's queue of arrivals, oldest first, says which ids to forget first."""

    __slots__ = ("at", "keys", "mixed", "start")

    def __init__(self, at: float, keys: list[str]) -> None:
        self.at = at
        self.keys = keys
        """Never changed (the writer thread may be reading it): ``start`` marks what is forgotten."""
        self.start = 0
        """``keys[:start]`` are forgotten."""
        self.mixed = False
        """Some of ``keys[start:]`` no longer belong to this arrival (recorded again since, expired,
        or twice in ``keys``): forgetting it checks each id's arrival instead of deleting them all."""


class DedupWindow:
    """The window: ids recorded (delivered), ids in flight, and their SQLite file."""

    def __init__(
        self, path: Path | None, config: DedupConfig, metrics: Metrics, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.config = config
        self.metrics = metrics
        self._clock = clock
        """Unix time of "now" (injected by tests, so a window can age without waiting)."""
        # Each id's latest arrival (in a plain dict: an OrderedDict's links cost more to update,
        # and the arrival queue keeps the order), and the arrivals oldest first (issue 18).
        self._seen: dict[str, _Arrival] = {}
        self._arrivals: deque[_Arrival] = deque()
        self._pending: dict[str, tuple[Tracker, int]] = {}
        self._to_write: list[tuple[float, list[str]]] = []
        """The arrivals not yet written: ``(at, keys)`` each."""
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the file and load the window (the newest ``max_entries`` ids within ``max_age_secs``)."""
        if self.path is None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedup")
        loop = asyncio.get_running_loop()
        runs = await loop.run_in_executor(self._executor, self._open)
        for at, keys in runs:  # oldest first; an id recorded again counts from its last time
            self._insert(at, keys)
        self._forget(self._clock())
        self._flusher = loop.create_task(self._flush_loop(), name="dedup-flush")
        log.info("dedup window loaded", extra={"ids": len(self._seen)})

    def _open(self) -> list[tuple[float, list[str]]]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;"
            "CREATE INDEX IF NOT EXISTS seen_at ON seen(at);"
            "CREATE TABLE IF NOT EXISTS seen_batches (id INTEGER PRIMARY KEY, at REAL NOT NULL, n INTEGER NOT NULL,"
            " ids BLOB NOT NULL);"
            "CREATE TABLE IF NOT EXISTS seen_flushes (id INTEGER PRIMARY KEY, at REAL NOT NULL, n INTEGER NOT NULL,"
            " ids BLOB NOT NULL, runs BLOB NOT NULL);"
        )
        self._db = db
        cutoff = self._clock() - self.config.max_age_secs
        # Rows of files written before issue 18 (one per id), then the batches of the former
        # format ([[id, at], ...]), then the flushes of this one, oldest first.
        rows = db.execute(
            "SELECT key, at FROM (SELECT key, at FROM seen WHERE at >= ? ORDER BY at DESC LIMIT ?) ORDER BY at",
            (cutoff, self.config.max_entries),
        ).fetchall()
        out = [(float(a), [str(k)]) for k, a in rows]
        for (ids,) in db.execute("SELECT ids FROM seen_batches WHERE at >= ? ORDER BY id", (cutoff,)):
            out.extend(_runs_of([(str(k), float(a)) for k, a in _from_json(ids) if a >= cutoff]))
        for ids, runs in db.execute("SELECT ids, runs FROM seen_flushes WHERE at >= ? ORDER BY id", (cutoff,)):
            keys: list[str] = _from_json(ids)
            start = 0
            for n, at in _from_json(runs):
                if at >= cutoff:
                    out.append((float(at), keys[start : start + n]))
                start += n
        return out

    async def close(self) -> None:
        """Write what is left and close the file."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            batch, self._to_write = self._to_write, []
            await loop.run_in_executor(self._executor, self._write, batch, True)
            await loop.run_in_executor(self._executor, self._close_db)
            self._executor.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            await asyncio.sleep(FLUSH_SECS)
            if not self._to_write and loop.time() - self._last_prune < PRUNE_SECS:
                continue
            batch, self._to_write = self._to_write, []
            prune = loop.time() - self._last_prune >= PRUNE_SECS
            if prune:
                self._last_prune = loop.time()
            try:
                await loop.run_in_executor(self._executor, self._write, batch, prune)
            except sqlite3.Error:
                log.exception("cannot persist dedup ids", extra={"arrivals": len(batch)})

    def _write(self, batch: list[tuple[float, list[str]]], prune: bool) -> None:
        db = self._db
        if db is None:
            return
        db.execute("BEGIN")
        if batch:
            # One row per flush: its ids as one JSON array of strings, joined by a C-level
            # chain, and the time of each run of them ([[count, at], ...]: one per arrival).  A
            # row per id cost ~2 us of SQLite work per id (issue 18); the former [[id, at], ...]
            # a list per id on the event loop and a longer JSON text to write.  A flush is as
            # old as its newest id; loading keeps, for an id in several flushes, its last time.
            ids = list(chain.from_iterable(map(itemgetter(1), batch)))
            runs = [(len(keys), at) for at, keys in batch]
            db.execute(
                "INSERT INTO seen_flushes(at, n, ids, runs) VALUES (?, ?, ?, ?)",
                (max(map(itemgetter(0), batch)), len(ids), _json_blob(ids), orjson.dumps(runs)),
            )
        if prune:
            cutoff = self._clock() - self.config.max_age_secs
            db.execute("DELETE FROM seen WHERE at < ?", (cutoff,))
            row = db.execute(
                "SELECT at FROM seen ORDER BY at DESC LIMIT 1 OFFSET ?", (self.config.max_entries,)
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM seen WHERE at <= ?", (row[0],))
            for table in ("seen_batches", "seen_flushes"):
                db.execute(f"DELETE FROM {table} WHERE at < ?", (cutoff,))  # noqa: S608 - one of two names
                # Beyond max_entries ids, the oldest rows go (the window in memory holds fewer).
                row = db.execute(
                    f"SELECT id FROM (SELECT id, SUM(n) OVER (ORDER BY id DESC) AS newer FROM {table})"  # noqa: S608
                    " WHERE newer > ? ORDER BY id DESC LIMIT 1",
                    (self.config.max_entries,),
                ).fetchone()
                if row is not None:
                    db.execute(f"DELETE FROM {table} WHERE id < ?", (row[0],))  # noqa: S608
        db.execute("COMMIT")

    # ---------------------------------------------------------------- the window

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str) -> bool:
        """Whether ``key`` (namespaced) was recorded within the window."""
        arrival = self._seen.get(key)
        if arrival is None:
            return False
        if self._clock() - arrival.at > self.config.max_age_secs:
            del self._seen[key]
            arrival.mixed = True
            return False
        return True

    def record_many(self, keys: list[str]) -> None:
        """:meth:`record` of each key (in order), with one clock reading and C-level maps.

        The window keeps ``keys`` (as one arrival): the caller must not change the list.
        """
        if not keys:
            return
        now = self._clock()
        self._insert(now, keys)
        self._forget(now)
        if self.path is not None and not self._closed:
            self._to_write.append((now, keys))

    def record(self, key: str) -> None:
        """Remember ``key`` (namespaced) as delivered now."""
        self.record_many([key])

    def _insert(self, at: float, keys: list[str]) -> None:
        """``keys`` arrive at ``at``: each id's latest arrival, last in the window's order."""
        recorded = self._seen
        arrival = _Arrival(at, keys)
        if not recorded.keys().isdisjoint(keys):  # usually all new: one C-level lookup each, no pops
            for earlier in map(recorded.pop, keys, repeat(None)):  # re-inserted below, last
                if earlier is not None:
                    earlier.mixed = True  # this id is no longer its to forget
        before = len(recorded)
        recorded.update(zip(keys, repeat(arrival)))
        if len(recorded) - before != len(keys):
            arrival.mixed = True  # an id twice in keys: one entry for two places in the list
        self._arrivals.append(arrival)

    def _forget(self, now: float) -> None:
        """Forget the oldest arrivals' ids beyond ``max_entries``, and those past ``max_age_secs``."""
        recorded = self._seen
        arrivals = self._arrivals
        excess = len(recorded) - self.config.max_entries
        while excess > 0:  # a full window: on every call, about one arrival's worth
            first = arrivals[0]
            keys, start = first.keys, first.start
            if first.mixed:
                excess -= self._forget_from(first, excess)
                continue
            end = start + excess
            if end < len(keys):  # a prefix of it
                exhaust(map(recorded.__delitem__, islice(keys, start, end)))
                first.start = end
                break
            exhaust(map(recorded.__delitem__, islice(keys, start, None) if start else keys))
            excess -= len(keys) - start
            arrivals.popleft()
        cutoff = now - self.config.max_age_secs
        while arrivals and arrivals[0].at < cutoff:  # arrivals are in time order but for clock steps
            first = arrivals[0]
            if first.mixed:
                self._forget_from(first, len(first.keys))
            else:
                exhaust(map(recorded.__delitem__, islice(first.keys, first.start, None)))
                arrivals.popleft()

    def _forget_from(self, first: _Arrival, most: int) -> int:
        """Forget up to ``most`` ids of the oldest arrival that are still its own; how many were.

        Pops the arrival once none of its ids is left to forget.
        """
        recorded = self._seen
        keys = first.keys
        i, n, forgotten = first.start, len(keys), 0
        while i < n and forgotten < most:
            key = keys[i]
            i += 1
            if recorded.get(key) is first:
                del recorded[key]
                forgotten += 1
        if i >= n:
            self._arrivals.popleft()
        else:
            first.start = i
        return forgotten

    def tracker(self, source: str, request_key: str | None = None, retried: Sequence[str] = ()) -> Tracker:
        """One admission's view of the window (see :class:`Tracker`)."""
        return Tracker(self, source, request_key, retried)


class Tracker:
    """Screens one request's events and records their ids once the request's acks are resolved.

    Used by :class:`gateway.sources.intake.Admitter`::

        tracker = window.tracker(source, request_key, retried)
        group = AckGroup(n, on_done=tracker.done)
        events = await tracker.screen(events, group)   # duplicates resolved DELIVERED and removed
        try: await destination.submit(events)
        except BaseException: tracker.abandon(); raise
    """

    __slots__ = (
        "_all_keys",
        "_keys",
        "_registered",
        "_request_id",
        "_request_key",
        "_retried",
        "_retried_ids",
        "group",
        "screened",
        "source",
        "window",
    )

    def __init__(self, window: DedupWindow, source: str, request_key: str | None, retried: Sequence[str]) -> None:
        self.window = window
        self.source = source
        self._request_id = request_key
        self._retried_ids = [r for r in retried if r]
        # Set by ``screen``, once the events (and so their digest) are known.
        self._request_key: str | None = None
        self._retried: list[str] = []
        self._keys: dict[int, str] = {}  # event index in the group → key, for the events admitted
        self._all_keys: list[str] | None = None
        """Instead of ``_keys``, when every event has a new, unique key: event ``i``'s is ``[i]``."""
        self._registered: list[str] = []
        self.group: AckGroup | None = None
        self.screened = False
        """Screening is over: this request's events go to the buffer without waiting on others."""

    async def _wait_for(self, other: Tracker) -> None:
        if other.group is None or other.group.done or not other.screened:
            return  # still screening: waiting could deadlock two requests on each other
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(other.group.wait(), self.window.config.pending_wait_secs)

    @staticmethod
    def _delivered(other: Tracker, index: int) -> bool:
        g = other.group
        return g is not None and g.done and index not in g.reasons

    async def screen(self, events: list[Event], group: AckGroup) -> list[Event]:
        """Drop the duplicates (resolving their acks DELIVERED); returns the events to submit.

        ``events[i]`` must hold ``group.ack(i)``.
        """
        self.group = group
        window = self.window
        dups: list[int] = []
        if self._request_id or self._retried_ids:
            digest = events_digest(events)
            if self._request_id:
                self._request_key = request_key(self.source, self._request_id, digest)
            # Only an earlier attempt with these very events matches (same id, same digest).
            self._retried = [request_key(self.source, r, digest) for r in self._retried_ids]
        # A resent SDK request: its earlier attempt delivered every event → all are duplicates.
        if self._retried:
            if any(window.seen(r) for r in self._retried):
                return self._drop(events, list(range(len(events))))
            for r in self._retried:
                pending = window._pending.get(r)
                if pending is not None:
                    await self._wait_for(pending[0])
                    other = pending[0]
                    if other.group is not None and other.group.done and other.group.status == AckStatus.DELIVERED:
                        return self._drop(events, list(range(len(events))))
        if self._request_key is not None:
            window._pending[self._request_key] = (self, -1)
            self._registered.append(self._request_key)
        # Per-event ids: register the new ones first (no await), then wait on those in flight elsewhere.
        waits: list[tuple[int, str, Tracker, int]] = []
        ids = list(map(_dedup_key_of, events))  # read once: the check below and the fast path
        unkeyed = ids.count(None)
        keyed = events if unkeyed != len(events) else ()  # else none has an id
        prefix = ns_key(self.source, "")
        recorded = window._seen  # `key in recorded` first: most ids are new, and seen() is a call
        registry = window._pending
        registered = self._registered
        own_keys = self._keys
        if keyed and not unkeyed:
            keys = list(map(prefix.__add__, ids))
            # isdisjoint runs the lookups in C, without a method call per id (issue 18).
            if recorded.keys().isdisjoint(keys) and registry.keys().isdisjoint(keys):
                # The usual request: every id new.  Registered as the loop below would (each
                # pending on this tracker), with C-level maps (issue 18).
                n = len(keys)
                before = len(registry)
                registry.update(zip(keys, zip(repeat(self, n), range(n), strict=True), strict=True))
                if len(registry) - before == n:  # and unique: no set of them needed to tell
                    registered.extend(keys)
                    self._all_keys = keys  # event i's key is keys[i]: no dict of them
                    keyed = ()
                else:  # an id twice: none was registered before, so all go; the loop words it
                    exhaust(map(registry.pop, keys, repeat(None)))
        for i, ev in enumerate(keyed):
            if ev.dedup_key is None:
                continue
            key = prefix + ev.dedup_key
            if key in recorded and window.seen(key):
                dups.append(i)
                continue
            pending = registry.get(key)
            if pending is None:
                registry[key] = (self, i)
                registered.append(key)
                own_keys[i] = key
            elif pending[0] is self:
                dups.append(i)  # the same id twice in one request
            else:
                waits.append((i, key, pending[0], pending[1]))
        for i, key, other, index in waits:
            await self._wait_for(other)
            if window.seen(key) or self._delivered(other, index):
                dups.append(i)
                continue
            self._keys[i] = key
            if key not in window._pending:
                window._pending[key] = (self, i)
                self._registered.append(key)
        self.screened = True
        return self._drop(events, dups) if dups else events

    def _drop(self, events: list[Event], dups: list[int]) -> list[Event]:
        self.screened = True
        drop = set(dups)
        for i in dups:
            self._keys.pop(i, None)
        keep = [e for i, e in enumerate(events) if i not in drop]
        # Counted by the caller (admission), which knows the destinations they are accounted to.
        for i in dups:
            ack = events[i].ack
            if not ack.resolved:
                ack.resolve(AckStatus.DELIVERED, None)
        return keep

    def abandon(self) -> None:
        """The submit failed (buffer full): nothing of this request is in flight any more."""
        self._unregister()
        self._keys.clear()
        self._all_keys = None

    def _unregister(self) -> None:
        pending = self.window._pending
        registered = self._registered
        # Popped at once, then put back where another tracker took a key over (a concurrent
        # request with the same request id): one lookup per key instead of a get and a pop,
        # the registry's order being of no matter (issue 18).
        popped = list(map(pending.pop, registered, repeat(_NOBODY)))
        if list(map(itemgetter(0), popped)).count(self) != len(popped):
            for key, (owner, index) in zip(registered, popped, strict=True):
                if owner is not None and owner is not self:  # None: not registered (_NOBODY)
                    pending[key] = (owner, index)
        registered.clear()

    def done(self, group: AckGroup) -> None:
        """``AckGroup`` ``on_done``: record the ids of what was delivered; forget the rest."""
        window = self.window
        every = self._all_keys
        if every is not None:  # the window keeps the list: this tracker is done with it
            window.record_many(
                every if not group.reasons else [k for i, k in enumerate(every) if i not in group.reasons]
            )
        elif not group.reasons:  # all delivered: recorded at once
            window.record_many(list(self._keys.values()))
        else:
            window.record_many([key for i, key in self._keys.items() if i not in group.reasons])
        if self._request_key is not None and group.status == AckStatus.DELIVERED and self.screened:
            window.record(self._request_key)
        self._unregister()
        self._keys.clear()
        self._all_keys = None
