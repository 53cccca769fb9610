"""The one way the gateway produces to Kafka: producer settings, producing a run of messages,
and the dead-letter headers.

Used by the Kafka buffer, the Kafka sink, the Kafka dead-letter store and the Kafka source's
dead-letter topic: every producer is ``acks=all`` (a message counts only once every in-sync
replica has it), and a run of messages is produced the same way (send each, then wait for
every acknowledgement, a refused send becoming that message's error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.kafka.config import KafkaSecurity
from gateway.kafka.security import bootstrap_list, client_kwargs

__all__ = [
    "HEADER_DETAIL",
    "HEADER_REASON",
    "MAX_DETAIL_BYTES",
    "Message",
    "Producer",
    "detail_header",
    "produce_each",
    "producer_kwargs",
    "start_producer",
]

HEADER_REASON = "x-gateway-reason"
"""Dead letters: why the message was refused (``decode_error``, ``upstream_rejected``...)."""
HEADER_DETAIL = "x-gateway-detail"
"""Dead letters: the explanation, cut to :data:`MAX_DETAIL_BYTES`."""
MAX_DETAIL_BYTES = 2048

Message = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]
"""``(topic, key, value, headers)``."""


class Producer(Protocol):
    """What the gateway uses of ``aiokafka.AIOKafkaProducer``."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]: ...


def producer_kwargs(
    bootstrap_servers: str | list[str] | None,
    security: KafkaSecurity,
    *,
    path: str,
    request_timeout_secs: float | None = None,
    linger_ms: int = 5,
    **extra: Any,
) -> dict[str, Any]:
    """``AIOKafkaProducer`` keyword arguments: the brokers, ``acks=all``, TLS/SASL (errors name ``path``)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(bootstrap_servers),
        "acks": "all",
        "linger_ms": linger_ms,
        **extra,
        **client_kwargs(security, path=path),
    }
    if request_timeout_secs is not None:
        kwargs["request_timeout_ms"] = int(request_timeout_secs * 1000)
    return kwargs


async def start_producer(kwargs: dict[str, Any], timeout_secs: float | None = None) -> Any:
    """A started ``AIOKafkaProducer`` of ``kwargs`` (see :func:`producer_kwargs`): the one place
    the gateway makes one.  Raises what starting raised (``TimeoutError`` past
    ``timeout_secs``), the half-started producer stopped."""
    producer = AIOKafkaProducer(**kwargs)
    try:
        await asyncio.wait_for(producer.start(), timeout_secs)
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


def detail_header(text: str) -> bytes:
    """The ``x-gateway-detail`` value of ``text``."""
    return text.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]


async def produce_each(producer: Producer, messages: Iterable[Message], timeout_secs: float | None = None) -> list[Any]:
    """Produce ``messages``; per message, its ``RecordMetadata`` or the exception producing it
    raised.  Raises ``TimeoutError`` when the acknowledgements take over ``timeout_secs`` (the
    futures still pending are cancelled)."""
    futures: list[asyncio.Future[Any]] = []
    for topic, key, value, headers in messages:
        try:
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
        except KafkaError as exc:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            futures.append(failed)
    try:
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout_secs)
    except TimeoutError:
        for f in futures:
            if f.done():
                f.exception()  # retrieved, so it is not reported as never retrieved
            else:
                f.cancel()
        raise
