"""Decoded records (records.py) against aiokafka's own ConsumerRecords, over real record batches."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord, TopicPartition

from gateway.event import Event
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.records import install, records_as_decoded
from tests.unit.kafka.test_kafka_consume import new_source

TP = TopicPartition("audit", 3)


def v2_batch(base_offset: int, records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> bytes:
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
        batch_size=1 << 20,
    )  # fmt: skip
    for i, (key, value, headers) in enumerate(records):
        b.append(i, timestamp=1_700_000_000_000 + i, key=key, value=value, headers=headers)
    data = bytes(b.build())
    return struct.pack(">q", base_offset) + data[8:]  # the broker assigns the base offset


def v1_message_set(base_offset: int, values: list[bytes]) -> bytes:
    b = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 20)
    for i, value in enumerate(values):
        b.append(base_offset + i, timestamp=1_700_000_000_000, key=b"k%d" % i, value=value)
    return bytes(b.build())


def as_control_batch(batch: bytes) -> bytes:
    """``batch`` with its control flag set (attributes bit 5) and its CRC-32C made right again."""
    attributes = struct.unpack_from(">h", batch, 21)[0] | 0x20
    body = struct.pack(">h", attributes) + batch[23:]
    return batch[:17] + struct.pack(">I", calc_crc32c(body)) + body


class _Position:
    """The consumer's assignment state of one partition, as FetchResult reads and moves it."""

    active = True
    paused = False

    def __init__(self, position: int) -> None:
        self.position = position

    def state_value(self, tp: TopicPartition) -> _Position:
        return self

    def consumed_to(self, offset: int) -> None:
        self.position = offset


def read(data: bytes, fetch_offset: int, deserializer: Any, isolation_level: int = 0) -> tuple[list[Any], int]:
    """What getmany would return of ``data`` (fetched from ``fetch_offset``), and the next
    fetch position, through whatever PartitionRecords aiokafka's fetcher builds now."""
    records = fetcher.PartitionRecords(
        TP, MemoryRecords(data), [], fetch_offset, None, deserializer, True, isolation_level
    )
    state = _Position(fetch_offset)
    result = fetcher.FetchResult(TP, assignment=state, partition_records=records, backoff=0)
    out = result.getall()
    assert not result.has_more()
    return out, state.position


def read_in_polls(data: bytes, deserializer: Any, max_records: int) -> list[tuple[list[int], int]]:
    """getall(max_records) until nothing is left: each poll's offsets and the position after it."""
    records = fetcher.PartitionRecords(TP, MemoryRecords(data), [], 0, None, deserializer, True, 0)
    state = _Position(0)
    result = fetcher.FetchResult(TP, assignment=state, partition_records=records, backoff=0)
    polls = []
    while result.has_more():
        polls.append(([r.offset for r in result.getall(max_records)], state.position))
    return polls


def fields(records: list[Any]) -> list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    return [(r.offset, r.key, r.value, list(r.headers)) for r in records]


def test_the_installed_aiokafka_is_shaped_as_the_decoded_records_need() -> None:
    # Fails, rather than silently going slow, when an aiokafka upgrade changes the internals.
    assert install() is True
    assert install() is True  # idempotent


def test_decoded_records_carry_what_consumer_records_carry_from_the_fetch_offset_on() -> None:
    install()
    data = v2_batch(
        10,
        [
            (None, b'{"event":{"message":"a"}}', []),
            (b"tenant-1", b'{"event":{"message":"b"}}', [("trace", b"t-1"), ("trace", b"t-2")]),
            (None, None, []),  # a tombstone
        ],
    ) + v2_batch(13, [(b"k", b"last", [("h", b"")])])
    wrapped, wrapped_next = read(data, 11, None)  # fetched from inside the first batch (the broker sends it whole)
    decoded, decoded_next = read(data, 11, records_as_decoded)
    assert all(type(r) is ConsumerRecord for r in wrapped)
    assert not any(isinstance(r, ConsumerRecord) for r in decoded)
    assert (
        fields(decoded)
        == fields(wrapped)
        == [
            (11, b"tenant-1", b'{"event":{"message":"b"}}', [("trace", b"t-1"), ("trace", b"t-2")]),
            (12, None, None, []),
            (13, b"k", b"last", [("h", b"")]),
        ]
    )
    assert decoded_next == wrapped_next == 14


