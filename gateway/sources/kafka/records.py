"""Fetched records handed over as aiokafka decoded them, without a ``ConsumerRecord`` each.

Before ``getmany`` returns, aiokafka wraps every record it decoded (a C ``DefaultRecord``, or
a ``LegacyRecord`` for old message formats) in a ``ConsumerRecord``: eleven fields, the key
and value sizes measured, the headers copied into a tuple.  That costs ~0.4 µs a record, a
tenth of what the gateway spends on a Kafka event, and the source reads none of it beyond
``offset``, ``key``, ``value`` and ``headers``, which the decoded record already has.

:func:`install` swaps aiokafka's ``PartitionRecords`` for :class:`_AsDecoded`, which leaves
everything about fetching as it is (CRC checks, control batches, aborted transactions,
positions) and only hands out the decoded record itself, and only for a consumer that asks
for it by passing :func:`records_as_decoded` as its ``value_deserializer``.  Any other
consumer in the process gets ``ConsumerRecord``\\ s as before.

This reaches into aiokafka's internals, so it checks what it relies on and otherwise does
nothing: the source then gets ``ConsumerRecord``\\ s (:func:`records_as_decoded` is the
identity, as a deserializer) and works the same, only slower.
``tests/unit/kafka/test_kafka_records.py`` compares both ways over real record batches.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

_installed: bool | None = None
_NO_CODE = (lambda: None).__code__  # what has no code names nothing


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
    stock = getattr(fetcher, "PartitionRecords", None)
    method = getattr(stock, "_consumer_record", None)
    if stock is None or method is None or list(inspect.signature(method).parameters) != ["self", "tp", "record"]:
        log.info("aiokafka's PartitionRecords is not as expected: Kafka records are wrapped as usual")
        return False
    codes = [getattr(f, "__code__", _NO_CODE) for f in vars(fetcher.Fetcher).values()]
    if not any("PartitionRecords" in code.co_names for code in codes):
        log.info("aiokafka's Fetcher does not build PartitionRecords by name: Kafka records are wrapped as usual")
        return False

    class _AsDecoded(stock):  # type: ignore[misc, valid-type]
        """aiokafka's ``PartitionRecords``, handing out decoded records to consumers that ask."""

        def _consumer_record(self, tp: Any, record: Any) -> Any:
            if self._value_deserializer is records_as_decoded:
                return record
            return super()._consumer_record(tp, record)

    _AsDecoded.__name__ = _AsDecoded.__qualname__ = "PartitionRecords"
    _AsDecoded.__module__ = stock.__module__
    fetcher.PartitionRecords = _AsDecoded
    _installed = True
    return True
