"""The one Kafka dead-letter producer, and its one header vocabulary.

Used by the dead-letter store of ``type: kafka`` (:mod:`gateway.sinks.deadletter.kafka`:
events refused for good, with a local fallback) and by the Kafka source's dead-letter topic
(:mod:`gateway.sources.kafka.deadletter_topic`: poison messages, with the partition
trackers' bookkeeping and retries).  What differs between them is only what they do with a
letter the brokers did not take; producing it, and its headers, are this module's.

Each dead letter is one message (``acks=all``).  Its headers: the original message's own
headers first (a poison message's, ``x-gateway-*`` ones left out), then

* ``x-gateway-reason``: why (``invalid_event``, ``decode_error``, ``upstream_rejected``...);
* ``x-gateway-detail``: the explanation, cut to :data:`~gateway.kafka.producer.MAX_DETAIL_BYTES`;
* ``x-gateway-source`` / ``x-gateway-destination``: the gateway source and destination names;
* ``x-gateway-received-at``: Unix time it was received (or found poison);
* for a poison message only: ``x-gateway-source-topic``, ``x-gateway-source-partition``,
  ``x-gateway-source-offset``, where it was consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.kafka.producer import HEADER_DETAIL, HEADER_REASON, detail_header, produce_each, start_producer

__all__ = [
    "HEADER_DESTINATION",
    "HEADER_DETAIL",
    "HEADER_OFFSET",
    "HEADER_PARTITION",
    "HEADER_REASON",
    "HEADER_RECEIVED_AT",
    "HEADER_SOURCE",
    "HEADER_TOPIC",
    "DeadLetterProducer",
    "KafkaDeadLetter",
    "headers_of",
]

log = logging.getLogger(__name__)

HEADER_SOURCE = "x-gateway-source"
HEADER_DESTINATION = "x-gateway-destination"
HEADER_RECEIVED_AT = "x-gateway-received-at"
HEADER_TOPIC = "x-gateway-source-topic"
HEADER_PARTITION = "x-gateway-source-partition"
HEADER_OFFSET = "x-gateway-source-offset"


@dataclass(slots=True, frozen=True)
class KafkaDeadLetter:
    """One dead letter as a message: where it goes, its key and value, and what its headers say."""

    topic: str
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source: str
    destination: str | None
    received_at: float
    origin: tuple[str, int, int] | None = None
    """A poison message's topic, partition and offset."""
    carried: Sequence[tuple[str, bytes]] = ()
    """A poison message's own headers, kept in front."""


def headers_of(letter: KafkaDeadLetter) -> list[tuple[str, bytes]]:
    """The message headers of ``letter`` (see the module doc)."""
    headers = [(k, v) for k, v in letter.carried if not k.startswith("x-gateway-")]
    headers += [
        (HEADER_REASON, letter.reason.encode()),
        (HEADER_DETAIL, detail_header(letter.detail)),
        (HEADER_SOURCE, letter.source.encode()),
        (HEADER_DESTINATION, (letter.destination or "").encode()),
        (HEADER_RECEIVED_AT, repr(letter.received_at).encode()),
    ]
    if letter.origin is not None:
        topic, partition, offset = letter.origin
        headers += [
            (HEADER_TOPIC, topic.encode()),
            (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode()),
        ]
    return headers


class DeadLetterProducer:
    """Produces dead letters; connects on first use, and again after a failed connect."""

    def __init__(
        self,
        producer_kwargs: dict[str, Any],
        *,
        what: str,
        connect_timeout_secs: float | None = None,
        produce_timeout_secs: float | None = None,
    ) -> None:
        """``what`` names the user in log lines; ``produce_timeout_secs`` bounds waiting for
        the brokers' acknowledgements (None: aiokafka's own request timeout)."""
        self._kwargs = producer_kwargs
        self._what = what
        self._connect_timeout = connect_timeout_secs
        self._produce_timeout = produce_timeout_secs
        self._producer: Any = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def connect(self) -> bool:
        """Connect if not yet connected (one attempt); whether the producer is connected."""
        async with self._lock:
            if self._producer is None:
                try:
                    self._producer = await start_producer(self._kwargs, self._connect_timeout)
                except Exception as exc:  # KafkaError, TimeoutError, OSError: all mean not now
                    log.warning("dead-letter producer cannot connect", extra={"to": self._what, "error": repr(exc)})
                    return False
            return True

    async def produce(self, letters: Sequence[KafkaDeadLetter]) -> list[BaseException | None]:
        """Produce ``letters``: per letter, ``None`` once the brokers have it, or what failed.

        Not connected (see :meth:`connect`) or past ``produce_timeout_secs``: every letter
        fails with ``TimeoutError`` (the ones the brokers did take may be produced again by
        whoever retries: a duplicate dead letter, never a lost one).
        """
        if not letters:
            return []
        if not await self.connect():
            return [TimeoutError("dead-letter producer not connected")] * len(letters)
        messages = [(d.topic, d.key, d.value, headers_of(d)) for d in letters]
        try:
            results = await produce_each(self._producer, messages, self._produce_timeout)
        except TimeoutError as exc:
            return [exc] * len(letters)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def close(self, timeout_secs: float | None = None) -> None:
        """Stop the producer (within ``timeout_secs``); a later :meth:`produce` connects again."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout_secs)
