"""``audit-gateway tap``: sampled events as they pass, for whoever is watching (like ``vector tap``).

One process-wide :data:`TAP` hub.  The pipeline calls it at a few points, once per batch, behind
``if TAP.active:`` — a single attribute read while nobody taps, so tapping costs nothing then:

* ``received`` / ``normalized`` / ``rejected``: :meth:`TapHub.admission`, from admission
  (``gateway.sources.intake.Admitter``, for the HTTP routes and the Kafka source alike): the
  records (Kafka: message values) as read, the events as normalized, the ones refused at
  intake with their errors;
* ``delivered``: :meth:`TapHub.delivered`, from the delivery driver once the upstream stored a batch;
* ``rejected`` by the upstream: :meth:`TapHub.rejected`, from the delivery driver once the refused
  events are dead-lettered; and a Kafka source's poison messages, as they go to its dead-letter topic.

Each watcher (``GET /tap`` on the admin port) has a bounded queue: when it falls behind, events
are skipped for it (sampled) and counted, never waited for.  Lines are built only for a watcher
whose filter matches.  Every line is redacted: the configured ``tap.redact_fields`` replaced by
``***``, then every registered secret masked (:mod:`gateway.telemetry.redact`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from gateway.telemetry.redact import MASK, redact

Stage = Literal["received", "normalized", "delivered", "rejected"]
STAGES: tuple[Stage, ...] = ("received", "normalized", "delivered", "rejected")
QUEUE_LINES = 1000
"""Lines held for a watcher that reads slower than events pass; beyond it they are skipped."""


class _Candidate(Protocol):
    original: Any
    errors: list[dict[str, str]]


class _Event(Protocol):
    item: bytes
    source: str


@dataclass(eq=False)
class Watcher:
    """One ``GET /tap``: its filter, its queue of JSON lines (None: the end), what it missed."""

    source: str | None = None
    destination: str | None = None
    stage: Stage | None = None
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LINES))
    skipped: int = 0

    def wants(self, stage: Stage, source: str | None, destination: str | None) -> bool:
        return (
            (self.stage is None or self.stage == stage)
            and (self.source is None or self.source == source)
            and (self.destination is None or self.destination == destination)
        )


class TapHub:
    """The watchers and the publishing side; see the module doc."""

    def __init__(self) -> None:
        self.active = False
        self._watchers: list[Watcher] = []
        self._redact_fields: list[list[str]] = []

    @property
    def watching(self) -> int:
        """How many ``GET /tap`` streams are open."""
        return len(self._watchers)

    def configure(self, redact_fields: Iterable[str]) -> None:
        """Dotted event field paths (``actor``, ``new.password``) always shown as ``***``."""
        self._redact_fields = [f.split(".") for f in redact_fields]

    def watch(self, watcher: Watcher) -> Watcher:
        self._watchers.append(watcher)
        self.active = True
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)
        self.active = bool(self._watchers)

    def end_all(self) -> None:
        """The process is stopping: every watcher's stream ends (after what it already holds)."""
        for w in list(self._watchers):
            self._offer(w, None, force=True)
            self.unwatch(w)

    # -- publishing (call only when ``active``) ---------------------------------------------

    def admission(
        self,
        source: str,
        destination: str,
        received: Sequence[Any],
        items: Sequence[bytes],
        invalid: Sequence[_Candidate],
    ) -> None:
        """One admitted request or message batch: received (the records as read: bytes or
        parsed JSON), normalized (the request items) and rejected at once."""
        for w in list(self._watchers):
            if w.wants("received", source, destination):
                for original in received:
                    self._offer(w, self._line("received", source, destination, _record(original)))
            if w.wants("normalized", source, destination):
                for item in items:
                    self._offer(w, self._line("normalized", source, destination, _event_of(item)))
            if w.wants("rejected", source, destination):
                for cand in invalid:
                    record = _record(cand.original)
                    self._offer(w, self._line("rejected", source, destination, record, errors=cand.errors))

    def delivered(self, destination: str, events: Sequence[_Event]) -> None:
        """Events the upstream stored."""
        for w in list(self._watchers):
            for ev in events:
                if w.wants("delivered", ev.source, destination):
                    self._offer(w, self._line("delivered", ev.source, destination, _event_of(ev.item)))

    def rejected(self, destination: str, events: Sequence[_Event], errors: Sequence[Any]) -> None:
        """Events the upstream refused for good (dead-lettered), each with its errors."""
        for w in list(self._watchers):
            for ev, errs in zip(events, errors, strict=True):
                if w.wants("rejected", ev.source, destination):
                    self._offer(w, self._line("rejected", ev.source, destination, _event_of(ev.item), errors=errs))

    # -- internals ------------------------------------------------------------------------------

    def _line(self, stage: Stage, source: str, destination: str, event: Any, **more: Any) -> bytes:
        if isinstance(event, dict):
            for path in self._redact_fields:
                _mask(event, path)
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stage": stage,
            "source": source,
            "destination": destination,
            "event": event,
            **more,
        }
        return (redact(orjson.dumps(out, default=str).decode()) + "\n").encode()

    @staticmethod
    def _offer(w: Watcher, line: bytes | None, *, force: bool = False) -> None:
        try:
            w.queue.put_nowait(line)
        except asyncio.QueueFull:
            if force:  # the end marker takes the place of the oldest line
                w.queue.get_nowait()
                w.queue.put_nowait(line)
            else:
                w.skipped += 1


def _record(original: Any) -> Any:
    """A record as read: parsed JSON when it is JSON, else its text."""
    if isinstance(original, bytes | bytearray | memoryview):
        try:
            return orjson.loads(original)
        except orjson.JSONDecodeError:
            return bytes(original).decode("utf-8", "replace")
    return _copy(original)


def _copy(value: Any) -> Any:
    # masking edits the event in place: never the one the pipeline holds
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _event_of(item: bytes) -> Any:
    """The event of an ``events[]`` element (``{"event": {...}, "signature": ...}``)."""
    parsed = orjson.loads(item)
    return parsed.get("event", parsed) if isinstance(parsed, dict) else parsed


def _mask(event: dict[str, Any], path: list[str]) -> None:
    node: Any = event
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict) and path[-1] in node:
        node[path[-1]] = MASK


TAP = TapHub()
"""The process's hub: the admin port's ``/tap`` watches it, the pipeline's tap points publish to it."""