def test_control_batches_are_skipped_and_passed_as_aiokafka_does() -> None:
    install()
    data = (
        v2_batch(0, [(None, b"a", []), (None, b"b", [])])
        + as_control_batch(v2_batch(2, [(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00", [])]))
        + v2_batch(3, [(None, b"c", [])])
    )
    wrapped, wrapped_next = read(data, 0, None)
    decoded, decoded_next = read(data, 0, records_as_decoded)
    assert fields(decoded) == fields(wrapped) == [(0, None, b"a", []), (1, None, b"b", []), (3, None, b"c", [])]
    assert decoded_next == wrapped_next == 4


def test_polls_of_a_few_records_stop_and_resume_at_the_same_positions() -> None:
    install()
    data = v2_batch(0, [(None, b"%d" % i, []) for i in range(5)]) + v2_batch(5, [(None, b"5", [])])
    expected = [([0, 1], 2), ([2, 3], 4), ([4, 5], 6), ([], 6)]  # the last poll finds the end
    assert read_in_polls(data, None, 2) == read_in_polls(data, records_as_decoded, 2) == expected


def test_a_corrupt_batch_is_refused_as_aiokafka_refuses_it() -> None:
    install()
    data = bytearray(v2_batch(0, [(None, b"intact?", [])]))
    data[-3] ^= 0xFF  # a flipped byte inside the record
    for deserializer in (None, records_as_decoded):
        with pytest.raises(CorruptRecordException):
            read(bytes(data), 0, deserializer)


def test_a_read_committed_consumer_reads_through_aiokafka_in_full_unwrapped() -> None:
    install()
    data = v2_batch(7, [(b"k", b"v", [("h", b"1")])])
    wrapped, _ = read(data, 7, None, isolation_level=1)
    decoded, decoded_next = read(data, 7, records_as_decoded, isolation_level=1)
    assert not isinstance(decoded[0], ConsumerRecord)
    assert fields(decoded) == fields(wrapped) == [(7, b"k", b"v", [("h", b"1")])]
    assert decoded_next == 8


def test_old_message_formats_are_decoded_the_same() -> None:
    install()
    data = v1_message_set(5, [b"one", b"two", b"three"])
    wrapped, wrapped_next = read(data, 6, None)
    decoded, decoded_next = read(data, 6, records_as_decoded)
    assert fields(decoded) == fields(wrapped) == [(6, b"k1", b"two", []), (7, b"k2", b"three", [])]
    assert decoded_next == wrapped_next == 8


def test_records_as_decoded_is_the_identity_where_it_is_a_plain_deserializer() -> None:
    # What a consumer given it reads when install() could not take effect: ConsumerRecords
    # with the raw value.
    stock = fetcher.PartitionRecords.__mro__[1] if install() else fetcher.PartitionRecords
    records = stock(TP, MemoryRecords(v2_batch(0, [(b"k", b"v", [])])), [], 0, None, records_as_decoded, True, 0)
    (r,) = list(records)
    assert type(r) is ConsumerRecord and (r.key, r.value, r.topic, r.partition) == (b"k", b"v", "audit", 3)


async def test_the_source_consumes_decoded_records_and_dead_letters_their_poison_whole() -> None:
    install()
    data = v2_batch(
        0,
        [
            (None, b'{"event":{"message":"fine"}}', []),
            (b"key-1", b"{broken", [("tenant", b"t1")]),
            (None, b'{"event":{"message":"also fine"}}', []),
        ],
    )
    decoded, _ = read(data, 0, records_as_decoded)
    src = new_source()
    tracker = PartitionTracker(TP.topic, TP.partition)
    out: list[Event] = []
    src._consume(TP, decoded, tracker, out)
    assert [orjson.loads(e.item)["event"]["message"] for e in out] == ["fine", "also fine"]
    (job,) = list(src.dlq._queue)
    assert (job.topic, job.partition, job.offset, job.reason) == ("audit", 3, 1, "decode_error")
    assert (job.key, job.value, job.headers) == (b"key-1", b"{broken", [("tenant", b"t1")])


async def test_the_source_asks_for_decoded_records_and_its_configured_read_ahead() -> None:
    src = new_source(max_partition_fetch_bytes=123_456, fetch_max_bytes=7_654_321)
    consumer = src._new_consumer()  # built, never started
    try:
        # aiokafka keeps the settings as given, to build its Fetcher with them on start().
        assert consumer._value_deserializer is records_as_decoded
        assert (consumer._max_partition_fetch_bytes, consumer._fetch_max_bytes) == (123_456, 7_654_321)
    finally:
        await consumer.stop()
    assert new_source().config.max_partition_fetch_bytes == 4 * 1024 * 1024


def test_the_start_up_check_refuses_a_reading_that_differs_from_aiokafkas() -> None:
    from gateway.sources.kafka import records

    assert install()
    installed = fetcher.PartitionRecords
    stock = installed.__mro__[1]
    assert records._reads_alike(stock, installed) is True

    class IgnoresThePosition(installed):  # type: ignore[misc, valid-type]
        def _decoded_records(self) -> Any:
            while self._records.has_next():
                yield from self._records.next_batch()

    class Crashes(installed):  # type: ignore[misc, valid-type]
        def _decoded_records(self) -> Any:
            raise AttributeError("an internal that is gone")
            yield

    assert records._reads_alike(stock, IgnoresThePosition) is False
    with pytest.raises(AttributeError):
        records._reads_alike(stock, Crashes)


@pytest.mark.parametrize("outcome", ["differs", "crashes"])
def test_install_leaves_aiokafka_as_it_is_when_the_check_fails(monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    from gateway.sources.kafka import records

    install()
    stock = fetcher.PartitionRecords.__mro__[1]
    monkeypatch.setattr(fetcher, "PartitionRecords", stock)  # as before any install
    monkeypatch.setattr(records, "_installed", None)

    def check(stock: Any, decoded: Any) -> bool:
        if outcome == "crashes":
            raise AttributeError("an internal that is gone")
        return False

    monkeypatch.setattr(records, "_reads_alike", check)
    assert install() is False
    assert fetcher.PartitionRecords is stock
    records_read, _ = read(v2_batch(0, [(b"k", b"v", [])]), 0, records_as_decoded)
    assert type(records_read[0]) is ConsumerRecord and records_read[0].value == b"v"  # wrapped, as before
