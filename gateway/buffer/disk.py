"""The durable spool: a :class:`~gateway.buffer.base.Buffer` on SQLite (WAL) with group commit.

What a 2xx means with ``buffer: {type: disk}``: the request's events are written to the
spool and fsynced.  :meth:`DiskBuffer.put` appends the events' item bytes (with their source
and dedup keys), waits for the commit that covers them, and only then resolves the
**original** acks DELIVERED, so the webhook answers.  Consequently the Pangea-compatible
``/v2/log`` answer carries no upstream hashes with a disk buffer (``results`` is empty):
the request is answered at durability, before the upstream has seen it.

Forwarding: :meth:`take` returns *new* events (same item bytes) whose acks point at this
buffer.  A put is stored as one record (see :mod:`gateway.buffer.spool`); the record is
deleted once every one of its events is DELIVERED, or REJECTED (the sink has then
dead-lettered it); the progress of a record delivered in part is saved with the next
commit.  An ERRORED event stays and is taken again.  On start what is left from the
previous run is replayed: the events not known to be done — an event delivered in the last
milliseconds before a crash may be sent twice (at least once, never lost).  At shutdown what
is left stays on disk.

Group commit: ``fsync_interval_ms: 0`` commits (and fsyncs, ``synchronous=FULL``) as soon as
a write arrives — writes arriving while a commit runs share the next one; ``N`` commits
every N ms.  Every ``put`` waits for the commit covering it.  Deletes are batched into the
next commit (a lost delete after a crash means a resend, never a loss).

Capacity: ``max_bytes`` (and ``max_events`` when given explicitly) bound the spool; a full
spool refuses with :class:`~gateway.errors.BufferFull` (429 + Retry-After), a failed write
(disk full: ``SQLITE_FULL``, I/O error) with :class:`SpoolUnavailable` (503 + Retry-After).
Neither drops anything already accepted.  Recently written events are also kept in memory
(up to ``memory_bytes``) so forwarding does not read them back; older ones are read from disk.

A full disk.  Delivered events are forgotten in memory at once (never taken again in this
process) and their deletes are committed even when new writes cannot be (see
:mod:`gateway.buffer.spool`: deletes alone, then with the reserve given back).  Should even
that fail, nothing more is taken for sending until the deletes commit: a delivery that cannot
be recorded would be sent again after a restart.  While writes fail for a full disk,
:attr:`DiskBuffer.refusal` says so (``/readyz``); every put tries again, and the first that
commits clears it — as does a commit freeing delivered records, or, with no traffic at all,
a probe finding room (every ``ROOM_PROBE_SECS``): intake recovers without a restart.  Failed
writes are logged once per ``FAILED_LOG_SECS`` with a count.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.acks import Ack, AckStatus
from gateway.buffer.clock import Clock, LoopClock, TimerHandle
from gateway.buffer.config import BufferConfig
from gateway.buffer.spool import Record, Spool, SpoolError
from gateway.errors import BufferFull, Draining, GatewayError, GatewayUnavailable
from gateway.event import Event
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

DELETE_FLUSH_SECS = 0.2
"""Deletes alone are committed at most this often (they ride along with writes otherwise)."""
RETAKE_DELAY_SECS = 0.5
"""An ERRORED event is offered again after this long (the sink has already backed off)."""
WRITE_RETRY_SECS = 1.0
ROOM_PROBE_SECS = 1.0
"""While writes fail for a full disk and nothing else happens, room is looked for this often."""
FAILED_LOG_SECS = 10.0
"""Failed spool writes are logged at most this often (with the count of events refused meanwhile)."""
KEY_BITS = 16
MAX_RECORD_EVENTS = 1 << KEY_BITS
"""An event's ack key is ``record_id << KEY_BITS | index``; a record holds at most this many events."""
DISK_READ_RECORDS = 64

Progress = list[tuple[int, bytes]]
"""``(record id, done flags)`` of records delivered in part."""
Slot = tuple[int, bytes, str, str | None]
"""An event ready to be taken: ``(ack key, item, source, dedup_key)``."""


