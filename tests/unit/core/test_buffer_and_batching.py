import asyncio

import orjson
import pytest

from gateway.acks import AckGroup, AckStatus
from gateway.batching import Batch
from gateway.buffer.memory import MemoryBuffer
from gateway.errors import BufferFull
from gateway.event import Event
from gateway.sinks.pangea.request_builder import log_body
from gateway.telemetry.metrics import Metrics


def events(n: int, group: AckGroup | None = None, size: int = 10) -> list[Event]:
    g = group or AckGroup(n)
    return [Event(orjson.dumps({"event": {"message": "x" * size, "n": i}}), g.ack(i), "test") for i in range(n)]


async def test_full_buffer_refuses_the_whole_request_instead_of_growing() -> None:
    metrics = Metrics()
    buf = MemoryBuffer("d", max_events=5, max_bytes=10_000, metrics=metrics)
    await buf.put(events(4))
    with pytest.raises(BufferFull) as info:
        await buf.put(events(2))
    assert info.value.http_status == 429 and info.value.retry_after_secs
    assert buf.events == 4
    assert metrics.registry.get_sample_value("gateway_buffer_events", {"destination": "d"}) == 4


async def test_buffer_bounds_bytes_too() -> None:
    buf = MemoryBuffer("d", max_events=1000, max_bytes=2048, metrics=Metrics())
    await buf.put(events(10, size=100))
    with pytest.raises(BufferFull):
        await buf.put(events(10, size=100))
    assert buf.fill_ratio >= 0.5


async def test_take_returns_a_partial_batch_after_the_timeout() -> None:
    buf = MemoryBuffer("d", max_events=100, max_bytes=100_000, metrics=Metrics())
    await buf.put(events(3))
    got = await buf.take(max_events=10, max_bytes=100_000, timeout_secs=0.01)
    assert len(got) == 3 and buf.events == 0


async def test_take_caps_by_events_and_bytes() -> None:
    buf = MemoryBuffer("d", max_events=100, max_bytes=100_000, metrics=Metrics())
    evs = events(10, size=100)
    await buf.put(evs)
    first = await buf.take(max_events=4, max_bytes=100_000, timeout_secs=0.01)
    assert first == evs[:4]
    second = await buf.take(max_events=100, max_bytes=2 * len(evs[4].item), timeout_secs=0.01)
    assert second == evs[4:6]


async def test_a_taker_filling_its_batch_wakes_once_it_is_full_and_other_takers_wait_their_turn() -> None:
    buf = MemoryBuffer("d", max_events=1000, max_bytes=100_000, metrics=Metrics())
    wakes = 0
    real_pop, real_wait = buf._pop, buf._readable.wait

    def counting_pop(max_events: int, max_bytes: int) -> list[Event]:
        nonlocal wakes
        wakes += 1
        return real_pop(max_events, max_bytes)

    async def counting_wait() -> bool:
        waits.append(1)
        return await real_wait()

    waits: list[int] = []
    buf._pop = counting_pop  # type: ignore[method-assign]  # counts how often a taker forms a batch
    buf._readable.wait = counting_wait  # type: ignore[method-assign]  # ... and waits on the buffer
    # Eight delivery workers, as `max_in_flight: 8` starts, each asking for batches of 5.
    takers = [asyncio.ensure_future(buf.take(5, 100_000, 60)) for _ in range(8)]
    await asyncio.sleep(0)  # all eight waiting on an empty buffer
    for _ in range(4):  # four puts of one event: below the batch, so no taker may return
        await buf.put(events(1))
        await asyncio.sleep(0)
    assert not any(t.done() for t in takers) and wakes == 0
    assert len(waits) == 1  # one taker waited for the first event; no put woke the others
    await buf.put(events(6))  # now 10 buffered: two full batches, without waiting for the 60 s
    first = await asyncio.wait_for(asyncio.shield(takers[0]), 5)
    second = await asyncio.wait_for(asyncio.shield(takers[1]), 5)
    assert len(first) == 5 and len(second) == 5 and wakes == 2
    assert not any(t.done() for t in takers[2:])
    buf.close()  # closing wakes the taker filling its batch; the rest find it closed and empty
    assert [await t for t in takers[2:]] == [[]] * 6


async def test_put_with_wait_blocks_until_room_is_made() -> None:
    buf = MemoryBuffer("d", max_events=2, max_bytes=100_000, metrics=Metrics())
    await buf.put(events(2))
    waiter = asyncio.create_task(buf.put(events(2), wait=True))
    await asyncio.sleep(0)
    assert not waiter.done()
    await buf.take(10, 100_000, 0.001)
    await asyncio.wait_for(waiter, 1)
    assert buf.events == 2


async def test_closed_buffer_drains_then_returns_empty() -> None:
    buf = MemoryBuffer("d", max_events=10, max_bytes=100_000, metrics=Metrics())
    await buf.put(events(2))
    buf.close()
    assert len(await buf.take(10, 100_000, 5)) == 2
    assert await buf.take(10, 100_000, 5) == []
    with pytest.raises(BufferFull):
        await buf.put(events(1))


def test_log_body_joins_the_event_bytes_into_a_v2_log_request() -> None:
    evs = events(3)
    body = orjson.loads(log_body(evs, "pci_1", verbose=True))
    assert body == {
        "events": [orjson.loads(e.item) for e in evs],
        "config_id": "pci_1",
        "verbose": True,
    }
    assert orjson.loads(log_body([evs[2]], None))["events"] == [orjson.loads(evs[2].item)]


async def test_batch_resolve_all_settles_the_source_group() -> None:
    group = AckGroup(3)
    batch = Batch("d", events(3, group))
    batch.resolve_all(AckStatus.ERRORED, "shutdown")
    assert await group.wait() == AckStatus.ERRORED


def test_batches_are_formed_per_credential_and_v1_calls_go_alone() -> None:
    g = AckGroup(5)
    mk = lambda n, **kw: Event(b'{"event":{"message":"m%d"}}' % n, g.ack(n), "sdk", **kw)  # noqa: E731
    evs = [
        mk(0),
        mk(1, credential="Bearer a"),
        mk(2),
        mk(3, credential="Bearer a"),
        mk(4, v1_members=b',"verbose":true,"prev_root":"r"'),
    ]
    batches = Batch.split("d", evs)
    assert [(b.credential, [e.item[-5:-3] for e in b.events]) for b in batches] == [
        (None, [b"m0", b"m2"]),
        ("Bearer a", [b"m1", b"m3"]),
        (None, [b"m4"]),
    ]
    # The Pangea sink sends a lone v1 event to /v1/log, with the caller's credential if any.
    from gateway.sinks.pangea.request_builder import log_body, v1_log_body

    assert orjson.loads(v1_log_body(batches[2].events[0], "pci_x")) == {
        "event": {"message": "m4"},
        "verbose": True,
        "prev_root": "r",
        "config_id": "pci_x",
    }
    assert orjson.loads(log_body(batches[0].events, "pci_x")) == {
        "events": [{"event": {"message": "m0"}}, {"event": {"message": "m2"}}],
        "config_id": "pci_x",
    }
    same = Batch.split("d", [mk(0), mk(2)])
    assert len(same) == 1 and same[0].credential is None
