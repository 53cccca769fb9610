"""The Kafka source, message → events: decoding three ways, mapping, poison messages."""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any

import orjson
from aiokafka import TopicPartition

from gateway.acks import Ack
from gateway.event import Event, encode_item
from gateway.normalize.schema import EventInvalid, pointer
from gateway.normalize.vendors.pangea import signature_of
from gateway.sources.kafka.deadletter_topic import DeadLetterJob
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.records import KafkaRecord
from gateway.sources.kafka.state import (
    SourceState,
    _detail,
    _headers_of,
    _kept,
    _key_of,
    _offset_of,
    _text,
    _value_of,
)
from gateway.telemetry.reasons import Reason
from gateway.telemetry.tap import TAP


class Consuming(SourceState):
    """Turns consumed messages into events (or dead letters) registered in their partition tracker."""

    # -- message → events ---------------------------------------------------------------

    def _consume(
        self, tp: TopicPartition, msgs: list[KafkaRecord], tracker: PartitionTracker, out: list[Event]
    ) -> None:
        """Turn ``msgs`` of one partition into events (appended to ``out``); poison to the DLQ.

        Every message is registered in the tracker before anything can resolve its acks.
        Format ``pangea`` without key or header mapping first offers each value to the
        destination's compiled schema (:meth:`Schema.fast_path`); what it declines takes
        :meth:`_consume_one`.
        """
        child = self._consumed_children.get(tp.topic)
        if child is None:
            child = self._consumed_children[tp.topic] = self.metrics.kafka_consumed.labels(self.name, tp.topic)
        child.inc(len(msgs))
        # The compiled path needs the message alone: mapping a key or header edits the event.
        fast_path = None
        if self._fast_pangea and self.config.key_field is None and not self.config.header_fields:
            fast_path = self.destination.fast_path()
        if fast_path is not None:
            n_events = self._consume_compiled(msgs, tracker, out, fast_path.items)
        else:
            n_events = 0
            for m in msgs:
                last = tracker.last_tracked
                if last is not None and m.offset <= last:
                    continue  # already tracked by this assignment (a re-fetched duplicate)
                n_events += self._consume_one(m, tracker, out)
        for acct in self._accounts:
            acct.received(n_events)

    def _consume_compiled(
        self,
        msgs: list[KafkaRecord],
        tracker: PartitionTracker,
        out: list[Event],
        fast_items: Callable[[list[bytes | None]], list[bytes | None]],
    ) -> int:
        """The hot loop: messages the compiled schema accepts become events in runs, each run
        registered with one :meth:`PartitionTracker.track_many`; any other message takes
        :meth:`_consume_one` in its place (after the run before it is registered)."""
        last = tracker.last_tracked
        if last is not None and msgs and msgs[0].offset <= last:
            msgs = [m for m in msgs if m.offset > last]  # re-fetched duplicates of this assignment
        values = list(map(_value_of, msgs))
        items = fast_items(values)
        if all(items):  # no None (an item is never empty): `None not in` compares, at thrice the cost
            offsets = list(map(_offset_of, msgs))
            if list(map(_key_of, msgs)).count(None) == len(msgs) and not any(map(_headers_of, msgs)):
                kept: list[Any] = values  # what _kept gives for each: no key, no headers
            else:
                kept = list(map(_kept, msgs))
            return self._register_run(tracker, offsets, kept, items, out)  # type: ignore[arg-type]
        offsets = []
        kept = []
        run: list[bytes] = []
        n = 0
        for m, item in zip(msgs, items, strict=True):
            if item is None:
                if offsets:
                    n += self._register_run(tracker, offsets, kept, run, out)
                    offsets, kept, run = [], [], []
                n += self._consume_one(m, tracker, out)
                continue
            offsets.append(m.offset)
            kept.append(_kept(m))
            run.append(item)
        if offsets:
            n += self._register_run(tracker, offsets, kept, run, out)
        return n

    def _register_run(
        self, tracker: PartitionTracker, offsets: list[int], kept: list[Any], items: list[bytes], out: list[Event]
    ) -> int:
        tracker.track_many(offsets, kept)
        out.extend(map(Event, items, map(Ack, repeat(tracker), offsets), repeat(self.name)))
        return len(items)

    def _consume_one(self, m: KafkaRecord, tracker: PartitionTracker, out: list[Event]) -> int:
        """One message through the full path; returns the events it became.

        Format ``pangea`` decodes the common value (one JSON object, ``{"event": {...}}`` or a
        bare event) itself, giving exactly what the vendor decoder would; anything else
        (arrays, JSON lines, ``{"events": [...]}``, a BOM, invalid JSON) and the other formats
        take the vendor's own path, which also words the errors.
        """
        offset = m.offset
        value = m.value
        if self._fast_pangea and value is not None:
            record: Any
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                record = None
            if type(record) is dict and "events" not in record:
                inner = record.get("event")
                event = inner if type(inner) is dict else record
                tracker.track(offset, 1, _kept(m))
                try:
                    item = self._item(record, event, m)
                except EventInvalid as exc:
                    self._poison(tracker, m, Reason.INVALID_EVENT, _detail(exc))
                    return 0
                except Exception as exc:
                    self._poison(tracker, m, Reason.DECODE_ERROR, _detail(exc))
                    return 0
                out.append(Event(item, Ack(tracker, offset), self.name, None))
                return 1
        return self._consume_vendor(m, tracker, out)

    def _item(self, record: Any, event: dict[str, Any], m: KafkaRecord) -> bytes:
        """The request item of one record's event: mapped and normalized, or, signed by the
        producer (format ``pangea`` with the SDK's ``signature``/``public_key``), kept exactly
        as signed; raises :class:`EventInvalid`."""
        extras = signature_of(record) if self._fast_pangea else None
        if extras is None:
            self._map(event, m)
            return self.destination.encode(event)
        given = dict(event)
        self._map(event, m)
        changed = sorted(k for k in event if given.get(k) != event[k])
        if changed:
            raise EventInvalid(
                [
                    {
                        "code": "BadState",
                        "detail": f"'{k}' would be set from the message key or a header, which would break"
                        " the event's signature",
                        "source": pointer(k),
                    }
                    for k in changed
                ]
            )
        return encode_item(self.destination.schema.normalize_signed(event, extras), extras)

    def _map(self, event: dict[str, Any], m: KafkaRecord) -> None:
        """Copy the message key and the configured headers into the event."""
        key_field = self.config.key_field
        if key_field is not None and m.key is not None:
            event[key_field] = _text(m.key)
        header_fields = self.config.header_fields
        if header_fields:
            for hname, hvalue in m.headers:
                field = header_fields.get(hname)
                if field is not None and hvalue is not None:
                    event[field] = _text(hvalue)

    def _consume_vendor(self, m: KafkaRecord, tracker: PartitionTracker, out: list[Event]) -> int:
        """One message through the vendor format (any number of records); returns events made."""
        offset = m.offset
        value = m.value
        try:
            if value is None:
                raise ValueError("message has no value (tombstone)")
            records = self._vendor.decode(value)
        except Exception as exc:
            tracker.track(offset, 1)
            self._poison(tracker, m, Reason.DECODE_ERROR, _detail(exc))
            return 0
        tracker.track(offset, len(records), _kept(m))
        to_event = self._vendor.to_event
        n = 0
        for record in records:
            try:
                event, dedup = to_event(record)
                item = self._item(record, event, m)
            except EventInvalid as exc:
                self._poison(tracker, m, Reason.INVALID_EVENT, _detail(exc))
                continue
            except Exception as exc:
                self._poison(tracker, m, Reason.DECODE_ERROR, _detail(exc))
                continue
            out.append(Event(item, Ack(tracker, offset), self.name, dedup))
            n += 1
        return n

    def _poison(self, tracker: PartitionTracker, m: KafkaRecord, reason: Reason, detail: str) -> None:
        for acct in self._accounts:  # read (received) and refused for good in one step
            acct.received(1)
            acct.rejected("intake", reason, 1)
        if TAP.active:  # tap point "rejected" (issue 16): a message that cannot become an event
            TAP.poisoned(self.name, self.config.destination, m.value, reason.value, detail)
        headers = list(m.headers or ())
        self.dlq.put(
            DeadLetterJob(tracker, tracker.topic, tracker.partition, m.offset, m.key, m.value, headers, reason, detail)
        )