class SpoolUnavailable(GatewayUnavailable):
    """The spool cannot write (disk full, I/O error), or a Kafka buffer's brokers did not
    acknowledge: 503 with Retry-After, nothing accepted.  A fault of the gateway's own, not a
    full buffer: its events count refused ``unavailable`` (not ``buffer_full``)."""


def _consume(fut: asyncio.Future[None]) -> None:
    # A caller cancelled while waiting must not leave "exception never retrieved" behind.
    if not fut.cancelled():
        fut.exception()


class _PendingWrite:
    __slots__ = ("events", "future", "size")

    def __init__(self, events: list[Event], size: int, future: asyncio.Future[None]) -> None:
        self.events = events
        self.size = size
        self.future = future


def _records(batch: list[_PendingWrite], first_id: int) -> tuple[list[Record], list[list[Event]]]:
    """One record per put and source (split at MAX_RECORD_EVENTS), ids from ``first_id``."""
    records: list[Record] = []
    groups: list[list[Event]] = []
    rid = first_id
    for w in batch:
        run: list[Event] = []
        for e in w.events:
            if run and (e.source != run[0].source or len(run) >= MAX_RECORD_EVENTS):
                records.append(Record(rid, run[0].source, [x.item for x in run], [x.dedup_key for x in run]))
                groups.append(run)
                rid += 1
                run = []
            run.append(e)
        if run:
            records.append(Record(rid, run[0].source, [x.item for x in run], [x.dedup_key for x in run]))
            groups.append(run)
            rid += 1
    return records, groups


