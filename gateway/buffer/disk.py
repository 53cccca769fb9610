"""The durable spool: a :class:`~gateway.buffer.base.Buffer` on SQLite (WAL) with group commit.

What a 2xx means with ``buffer: {type: disk}``: the request's events are written to the
spool and fsynced.  :meth:`DiskBuffer.put` appends the events' item bytes (with their source
and dedup key), waits for the commit that covers them, and only then resolves the
**original** acks DELIVERED, so the webhook answers.  Consequently the Pangea-compatible
``/v2/log`` answer carries no upstream hashes with a disk buffer (``results`` is empty):
the request is answered at durability, before the upstream has seen it.

Forwarding: :meth:`take` returns *new* events (same item bytes) whose acks point at this
buffer.  A row is deleted once its event is DELIVERED, or REJECTED (the sink has then
dead-lettered it); ERRORED leaves the row in place and it is taken again.  On start, every
row left from the previous run is replayed.  At shutdown what is left stays on disk.

Group commit: ``fsync_interval_ms: 0`` commits (and fsyncs, ``synchronous=FULL``) as soon as
a write arrives — writes arriving while a commit runs share the next one; ``N`` commits
every N ms.  Every ``put`` waits for the commit covering it.  Deletes are batched into the
next commit (a lost delete after a crash means a resend, never a loss).

Capacity: ``max_bytes`` (and ``max_events`` when given explicitly) bound the spool; a full
spool refuses with :class:`~gateway.errors.BufferFull` (429 + Retry-After), a failed write
(disk full: ``SQLITE_FULL``, I/O error) with :class:`SpoolUnavailable` (503 + Retry-After).
Neither drops anything already accepted.  Recently written rows are also kept in memory (up
to ``memory_bytes``) so forwarding does not read them back; older ones are read from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.acks import Ack, AckStatus
from gateway.buffer.config import BufferConfig
from gateway.buffer.spool import Spool, SpoolError, SpoolRow
from gateway.errors import BufferFull
from gateway.event import Event
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

DELETE_FLUSH_SECS = 0.2
"""Deletes alone are committed at most this often (they ride along with writes otherwise)."""
RETAKE_DELAY_SECS = 0.5
"""An ERRORED row is offered again after this long (the sink has already backed off)."""
WRITE_RETRY_SECS = 1.0


class SpoolUnavailable(BufferFull):
    """The spool cannot write (disk full, I/O error): 503 with Retry-After, nothing accepted."""

    http_status = 503
    pangea_status = "ServiceNotAvailable"


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


class DiskBuffer:
    """A durable, bounded spool for one destination; see the module docstring."""

    def __init__(
        self,
        destination: str,
        path: Path,
        config: BufferConfig,
        metrics: Metrics,
        retry_after_secs: float = 1.0,
    ) -> None:
        self.destination = destination
        self.path = path
        self.max_bytes = config.max_bytes
        self.max_events = config.max_events if config.max_events_given else None
        self.interval = config.fsync_interval_ms / 1000.0
        self.memory_bytes = config.memory_bytes
        self._retry_after = retry_after_secs
        self._spool = Spool(path)
        stats = self._spool.stats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{destination}")
        # What is in the spool file (committed, not yet deleted).
        self._rows = stats.rows
        self._bytes = stats.bytes
        self._next_id = stats.max_id + 1
        # Accepted by put, waiting for their commit (counted against capacity already).
        self._pending: list[_PendingWrite] = []
        self._pending_ids: set[int] = set()
        self._pending_rows = 0
        self._pending_bytes = 0
        self._deletes: list[int] = []
        # Ready to be taken: retried rows, rows kept in memory, and rows only on disk (id >= _read_pos).
        self._retry: deque[SpoolRow] = deque()
        self._hot: deque[SpoolRow] = deque()
        self._hot_bytes = 0
        self._disk_rows = stats.rows  # everything left from the last run is read back from disk
        self._disk_bytes = stats.bytes
        self._read_pos = 0
        self._ready_rows = stats.rows
        self._ready_bytes = stats.bytes
        self._inflight: dict[int, SpoolRow] = {}
        self._requeue: dict[int, asyncio.TimerHandle] = {}
        self._closed = False
        self._shut = False
        self._wake = asyncio.Event()
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
        if stats.rows:
            log.info(
                "spool replays what was left",
                extra={"destination": destination, "events": stats.rows, "bytes": stats.bytes},
            )

    # ---------------------------------------------------------------- capacity

    @property
    def events(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def fill_ratio(self) -> float:
        ratio = (self._bytes + self._pending_bytes) / self.max_bytes
        if self.max_events is not None:
            ratio = max(ratio, (self._rows + self._pending_rows) / self.max_events)
        return ratio

    def _fits(self, n: int, size: int) -> bool:
        held = self._rows + self._pending_rows
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
            if self._closed:
                raise BufferFull("the gateway is shutting down", retry_after_secs=self._retry_after)
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
                await asyncio.sleep(WRITE_RETRY_SECS)

    async def _write(self, events: list[Event], size: int) -> None:
        loop = asyncio.get_running_loop()
        self._ensure_committer()
        fut: asyncio.Future[None] = loop.create_future()
        fut.add_done_callback(_consume)
        self._pending.append(_PendingWrite(events, size, fut))
        self._pending_ids.update(id(e) for e in events)
        self._pending_rows += len(events)
        self._pending_bytes += size
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
        loop = asyncio.get_running_loop()
        last = 0.0
        while not self._shut:
            if not self._pending:
                if self._deletes:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), DELETE_FLUSH_SECS)
                else:
                    await self._wake.wait()
            self._wake.clear()
            if self._shut:
                return
            if self._pending and self.interval > 0:
                delay = last + self.interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            last = loop.time()
            await self._commit_once()

    async def _commit_once(self) -> None:
        if self._shut:
            return
        batch, self._pending = self._pending, []
        deletes, self._deletes = self._deletes, []
        if not batch and not deletes:
            return
        first = self._next_id
        rows: list[SpoolRow] = []
        nid = first
        for w in batch:
            for e in w.events:
                rows.append((nid, e.source, e.dedup_key, e.item))
                nid += 1
        try:
            await self._run(self._spool.write, rows, deletes)
        except SpoolError as exc:
            self._deletes = deletes + self._deletes
            self._failed(batch, exc)
            return
        except BaseException:
            self._deletes = deletes + self._deletes
            self._failed(batch, SpoolError("spool write interrupted", disk_full=False))
            raise
        self._next_id = nid
        self._committed(batch, rows)

    def _failed(self, batch: list[_PendingWrite], exc: SpoolError) -> None:
        n = sum(len(w.events) for w in batch)
        self._pending_rows -= n
        self._pending_bytes -= sum(w.size for w in batch)
        self._room.set()
        if batch:
            log.error(
                "spool write failed; requests refused with 503",
                extra={"destination": self.destination, "events": n, "disk_full": exc.disk_full, "error": str(exc)},
            )
        why = "disk is full" if exc.disk_full else "cannot write"
        for w in batch:
            for e in w.events:
                self._pending_ids.discard(id(e))
                if not e.ack.resolved:
                    e.ack.resolve(AckStatus.ERRORED, "spool write failed")
            if not w.future.done():
                w.future.set_exception(
                    SpoolUnavailable(
                        f"spool for destination {self.destination!r}: {why}", retry_after_secs=self._retry_after
                    )
                )

    def _committed(self, batch: list[_PendingWrite], rows: list[SpoolRow]) -> None:
        size = sum(w.size for w in batch)
        self._pending_rows -= len(rows)
        self._pending_bytes -= size
        self._rows += len(rows)
        self._bytes += size
        self._ready_rows += len(rows)
        self._ready_bytes += size
        if rows:
            if self._disk_rows == 0 and self._hot_bytes + size <= self.memory_bytes:
                self._hot.extend(rows)
                self._hot_bytes += size
                self._read_pos = rows[-1][0] + 1
            else:
                self._disk_rows += len(rows)
                self._disk_bytes += size
            self._readable.set()
        self._publish()
        for w in batch:
            for e in w.events:
                self._pending_ids.discard(id(e))
                if not e.ack.resolved:
                    e.ack.resolve(AckStatus.DELIVERED, None)
            if not w.future.done():
                w.future.set_result(None)

    # ---------------------------------------------------------------- forwarding

    async def take(self, max_events: int, max_bytes: int, timeout_secs: float) -> list[Event]:
        async with self._take_lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_secs
            while self._ready_rows < max_events and self._ready_bytes < max_bytes and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0 and self._ready_rows:
                    break
                self._readable.clear()
                try:
                    await asyncio.wait_for(self._readable.wait(), remaining if self._ready_rows else None)
                except TimeoutError:
                    break
            if self._shut:
                return []
            out: list[SpoolRow] = []
            size = 0
            for q in (self._retry, self._hot):
                while q and len(out) < max_events:
                    nxt = len(q[0][3])
                    if out and size + nxt > max_bytes:
                        break
                    row = q.popleft()
                    if q is self._hot:
                        self._hot_bytes -= nxt
                    out.append(row)
                    size += nxt
            if len(out) < max_events and self._disk_rows and not self._hot and not (out and size >= max_bytes):
                size += await self._take_from_disk(out, max_events, max_bytes, size)
            self._ready_rows -= len(out)
            self._ready_bytes -= size
            if self._ready_rows:
                self._readable.set()
            return [self._handle(row) for row in out]

    async def _take_from_disk(self, out: list[SpoolRow], max_events: int, max_bytes: int, size: int) -> int:
        want = max_events - len(out)
        try:
            rows = await self._run(self._spool.read, self._read_pos, want)
        except Exception:
            log.exception("spool read failed", extra={"destination": self.destination})
            return 0
        added = 0
        for row in rows:
            nxt = len(row[3])
            if out and size + added + nxt > max_bytes:
                break
            out.append(row)
            added += nxt
            self._read_pos = row[0] + 1
            self._disk_rows -= 1
            self._disk_bytes -= nxt
        if not rows:
            # Nothing past _read_pos: the counters drifted (cannot happen by design); resync.
            log.error("spool disk counters out of step; resyncing", extra={"destination": self.destination})
            self._ready_rows -= self._disk_rows
            self._ready_bytes -= self._disk_bytes
            self._disk_rows = 0
            self._disk_bytes = 0
        return added

    def _handle(self, row: SpoolRow) -> Event:
        self._inflight[row[0]] = row
        return Event(row[3], Ack(self, row[0]), row[1], row[2])

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        """Receiver of the taken events' acks: delete when done, offer again when ERRORED."""
        row = self._inflight.pop(key, None)
        if row is None:
            return
        if status == AckStatus.ERRORED:
            if self._shut:
                return  # stays on disk for the next start
            self._requeue[key] = asyncio.get_running_loop().call_later(RETAKE_DELAY_SECS, self._offer_again, row)
            return
        self._deletes.append(key)
        self._rows -= 1
        self._bytes -= len(row[3])
        self._publish()
        self._room.set()

    def _offer_again(self, row: SpoolRow) -> None:
        self._requeue.pop(row[0], None)
        if self._shut:
            return
        self._retry.append(row)
        self._ready_rows += 1
        self._ready_bytes += len(row[3])
        self._readable.set()

    # ---------------------------------------------------------------- shutdown

    def close(self) -> None:
        """No more puts; writes already accepted are still committed; take stops once nothing is ready."""
        self._closed = True
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
        rows: list[SpoolRow] = []
        nid = self._next_id
        for w in batch:
            for e in w.events:
                rows.append((nid, e.source, e.dedup_key, e.item))
                nid += 1
        try:
            self._spool.write(rows, deletes)
        except SpoolError as exc:
            self._failed(batch, exc)
        else:
            self._next_id = nid
            self._committed(batch, rows)
        self._spool.close()
        log.info(
            "spool closed",
            extra={"destination": self.destination, "events_left": self._rows, "bytes_left": self._bytes},
        )

    def _publish(self) -> None:
        self._m_events.set(self._rows)
        self._m_bytes.set(self._bytes)
