"""The Kafka source, message → events: what is Kafka's in admission.

The per-event steps (map → restrict → normalize → sign → encode, the compiled fast path,
the error wording, the tap points and the ``events_received`` count) are the HTTP routes' own:
:meth:`gateway.sources.intake.Admitter.prepare_values`.  What stays here is only Kafka's:
decoding a message into candidates (three ways, with the key and header mapping), the
partition tracker as the ack, and poison → the dead-letter topic.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import orjson
from aiokafka import TopicPartition

from gateway.acks import Ack
from gateway.event import Event
from gateway.normalize.schema import EventInvalid, pointer
from gateway.normalize.vendors.pangea import signature_of
from gateway.sources.intake import Candidate, Declined
from gateway.sources.kafka.deadletter_topic import DeadLetterJob
from gateway.sources.kafka.offsets import Kept, PartitionTracker
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


class Consuming(SourceState):
    """Turns consumed messages into events (or dead letters) registered in their partition tracker."""

    # -- message → events ---------------------------------------------------------------

    def _consume(
        self, tp: TopicPartition, msgs: list[KafkaRecord], tracker: PartitionTracker, out: list[Event]
    ) -> None:
        """Turn ``msgs`` of one partition into events (appended to ``out``); poison to the DLQ.

        Every message is registered in the tracker before anything can resolve its acks.
        The values go through admission in one batch (:meth:`Admitter.prepare_values`): format
        ``pangea`` without key or header mapping is offered to the destination's compiled
        schema first, and what it declines is decoded by :meth:`_candidates`.
        """
        child = self._consumed_children.get(tp.topic)
        if child is None:
            child = self._consumed_children[tp.topic] = self.metrics.kafka_consumed.labels(self.name, tp.topic)
        child.inc(len(msgs))
        last = tracker.last_tracked
        if last is not None and msgs and msgs[0].offset <= last:
            msgs = [m for m in msgs if m.offset > last]  # re-fetched duplicates of this assignment
        if not msgs:
            return
        values = list(map(_value_of, msgs))
        # The compiled path needs the message alone: mapping a key or header edits the event.
        compiled = self._fast_pangea and self.config.key_field is None and not self.config.header_fields
        items, declined = self.admitter.prepare_values(values, lambda i: self._candidates(msgs[i]), compiled=compiled)
        if not declined:  # the hot path: every value became one item
            offsets = list(map(_offset_of, msgs))
            if list(map(_key_of, msgs)).count(None) == len(msgs) and not any(map(_headers_of, msgs)):
                kept: list[Kept] = values  # what _kept gives for each: no key, no headers
            else:
                kept = list(map(_kept, msgs))
            self._register_run(tracker, offsets, kept, items, out)  # type: ignore[arg-type]
            return
        offsets = []
        kept = []
        run: list[bytes] = []
        for i, (m, item) in enumerate(zip(msgs, items, strict=True)):
            if item is None:
                if offsets:
                    self._register_run(tracker, offsets, kept, run, out)
                    offsets, kept, run = [], [], []
                self._register_one(m, tracker, declined[i], out)
                continue
            offsets.append(m.offset)
            kept.append(_kept(m))
            run.append(item)
        if offsets:
            self._register_run(tracker, offsets, kept, run, out)

    def _register_run(
        self, tracker: PartitionTracker, offsets: list[int], kept: list[Kept], items: list[bytes], out: list[Event]
    ) -> None:
        """A run of messages of one event each, registered with one :meth:`PartitionTracker.track_many`."""
        tracker.track_many(offsets, kept)
        out.extend(map(Event, items, map(Ack, repeat(tracker), offsets), repeat(self.name)))

    def _register_one(self, m: KafkaRecord, tracker: PartitionTracker, prepared: Declined, out: list[Event]) -> None:
        """One message that took the full path: its events, then its invalid records as poison."""
        valid, invalid = prepared
        offset = m.offset
        tracker.track(offset, len(valid) + len(invalid), _kept(m))
        for item, dedup_key in valid:
            out.append(Event(item, Ack(tracker, offset), self.name, dedup_key))
        if invalid:
            self._poison(tracker, m, invalid)

    def _candidates(self, m: KafkaRecord) -> list[Candidate]:
        """The candidates of one message: its records, key and headers mapped; an undecodable
        message is one candidate with a ``BadFormat`` error (dead-lettered as ``decode_error``).

        Format ``pangea`` decodes the common value (one JSON object, ``{"event": {...}}`` or a
        bare event) itself, giving exactly what the vendor decoder would; anything else
        (arrays, JSON lines, ``{"events": [...]}``, a BOM, invalid JSON) and the other formats
        take the vendor's own decoder, which also words the errors.
        """
        value = m.value
        if value is None:
            return [_undecodable(value, "message has no value (tombstone)")]
        if self._fast_pangea:
            record: Any
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                record = None
            if type(record) is dict and "events" not in record:
                inner = record.get("event")  # pangea.to_event's event, without its copy: the record is ours
                return [self._candidate(record, "", m, inner if type(inner) is dict else record)]
        try:
            records = self._vendor.decode(value)
        except Exception as exc:
            return [_undecodable(value, _detail(exc))]
        if len(records) == 1:
            return [self._candidate(records[0], "", m)]
        return [self._candidate(r, f"/{i}", m) for i, r in enumerate(records)]

    def _candidate(self, record: Any, ptr: str, m: KafkaRecord, event: dict[str, Any] | None = None) -> Candidate:
        """One record's candidate: the vendor's event (or ``event``, already unwrapped) with the
        key and headers mapped in.

        A producer-signed ``pangea`` record (the SDK's ``signature``/``public_key``) is kept
        exactly as signed: a key or header that would change it makes it invalid (``BadState``).
        """
        dedup = None
        if event is None:
            try:
                event, dedup = self._vendor.to_event(record)
            except EventInvalid as exc:
                errors = [{**e, "source": ptr + e.get("source", "")} for e in exc.errors]
                return Candidate(None, ptr, record, errors=errors)
            except Exception as exc:
                return Candidate(
                    None, ptr, record, errors=[{"code": "BadFormat", "detail": _detail(exc), "source": ptr}]
                )
        extras = signature_of(record) if self._fast_pangea else None
        if extras is None:
            self._map(event, m)
            return Candidate(event, ptr, record, dedup_key=dedup)
        given = dict(event)
        self._map(event, m)
        changed = sorted(k for k in event if given.get(k) != event[k])
        if changed:
            errors = [
                {
                    "code": "BadState",
                    "detail": f"'{k}' would be set from the message key or a header, which would break"
                    " the event's signature",
                    "source": ptr + pointer(k),
                }
                for k in changed
            ]
            return Candidate(None, ptr, record, errors=errors)
        return Candidate(event, ptr, record, extras, dedup)

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

    def _poison(self, tracker: PartitionTracker, m: KafkaRecord, invalid: list[Candidate]) -> None:
        """Dead-letter a message's invalid records to the dead-letter topic, worded as admission
        words them for the dead-letter store (:meth:`Admitter.rejection`)."""
        self.admitter.count_rejected(invalid)
        headers = list(m.headers or ())
        for cand in invalid:
            reason, detail = self.admitter.rejection(cand)
            self.dlq.put(
                DeadLetterJob(
                    tracker, tracker.topic, tracker.partition, m.offset, m.key, m.value, headers, reason, detail
                )
            )


def _undecodable(value: bytes | None, detail: str) -> Candidate:
    return Candidate(None, "", value, errors=[{"code": "BadFormat", "detail": detail, "source": ""}])