class DiskBuffer:
    """A durable, bounded spool for one destination; see the module docstring.

    ``clock`` is the time its timings run on (group commit, delete flushes, retakes, room
    probes, log throttling): real time unless a test injects one it lets pass."""

    wants_delivery_details = False  # as the receiver of taken events' acks: rows are deleted, no more

    def __init__(
        self,
        destination: str,
        path: Path,
        config: BufferConfig,
        metrics: Metrics,
        retry_after_secs: float = 1.0,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.destination = destination
        self._clock: Clock = clock if clock is not None else LoopClock()
        self.path = path
        self.max_bytes = config.max_bytes
        self.max_events = config.max_events if config.max_events_given else None
        self.interval = config.fsync_interval_ms / 1000.0
        self.memory_bytes = config.memory_bytes
        self._retry_after = retry_after_secs
        try:
            self._spool = Spool(path, reserve_bytes=config.reserve_bytes, clock=self._clock.monotonic)
        except SpoolError as exc:
            raise GatewayError(f"spool for destination {destination!r} cannot be opened: {exc}") from exc
        stats = self._spool.stats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{destination}")
        # In the spool file (committed, not yet deleted), in events and bytes.
        self._events = stats.events
        self._bytes = stats.bytes
        self._next_id = stats.max_id + 1
        # Records below this id were left by an earlier run: recovered in the accounting when read.
        self._first_own_id = self._next_id
        self._metrics = metrics
        # Records taken into memory: id → [events not yet done, events]; and which are done, when some are.
        self._open: dict[int, list[int]] = {}
        self._partial: dict[int, bytearray] = {}
        self._dirty: set[int] = set()  # records whose progress the next commit saves
        # Accepted by put, waiting for their commit (counted against capacity already).
        self._pending: list[_PendingWrite] = []
        self._pending_ids: set[int] = set()
        self._pending_events = 0
        self._pending_bytes = 0
        self._deletes: list[int] = []
        # Ready to be taken: retried events, events kept in memory, records only on disk (id >= _read_pos).
        self._retry: deque[Slot] = deque()
        self._hot: deque[Slot] = deque()
        self._hot_bytes = 0
        self._disk_records = stats.records  # everything left from the last run is read back from disk
        self._disk_events = stats.events
        self._disk_bytes = stats.bytes
        self._read_pos = 0
        self._ready_events = stats.events
        self._ready_bytes = stats.bytes
        self._inflight: dict[int, Slot] = {}
        self._requeue: dict[int, TimerHandle] = {}
        self._closed = False
        self._shut = False
        self._disk_full = False  # the last write of new events failed for a full disk
        self._failure_logged_at = float("-inf")
        self._unlogged_failures = 0  # events refused since the last "spool write failed" line
        self._stuck = False  # deliveries cannot be recorded: take nothing more until they are
        self._unstuck = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = False
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._take_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._m_events = metrics.buffer_events.labels(destination)
        self._m_bytes = metrics.buffer_bytes.labels(destination)
        if self.max_events is not None:
            metrics.buffer_max_events.labels(destination).set(self.max_events)
        self._publish()
        if stats.events:
            log.info(
                "spool replays what was left",
                extra={"destination": destination, "events": stats.events, "bytes": stats.bytes},
            )

    # ---------------------------------------------------------------- capacity

    @property
    def events(self) -> int:
        return self._events

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def fill_ratio(self) -> float:
        ratio = (self._bytes + self._pending_bytes) / self.max_bytes
        if self.max_events is not None:
            ratio = max(ratio, (self._events + self._pending_events) / self.max_events)
        return ratio

    @property
    def refusal(self) -> str | None:
        """Why intake refuses every request right now (``/readyz``), or None."""
        if self._stuck:
            return "spool disk full: deliveries cannot be recorded"
        return "spool disk full" if self._disk_full else None

    def _fits(self, n: int, size: int) -> bool:
        held = self._events + self._pending_events
        if held == 0:
            return True  # an empty spool takes any one request, so a huge one is not refused forever
        if self.max_events is not None and held + n > self.max_events:
            return False
        return self._bytes + self._pending_bytes + size <= self.max_bytes

    # ---------------------------------------------------------------- intake

    async def put(self, events: list[Event], *, wait: bool = False) -> None:
        """Write ``events`` durably, then resolve their acks DELIVERED (all or nothing).

        Events already written or being written are skipped: a caller that timed out waiting
        (``asyncio.wait_for`` around a put) and puts the same events again writes nothing twice.
        If the write fails, the events' acks resolve ERRORED (and the put raises).
        """
        events = [e for e in events if not e.ack.resolved and id(e) not in self._pending_ids]
        if not events:
            return
        size = sum(len(e.item) for e in events)
        while True:
            if self._closed:  # 503, as every buffer answers while stopping: not a busy gateway
                raise Draining("the gateway is shutting down", retry_after_secs=self._retry_after)
            if not self._fits(len(events), size):
                if not wait:
                    raise BufferFull(
                        f"spool for destination {self.destination!r} is full", retry_after_secs=self._retry_after
                    )
                self._room.clear()
                await self._room.wait()
                continue
            try:
                await self._write(events, size)
                return
            except SpoolUnavailable:
                if not wait:
                    raise
                await self._clock.sleep(WRITE_RETRY_SECS)

    async def _write(self, events: list[Event], size: int) -> None:
        loop = asyncio.get_running_loop()
        self._ensure_committer()
        fut: asyncio.Future[None] = loop.create_future()
        fut.add_done_callback(_consume)
        self._pending.append(_PendingWrite(events, size, fut))
        self._pending_ids.update(map(id, events))
        self._pending_events += len(events)
        self._pending_bytes += size
        self._idle = False
        self._wake.set()
        # The committer resolves the acks, so a cancelled caller cannot leave them open.
        await asyncio.shield(fut)

    def _ensure_committer(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_loop(), name=f"spool-commit-{self.destination}"
            )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _commit_loop(self) -> None:
        clock = self._clock
        last = float("-inf")
        while not self._shut:
            if not self._pending and not self._deletes and not self._dirty:
                self._idle = True
                if self._disk_full:
                    await self._probe_room()
                else:
                    await self._wake.wait()
                self._idle = False
                if not self._wake.is_set():
                    continue
            self._wake.clear()
            if not self._pending and (self._deletes or self._dirty):
                # Deletes alone: give a write the chance to carry them (one fsync for both).
                await clock.wait(self._wake, DELETE_FLUSH_SECS)
                self._wake.clear()
            if self._shut:
                return
            if self._pending and self.interval > 0:
                delay = last + self.interval - clock.monotonic()
                if delay > 0:
                    await clock.sleep(delay)
            last = clock.monotonic()
            await self._commit_once()

    async def _commit_once(self) -> None:
        if self._shut:
            return
        batch, self._pending = self._pending, []
        deletes, self._deletes = self._deletes, []
        progress = self._progress()
        if not batch and not deletes and not progress:
            return
        if not batch:
            self._publish()
        records, groups = _records(batch, self._next_id)
        try:
            await self._run(self._spool.write, records, deletes, progress)
        except SpoolError as exc:
            self._unfinished(deletes, progress, exc)
            self._failed(batch, exc)
            return
        except BaseException:
            self._unfinished(deletes, progress, None)
            self._failed(batch, SpoolError("spool write interrupted", disk_full=False))
            raise
        self._next_id += len(records)
        self._finished(bool(deletes or progress))
        self._committed(batch, records, groups)

    async def _probe_room(self) -> None:
        """Idle after a write failed for a full disk: look for room every ``ROOM_PROBE_SECS``.

        Without it ``/readyz`` would stay not ready until the next put, which a load balancer
        heeding ``/readyz`` may never send.
        """
        await self._clock.wait(self._wake, ROOM_PROBE_SECS)
        if self._wake.is_set() or self._shut:
            return  # work to do: the write itself will tell
        try:
            room = await self._run(self._spool.has_room)
        except RuntimeError:  # the executor was shut down meanwhile
            return
        if room and self._disk_full:
            self._disk_full = False
            log.info("spool has room again", extra={"destination": self.destination})

    def _unfinished(self, deletes: list[int], progress: Progress, exc: SpoolError | None) -> None:
        """A commit failed: its deletes and progress go again with the next, unless they made it alone."""
        if exc is not None and exc.finished:
            self._finished(True)
            return
        if deletes or progress:
            self._deletes = deletes + self._deletes
            self._dirty.update(i for i, _ in progress)
            if exc is not None and exc.disk_full and not self._stuck:
                self._stuck = True
                self._unstuck.clear()
                log.error(
                    "disk full: deliveries cannot be recorded; nothing more is sent until they are",
                    extra={"destination": self.destination, "records": len(deletes)},
                )

    def _finished(self, recorded: bool) -> None:
        """Deliveries were committed: room was made, and taking may go on."""
        if not recorded:
            return
        self._disk_full = False  # the next put tells whether that was enough room
        if self._stuck:
            self._stuck = False
            self._unstuck.set()
            log.info("spool records deliveries again", extra={"destination": self.destination})

    def _progress(self) -> Progress:
        """``(record id, done flags)`` of the partly delivered records changed since the last commit."""
        dirty, self._dirty = self._dirty, set()
        partial = self._partial
        return [(rid, bytes(partial[rid])) for rid in dirty if rid in partial]

    def _failed(self, batch: list[_PendingWrite], exc: SpoolError) -> None:
        n = sum(len(w.events) for w in batch)
        self._pending_events -= n
        self._pending_bytes -= sum(w.size for w in batch)
        self._room.set()
        if batch and exc.disk_full:
            self._disk_full = True
        if batch:
            # A full disk fails every request: one line per FAILED_LOG_SECS with the count, not one
            # per request (the log may well be on the same full disk).
            self._unlogged_failures += n
            now = self._clock.monotonic()
            if now - self._failure_logged_at >= FAILED_LOG_SECS:
                log.error(
                    "spool write failed; requests refused with 503",
                    extra={
                        "destination": self.destination,
                        "events": self._unlogged_failures,
                        "disk_full": exc.disk_full,
                        "error": str(exc),
                    },
                )
                self._failure_logged_at = now
                self._unlogged_failures = 0
        why = "disk is full" if exc.disk_full else "cannot write"
        for w in batch:
            self._pending_ids.difference_update(map(id, w.events))
            for e in w.events:
                if not e.ack.resolved:
                    e.ack.resolve(AckStatus.ERRORED, "spool write failed")
            if not w.future.done():
                w.future.set_exception(
                    SpoolUnavailable(
                        f"spool for destination {self.destination!r}: {why}", retry_after_secs=self._retry_after
                    )
                )

    def _committed(self, batch: list[_PendingWrite], records: list[Record], groups: list[list[Event]]) -> None:
        if records:
            self._disk_full = False
        size = sum(w.size for w in batch)
        n = sum(len(g) for g in groups)
        self._pending_events -= n
        self._pending_bytes -= size
        self._events += n
        self._bytes += size
        self._ready_events += n
        self._ready_bytes += size
        if records:
            if self._disk_records == 0 and self._hot_bytes + size <= self.memory_bytes:
                hot = self._hot
                for rec, group in zip(records, groups, strict=True):
                    base = rec.id << KEY_BITS
                    self._open[rec.id] = [len(group), len(group)]
                    hot.extend((base | i, e.item, e.source, e.dedup_key) for i, e in enumerate(group))
                self._hot_bytes += size
                self._read_pos = records[-1].id + 1
            else:
                self._disk_records += len(records)
                self._disk_events += n
                self._disk_bytes += size
            self._readable.set()
        self._publish()
        delivered = AckStatus.DELIVERED
        for w in batch:
            self._pending_ids.difference_update(map(id, w.events))
            for e in w.events:
                ack = e.ack
                if not ack.resolved:
                    ack.resolve(delivered, None)
            if not w.future.done():
                w.future.set_result(None)

    # ---------------------------------------------------------------- forwarding

    async def take(self, max_events: int, max_bytes: int, timeout_secs: float) -> list[Event]:
        if not self._shut:
            self._ensure_committer()  # it also commits the deletes of what is taken
        async with self._take_lock:
            while self._stuck and not self._closed:
                await self._unstuck.wait()
            if self._stuck:
                return []  # closing: what is left stays on disk
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_secs
            while self._ready_events < max_events and self._ready_bytes < max_bytes and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0 and self._ready_events:
                    break
                self._readable.clear()
                try:
                    await asyncio.wait_for(self._readable.wait(), remaining if self._ready_events else None)
                except TimeoutError:
                    break
            if self._shut:
                return []
            if not self._hot and not self._retry and self._disk_records:
                await self._read_from_disk()
            out: list[Event] = []
            size = 0
            inflight = self._inflight
            for q in (self._retry, self._hot):
                while q and len(out) < max_events:
                    slot = q[0]
                    nxt = len(slot[1])
                    if out and size + nxt > max_bytes:
                        break
                    q.popleft()
                    if q is self._hot:
                        self._hot_bytes -= nxt
                    inflight[slot[0]] = slot
                    out.append(Event(slot[1], Ack(self, slot[0]), slot[2], slot[3]))
                    size += nxt
            self._ready_events -= len(out)
            self._ready_bytes -= size
            if self._ready_events:
                self._readable.set()
            return out

    async def _read_from_disk(self) -> None:
        """Move the next records that are only on disk into the in-memory queue."""
        try:
            records, last = await self._run(self._spool.read, self._read_pos, DISK_READ_RECORDS)
        except Exception:
            log.exception("spool read failed", extra={"destination": self.destination})
            return
        if self._shut:
            return
        for rec in records:
            base = rec.id << KEY_BITS
            n = len(rec.items)
            size = rec.size
            self._disk_records -= 1
            self._disk_events -= n
            self._disk_bytes -= size
            done = rec.done
            left_n = n if done is None else n - sum(1 for d in done if d)
            if rec.id < self._first_own_id and left_n:
                self._metrics.account(rec.source, self.destination).recovered(left_n)
            if done is None:
                self._open[rec.id] = [n, n]
                self._hot.extend(
                    (base | i, item, rec.source, key)
                    for i, (item, key) in enumerate(zip(rec.items, rec.dedup_keys, strict=True))
                )
                self._hot_bytes += size
                continue
            # Partly delivered before the restart: only the rest is sent again.
            left = [i for i in range(n) if not done[i]]
            skipped = n - len(left)
            skipped_bytes = size - sum(len(rec.items[i]) for i in left)
            self._events -= skipped
            self._bytes -= skipped_bytes
            self._ready_events -= skipped
            self._ready_bytes -= skipped_bytes
            if not left:
                self._deletes.append(rec.id)
                continue
            self._open[rec.id] = [len(left), n]
            self._partial[rec.id] = bytearray(done)
            self._hot.extend((base | i, rec.items[i], rec.source, rec.dedup_keys[i]) for i in left)
            self._hot_bytes += size - skipped_bytes
        read_nothing = last < self._read_pos
        if not read_nothing:
            self._read_pos = last + 1
        if read_nothing and self._disk_records:
            # Nothing (readable) past _read_pos: the counters are off (a damaged record); resync.
            log.error("spool disk counters out of step; resyncing", extra={"destination": self.destination})
            self._ready_events -= self._disk_events
            self._ready_bytes -= self._disk_bytes
            self._events -= self._disk_events
            self._bytes -= self._disk_bytes
            self._disk_records = self._disk_events = self._disk_bytes = 0

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        """Receiver of the taken events' acks: delete finished records, offer ERRORED events again."""
        slot = self._inflight.pop(key, None)
        if slot is None:
            return
        if status == AckStatus.ERRORED:
            if self._shut:
                return  # stays on disk for the next start
            self._requeue[key] = self._clock.call_later(RETAKE_DELAY_SECS, self._offer_again, slot)
            return
        self._events -= 1
        self._bytes -= len(slot[1])
        rid = key >> KEY_BITS
        entry = self._open.get(rid)
        if entry is not None and entry[0] > 1:
            entry[0] -= 1
            flags = self._partial.get(rid)
            if flags is None:
                flags = self._partial[rid] = bytearray(entry[1])
            flags[key & (MAX_RECORD_EVENTS - 1)] = 1
            self._dirty.add(rid)
            if self._idle:
                self._idle = False
                self._wake.set()
            return
        self._open.pop(rid, None)
        if self._partial.pop(rid, None) is not None:
            self._dirty.discard(rid)
        self._deletes.append(rid)
        if self._idle:
            self._idle = False
            self._wake.set()
        self._room.set()  # the gauges are published with the next commit (this is the hot path)

    def _offer_again(self, slot: Slot) -> None:
        self._requeue.pop(slot[0], None)
        if self._shut:
            return
        self._retry.append(slot)
        self._ready_events += 1
        self._ready_bytes += len(slot[1])
        self._readable.set()

    # ---------------------------------------------------------------- shutdown

    def close(self) -> None:
        """No more puts; writes already accepted are still committed; take stops once nothing is ready."""
        self._closed = True
        self._unstuck.set()
        self._readable.set()
        self._room.set()
        self._wake.set()

    def drain_nowait(self) -> list[Event]:
        """Shutdown: commit what is pending (accepted writes, deletes) and close the file.

        Returns [] — spooled rows are not in-memory handles: they stay on disk for the next
        start, and the acks of accepted writes are resolved by their commit.
        """
        self.close()
        self._shutdown_sync()
        return []

    async def aclose(self) -> None:
        """Close the buffer and its file after committing what is pending (tests, tools)."""
        self.close()
        if self._committer is not None and not self._committer.done():
            while self._pending:
                self._wake.set()
                await asyncio.sleep(0.001)
        self._shutdown_sync()

    def _shutdown_sync(self) -> None:
        if self._shut:
            return
        self._shut = True
        self._wake.set()
        self._readable.set()
        for handle in self._requeue.values():
            handle.cancel()
        self._requeue.clear()
        # Wait for a commit in progress, then finish on this thread (a few ms, once).
        self._executor.shutdown(wait=True)
        batch, self._pending = self._pending, []
        deletes, self._deletes = self._deletes, []
        progress = self._progress()
        records, groups = _records(batch, self._next_id)
        try:
            self._spool.write(records, deletes, progress)
        except SpoolError as exc:
            self._failed(batch, exc)
            if (deletes or progress) and not exc.finished:
                log.error(
                    "spool closed with deliveries it could not record; they are sent again at the next start",
                    extra={"destination": self.destination, "records": len(deletes), "error": str(exc)},
                )
        else:
            self._next_id += len(records)
            self._committed(batch, records, groups)
        self._spool.close()
        log.info(
            "spool closed",
            extra={"destination": self.destination, "events_left": self._events, "bytes_left": self._bytes},
        )

    def _publish(self) -> None:
        self._m_events.set(self._events)
        self._m_bytes.set(self._bytes)
