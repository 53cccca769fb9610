"""The durable spool (``buffer: {type: disk}``): durability, forwarding, capacity, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from gateway.acks import AckGroup, AckStatus
from gateway.buffer.clock import Clock
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import DELETE_FLUSH_SECS, RETAKE_DELAY_SECS, DiskBuffer, SpoolUnavailable
from gateway.buffer.spool import DB_NAME
from gateway.errors import BufferFull
from gateway.event import Event
from gateway.telemetry.metrics import Metrics
from tests.support.clock import ManualClock, eventually


def make_events(n: int, *, tag: str = "e", size: int = 20, group: AckGroup | None = None) -> list[Event]:
    g = group or AckGroup(n)
    return [
        Event(orjson.dumps({"event": {"message": f"{tag}-{i}", "pad": "x" * size}}), g.ack(i), "src", f"{tag}-{i}")
        for i in range(n)
    ]


def spooled_rows(path: Path) -> int:
    """Events in the spool file, read with another connection as a restarted process would."""
    db = sqlite3.connect(path / DB_NAME)
    try:
        return int(db.execute("SELECT coalesce(sum(n), 0) FROM spool").fetchone()[0])
    finally:
        db.close()


def messages(events: list[Event]) -> list[str]:
    return [orjson.loads(e.item)["event"]["message"] for e in events]


def disk(tmp_path: Path, *, clock: Clock | None = None, **kw: object) -> DiskBuffer:
    config = BufferConfig.model_validate({"type": "disk", **kw})
    return DiskBuffer("default", tmp_path / "spool", config, Metrics(), clock=clock)


async def take_all(buf: DiskBuffer, n: int) -> list[Event]:
    out: list[Event] = []
    while len(out) < n:
        got = await asyncio.wait_for(buf.take(1000, 10_000_000, 0.01), 5)
        assert got, "the buffer ran dry before every event was taken"
        out.extend(got)
    return out


@pytest.mark.parametrize("interval", [0, 10])
async def test_put_resolves_the_original_acks_only_once_the_rows_are_on_disk(tmp_path: Path, interval: int) -> None:
    buf = disk(tmp_path, fsync_interval_ms=interval)
    group = AckGroup(5)
    events = make_events(5, group=group)
    await buf.put(events)
    assert group.done and group.status == AckStatus.DELIVERED
    assert spooled_rows(tmp_path / "spool") == 5
    assert buf.events == 5 and buf.bytes == sum(len(e.item) for e in events)
    await buf.aclose()


async def test_concurrent_puts_share_group_commits_and_each_is_durable_when_answered(tmp_path: Path) -> None:
    buf = disk(tmp_path, fsync_interval_ms=10)
    reader = sqlite3.connect(tmp_path / "spool" / DB_NAME)
    missing: list[str] = []

    async def one(i: int) -> None:
        await buf.put(make_events(3, tag=f"r{i}"))
        # Read with another connection, as a restarted process would.
        found = reader.execute("SELECT n FROM spool WHERE CAST(dedup AS TEXT) LIKE ?", (f'%"r{i}-0"%',)).fetchone()
        if found is None or found[0] != 3:
            missing.append(f"r{i}")

    await asyncio.gather(*(one(i) for i in range(40)))
    reader.close()
    assert missing == []
    assert spooled_rows(tmp_path / "spool") == 120
    await buf.aclose()


async def test_taken_events_are_new_events_with_the_same_bytes(tmp_path: Path) -> None:
    buf = disk(tmp_path)
    events = make_events(4)
    await buf.put(events)
    taken = await take_all(buf, 4)
    assert [e.item for e in taken] == [e.item for e in events]
    assert all(t is not e for t, e in zip(taken, events, strict=True))
    assert [t.source for t in taken] == ["src"] * 4 and taken[0].dedup_key == "e-0"
    assert not any(t.ack.resolved for t in taken)
    await buf.aclose()


async def test_records_are_deleted_when_delivered_or_rejected_and_errored_events_are_taken_again(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    buf = disk(tmp_path, clock=clock)
    for tag in ("a", "b", "c"):  # one record per put
        await buf.put(make_events(2, tag=tag))
    taken = await take_all(buf, 6)
    for t in taken[:2]:
        t.ack.resolve(AckStatus.DELIVERED, {"hash": "h"})
    for t in taken[2:4]:
        t.ack.resolve(AckStatus.REJECTED, "invalid")  # the sink has dead-lettered them
    for t in taken[4:]:
        t.ack.resolve(AckStatus.ERRORED, "upstream down")
    assert buf.events == 2
    retake = asyncio.create_task(buf.take(2, 10_000_000, 0.01))  # returns as soon as two are ready
    await clock.advance(RETAKE_DELAY_SECS - 0.01)
    assert not retake.done()  # the sink has just backed off: not offered again at once
    await clock.advance(0.01)
    again = await asyncio.wait_for(retake, 5)
    assert messages(again) == ["c-0", "c-1"]
    await buf.aclose()
    assert spooled_rows(tmp_path / "spool") == 2  # the errored pair is still spooled


async def test_what_is_left_at_shutdown_is_replayed_after_a_restart(tmp_path: Path) -> None:
    buf = disk(tmp_path)
    await buf.put(make_events(3, tag="done"))
    await buf.put(make_events(7, tag="left"))
    taken = await take_all(buf, 10)
    for t in taken[:3]:
        t.ack.resolve(AckStatus.DELIVERED)
    buf.close()
    # Shutdown: in-flight batches are resolved ERRORED by the pipeline, then drained.
    for t in taken[3:5]:
        t.ack.resolve(AckStatus.ERRORED, "shutdown")
    assert buf.drain_nowait() == []

    again = disk(tmp_path)
    assert again.events == 7
    replayed = await take_all(again, 7)
    assert sorted(messages(replayed)) == sorted(f"left-{i}" for i in range(7))
    for t in replayed:
        t.ack.resolve(AckStatus.DELIVERED)
    await again.aclose()
    assert spooled_rows(tmp_path / "spool") == 0


async def test_a_request_partly_delivered_before_a_restart_sends_only_the_rest_again(tmp_path: Path) -> None:
    buf = disk(tmp_path)
    await buf.put(make_events(4))
    taken = await take_all(buf, 4)
    taken[0].ack.resolve(AckStatus.DELIVERED)
    taken[1].ack.resolve(AckStatus.REJECTED, "dead-lettered")
    assert buf.drain_nowait() == []
    again = disk(tmp_path)
    rest = await take_all(again, 2)
    assert sorted(messages(rest)) == ["e-2", "e-3"] and again.events == 2
    for t in rest:
        t.ack.resolve(AckStatus.DELIVERED)
    await again.aclose()
    assert spooled_rows(tmp_path / "spool") == 0


async def test_a_partly_delivered_record_read_back_from_disk_sends_only_the_rest(tmp_path: Path) -> None:
    clock = ManualClock()
    buf = disk(tmp_path, clock=clock)
    await buf.put(make_events(3, tag="a"))
    await buf.put(make_events(3, tag="b"))
    taken = await take_all(buf, 6)
    for t in taken:
        if messages([t])[0] in ("a-0", "b-2"):
            t.ack.resolve(AckStatus.DELIVERED)

    def saved() -> int:
        db = sqlite3.connect(tmp_path / "spool" / DB_NAME)
        try:
            return int(db.execute("SELECT count(*) FROM spool WHERE done IS NOT NULL").fetchone()[0])
        finally:
            db.close()

    # The progress is saved with the next commit: a write's, or alone after DELETE_FLUSH_SECS.
    await clock.when_waiting()
    assert saved() == 0
    await clock.advance(DELETE_FLUSH_SECS)
    await eventually(lambda: saved() == 2, "the progress was not saved")
    # A crash now: the image on disk is what the next start finds.
    crash = tmp_path / "image"
    crash.mkdir()
    for suffix in ("", "-wal"):
        src = tmp_path / "spool" / f"{DB_NAME}{suffix}"
        if src.exists():
            (crash / f"{DB_NAME}{suffix}").write_bytes(src.read_bytes())
    await buf.aclose()
    again = DiskBuffer("default", crash, BufferConfig(type="disk"), Metrics())
    assert sorted(messages(await take_all(again, 4))) == ["a-1", "a-2", "b-0", "b-1"]
    await again.aclose()


async def test_rows_beyond_the_memory_share_are_read_back_from_disk_in_order(tmp_path: Path) -> None:
    buf = disk(tmp_path, memory_bytes=0, fsync_interval_ms=0)
    for i in range(5):
        await buf.put(make_events(20, tag=f"b{i}"))
    taken = await take_all(buf, 100)
    assert messages(taken) == [f"b{i}-{j}" for i in range(5) for j in range(20)]
    await buf.aclose()


async def test_a_full_spool_refuses_with_429_and_keeps_everything_it_accepted(tmp_path: Path) -> None:
    buf = disk(tmp_path, max_bytes=4096)
    accepted = 0
    with pytest.raises(BufferFull) as info:
        for i in range(100):
            await buf.put(make_events(5, tag=f"r{i}", size=100))
            accepted += 5
    assert info.value.http_status == 429 and info.value.retry_after_secs
    assert accepted > 0 and buf.fill_ratio <= 1.0
    assert spooled_rows(tmp_path / "spool") == accepted
    # Room comes back once the upstream has taken and accepted events.
    for t in await take_all(buf, accepted):
        t.ack.resolve(AckStatus.DELIVERED)
    await buf.put(make_events(5, tag="after", size=100))
    await buf.aclose()


async def test_max_events_bounds_the_spool_only_when_configured(tmp_path: Path) -> None:
    bounded = disk(tmp_path / "a", max_events=5)
    await bounded.put(make_events(5))
    with pytest.raises(BufferFull):
        await bounded.put(make_events(1))
    await bounded.aclose()
    unbounded = disk(tmp_path / "b")
    assert unbounded.max_events is None
    await unbounded.aclose()


async def test_a_full_disk_answers_503_and_never_acknowledges_what_was_not_written(tmp_path: Path) -> None:
    buf = disk(tmp_path, max_bytes=1 << 30)
    await buf.put(make_events(5))
    db = buf._spool.connection
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.execute(f"PRAGMA max_page_count={pages}")  # fault injection: SQLITE_FULL on growth
    group = AckGroup(200)
    with pytest.raises(SpoolUnavailable) as info:
        await buf.put(make_events(200, size=2000, group=group))
    assert info.value.http_status == 503 and info.value.retry_after_secs
    # Nothing was acknowledged as delivered: the acks say ERRORED, the webhook answers 503.
    assert group.done and group.status == AckStatus.ERRORED and not group.results
    assert spooled_rows(tmp_path / "spool") == 5
    db.execute("PRAGMA max_page_count=1073741823")
    await buf.put(make_events(3, tag="later"))
    assert buf.events == 8
    await buf.aclose()


async def test_put_with_wait_blocks_until_room_is_made(tmp_path: Path) -> None:
    buf = disk(tmp_path, max_events=2)
    await buf.put(make_events(2))
    waiter = asyncio.create_task(buf.put(make_events(2, tag="w"), wait=True))
    for _ in range(20):  # it runs up to its wait for room, and no further
        await asyncio.sleep(0)
    assert not waiter.done()
    for t in await take_all(buf, 2):
        t.ack.resolve(AckStatus.DELIVERED)
    await asyncio.wait_for(waiter, 5)
    assert buf.events == 2
    await buf.aclose()


async def test_a_closed_spool_refuses_puts_and_take_ends_when_nothing_is_ready(tmp_path: Path) -> None:
    buf = disk(tmp_path)
    await buf.put(make_events(2))
    buf.close()
    assert len(await buf.take(10, 100_000, 5)) == 2
    assert await buf.take(10, 100_000, 5) == []
    with pytest.raises(BufferFull):
        await buf.put(make_events(1))
    assert buf.drain_nowait() == []


async def test_metrics_report_what_the_spool_holds(tmp_path: Path) -> None:
    metrics, clock = Metrics(), ManualClock()
    buf = DiskBuffer("default", tmp_path / "s", BufferConfig(type="disk"), metrics, clock=clock)
    await buf.put(make_events(4))

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("gateway_buffer_events", {"destination": "default"})

    assert gauge() == 4
    for t in await take_all(buf, 4):
        t.ack.resolve(AckStatus.DELIVERED)
    # Published with the next (batched) delete commit, DELETE_FLUSH_SECS later with no write.
    await clock.when_waiting()
    await clock.advance(DELETE_FLUSH_SECS)
    await eventually(lambda: gauge() == 0, "the gauge was not published")
    await buf.aclose()


async def test_a_put_retried_after_its_caller_timed_out_writes_the_events_once(tmp_path: Path) -> None:
    clock = ManualClock()
    buf = disk(tmp_path, clock=clock, fsync_interval_ms=200)
    await buf.put(make_events(1, tag="first"))  # the next commit is 200 ms away
    events = make_events(5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(buf.put(events, wait=True), 0.01)  # as a Kafka source slices its wait
    await buf.put(events, wait=True)  # the same events again: already on their way, not written twice
    assert not any(e.ack.resolved for e in events)
    await clock.when_waiting()  # the group commit, 200 ms after the first
    await clock.advance(0.2)
    await eventually(lambda: all(e.ack.resolved for e in events), "the commit did not come")
    await buf.aclose()
    assert spooled_rows(tmp_path / "spool") == 6


async def test_replayed_rows_are_deleted_once_delivered_without_waiting_for_new_writes(tmp_path: Path) -> None:
    first = disk(tmp_path)
    await first.put(make_events(3))
    first.drain_nowait()
    clock = ManualClock()
    again = disk(tmp_path, clock=clock)
    for t in await take_all(again, 3):
        t.ack.resolve(AckStatus.DELIVERED)
    await clock.when_waiting()
    await clock.advance(DELETE_FLUSH_SECS)
    await eventually(lambda: spooled_rows(tmp_path / "spool") == 0, "the replayed rows were not deleted")
    await again.aclose()
