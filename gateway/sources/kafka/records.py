"""Fetched records handed over as aiokafka decoded them, without a ``ConsumerRecord`` each.

Before ``getmany`` returns, aiokafka wraps every record it decoded (a C ``DefaultRecord``, or
a ``LegacyRecord`` for old message formats) in a ``ConsumerRecord``: eleven fields, the key
and value sizes measured, the headers copied into a tuple, through two Python calls.  That
costs ~0.5 µs a record (0.80 against 0.29 µs, getall of 4,000 records), a sixth of what the
gateway spends on a Kafka event, and the source reads none of it beyond ``offset``, ``key``,
``value`` and ``headers``, which the decoded record already has.

:func:`install` swaps aiokafka's ``PartitionRecords`` for a subclass that, only for a
consumer asking for it by passing :func:`records_as_decoded` as its ``value_deserializer``,
hands out the decoded records themselves.  Everything else about fetching stays aiokafka's:
CRC checks, skipped control batches and positions are kept as its ``read_uncommitted``
reading does them, and a ``read_committed`` consumer gets aiokafka's reading in full (aborted
transactions), records unwrapped.  Any other consumer in the process gets
``ConsumerRecord``\\ s as before.

This reaches into aiokafka's internals, so before swapping anything it checks that the fetcher
builds ``PartitionRecords`` by name and reads a small real fetch both ways; if anything differs
or fails it does nothing: the source
then gets ``ConsumerRecord``\\ s (:func:`records_as_decoded` is the identity, as a
deserializer) and works the same, only slower.
``tests/unit/kafka/test_kafka_records.py`` compares both ways over real record batches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)


class KafkaRecord(Protocol):
    """What the source reads of a consumed message: an aiokafka ``ConsumerRecord``, or the
    decoded record :func:`install` hands out instead (aiokafka's ``DefaultRecord``); both have
    these fields (checked once by :func:`install`, as they come from aiokafka's internals)."""

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


_installed: bool | None = None


def records_as_decoded(value: bytes | None) -> bytes | None:
    """The ``value_deserializer`` that asks for decoded records: the identity on the value, so
    a consumer given it still reads the raw bytes if :func:`install` could not take effect."""
    return value


def install() -> bool:
    """Make consumers built with :func:`records_as_decoded` get decoded records; idempotent.

    Returns whether it took effect (``False``: this aiokafka is not shaped as expected).
    """
    global _installed
    if _installed is not None:
        return _installed
    _installed = False
    try:
        from aiokafka.consumer import fetcher
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        return False
    try:
        # The fetcher must build PartitionRecords by that name, for a swapped class to be used.
        codes = [getattr(getattr(f, "__code__", None), "co_names", ()) for f in vars(fetcher.Fetcher).values()]
        decoded = _decoded_class(fetcher) if any("PartitionRecords" in names for names in codes) else None
        agrees = decoded is not None and _reads_alike(fetcher.PartitionRecords, decoded)
    except Exception:  # an internal it relies on is gone or changed
        agrees = False
    if not agrees:
        log.info("aiokafka's record reading is not as expected: Kafka records are wrapped as usual")
        return False
    fetcher.PartitionRecords = decoded
    _installed = True
    return True


def _decoded_class(fetcher: Any) -> Any:
    """aiokafka's ``PartitionRecords`` subclassed to hand decoded records to consumers that ask."""
    stock = fetcher.PartitionRecords
    read_uncommitted = fetcher.READ_UNCOMMITTED
    corrupt = fetcher.Errors.CorruptRecordException

    class _AsDecoded(stock):  # type: ignore[misc, valid-type]
        """aiokafka's ``PartitionRecords``, handing out decoded records to consumers that ask."""

        next_fetch_offset: int

        def _asked(self) -> bool:
            return self._value_deserializer is records_as_decoded

        def __iter__(self) -> Any:
            # ``FetchResult.getall`` loops ``for msg in`` this: the generator itself spares a
            # Python-level __next__ call per record.
            if not self._asked():
                return self
            it = self._records_iterator
            return it if it is not None else iter(())

        def _unpack_records(self) -> Any:
            if not self._asked() or self._isolation_level != read_uncommitted:
                return super()._unpack_records()  # transactions: aiokafka's own reading, in full
            return self._decoded_records()

        def _decoded_records(self) -> Any:
            """aiokafka's ``_unpack_records`` for ``read_uncommitted``, less the wrapping."""
            records = self._records
            while records.has_next():
                batch = records.next_batch()
                if self._check_crcs and not batch.validate_crc():
                    raise corrupt(f"Invalid CRC - {self._tp}")
                if not batch.is_control_batch:  # control batches are skipped, as aiokafka does
                    for record in batch:
                        offset = record.offset
                        if offset < self.next_fetch_offset:
                            continue  # before the fetch position (the broker sends whole batches)
                        self.next_fetch_offset = offset + 1
                        yield record
                self.next_fetch_offset = batch.next_offset

        def _consumer_record(self, tp: Any, record: Any) -> Any:
            if self._asked():
                return record
            return super()._consumer_record(tp, record)

    _AsDecoded.__name__ = _AsDecoded.__qualname__ = "PartitionRecords"
    _AsDecoded.__module__ = stock.__module__
    return _AsDecoded


def _reads_alike(stock: Any, decoded: Any) -> bool:
    """Whether ``decoded`` reads a small real fetch (two record batches, keys, headers, a fetch
    position inside the first batch) exactly as ``stock`` does: the same records, fields and
    next position.  Checked once, before anything is swapped."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    data = b""
    for base in (0, 2):
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
            base_sequence=-1, batch_size=1 << 16,
        )  # fmt: skip
        builder.append(0, timestamp=None, key=None, value=b"v%d" % base, headers=[])
        builder.append(1, timestamp=None, key=b"k", value=b"w%d" % base, headers=[("h", b"x")])
        batch = bytes(builder.build())
        data += base.to_bytes(8, "big") + batch[8:]  # the base offset a broker would give it
    tp = TopicPartition("self-check", 0)
    wrapped = stock(tp, MemoryRecords(data), [], 1, None, None, True, 0)
    unwrapped = decoded(tp, MemoryRecords(data), [], 1, None, records_as_decoded, True, 0)
    a, b = list(wrapped), list(iter(unwrapped))
    fields = [(r.offset, r.key, r.value, list(r.headers)) for r in a]
    return (
        len(a) == 3
        and fields == [(r.offset, r.key, r.value, list(r.headers)) for r in b]
        and wrapped.next_fetch_offset == unwrapped.next_fetch_offset == 4
    )
