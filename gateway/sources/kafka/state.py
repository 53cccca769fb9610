"""What the parts of the Kafka source share: its settings, helpers and state.

:class:`~gateway.sources.kafka.source.KafkaSource` is split by concern into
:mod:`.consume` (message → events), :mod:`.flow` (into the buffer, pause/resume),
:mod:`.rebalance` (trackers and rebalances) and :mod:`.commits`; each is a class over the
:class:`SourceState` declared here, and ``KafkaSource`` (life cycle, the poll loop) joins them.
"""

from __future__ import annotations

import asyncio
import re
from operator import attrgetter
from typing import Any

from aiokafka import TopicPartition

from gateway.acks import Ack
from gateway.pipeline import Target
from gateway.sources.intake import Admitter
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.kafka.deadletter_topic import DeadLetterTopic
from gateway.sources.kafka.offsets import Kept, PartitionTracker
from gateway.sources.kafka.records import KafkaRecord
from gateway.telemetry.metrics import Metrics

POLL_TIMEOUT_MS = 200
"""getmany wait: also how often errored partitions and holds are looked at."""
PAUSED_WAIT_SECS = 0.005
"""While paused for backpressure: how soon a drained buffer resumes fetching."""
SUBMIT_CHUNK = 500
"""Events per buffer put (a put is all-or-nothing, so it must fit in the buffer)."""
SUBMIT_SLICE_SECS = 0.5
"""While the buffer is full: how often the blocked put looks at revocations and the poll timer."""
DLQ_BACKLOG_PAUSE = 10_000
"""Pause the partitions while this many dead letters wait to be written."""
ERRORED_HOLD_SECS = 1.0
"""A partition re-read after an ERRORED ack is paused this long first."""
CONNECT_BACKOFF_MAX_SECS = 10.0


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _detail(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    msg = str(exc) or type(exc).__name__
    if errors:
        return f"{msg}: {errors}"
    return msg


_value_of = attrgetter("value")
_offset_of = attrgetter("offset")
_key_of = attrgetter("key")
_headers_of = attrgetter("headers")


def _kept(m: KafkaRecord) -> Kept:
    """What a tracker keeps of a message for the dead-letter topic: the value bytes alone when
    that is all there is (no container for the GC to walk), else ``(key, value, headers)``."""
    return m.value if m.key is None and not m.headers else (m.key, m.value, m.headers)


def _released(ack: Ack) -> bool:
    """The ack's partition is being revoked or was given up (its events will be read again)."""
    t = ack.receiver
    return isinstance(t, PartitionTracker) and (t.revoking or t.discarded)


def subscription_pattern(pattern: str, dlq_topic: str | None) -> str:
    """The user's ``topic_pattern``, never matching dead-letter topics (``*.dlq``, ``dlq_topic``)."""
    guard = r"(?!.*\.dlq$)"
    if dlq_topic:
        guard += rf"(?!{re.escape(dlq_topic)}$)"
    return f"{guard}(?:{pattern})"


class SourceState:
    """The attributes every part of the Kafka source reads (set by ``KafkaSource.__init__``),
    and the methods one part calls on another."""

    name: str
    config: KafkaSourceConfig
    destination: Target
    metrics: Metrics
    dlq: DeadLetterTopic
    admitter: Admitter
    consumer: Any
    trackers: dict[TopicPartition, PartitionTracker]
    _vendor: Any
    _fast_pangea: bool
    _kwargs: dict[str, Any]
    _servers: list[str]
    _accepting: bool
    _stopped: bool
    _backpressure: bool
    _hold_until: dict[TopicPartition, float]
    _commit_lock: asyncio.Lock
    _task: asyncio.Task[None] | None
    _commit_task: asyncio.Task[None] | None
    _consumed_children: dict[str, Any]
    _m_paused: Any

    async def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        """Commit what is done (:class:`~gateway.sources.kafka.commits.Committing`)."""
        raise NotImplementedError
