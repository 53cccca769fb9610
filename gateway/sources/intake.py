"""Admission: turn a request's (or message batch's) events into buffered, acked events.

Shared by every HTTP route.  Invalid events are reported and dead-lettered; they never reach
the upstream and never hold back the valid events of the same request.  Admission is all or
nothing for the valid ones: if the buffer is full the whole request is refused (429; 503 while
the upstream refuses the gateway's own credential, the gateway's fault) and
nothing is dead-lettered, because the sender will retry it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import orjson

from gateway.acks import Ack, AckGroup
from gateway.dedup import DedupWindow
from gateway.errors import BufferFull, GatewayError, GatewayUnavailable
from gateway.event import Event, encode_item
from gateway.normalize.fastpath import FastPath
from gateway.normalize.schema import EventInvalid
from gateway.pipeline import Target, destination_names, give_up_unplaced
from gateway.sinks.deadletter.base import DeadLetter, DeadLetterStore
from gateway.telemetry.metrics import Account, Metrics
from gateway.telemetry.reasons import Reason, refusal_reason, rejection_reason
from gateway.telemetry.tap import TAP

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Candidate:
    """One event as a source read it, before normalization."""

    fields: dict[str, Any] | None
    """Mapped event fields; None when the record could not be mapped at all (see ``errors``)."""
    pointer: str
    """JSON pointer of the record in the request body, e.g. ``/events/3/event``."""
    original: Any
    """The record as received (bytes or a parsed JSON value); serialized only if dead-lettered."""
    extras: dict[str, Any] | None = None
    """``signature`` / ``public_key`` to send beside the event."""
    dedup_key: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


Declined = tuple[list[tuple[bytes, str | None]], list[Candidate]]
"""What admission made of a value the compiled path declined: the (item, dedup key) of each
valid record, and the invalid candidates."""


@dataclass(slots=True)
class Admission:
    """What became of a request's events at intake."""

    group: AckGroup
    """Acks of the admitted events (index = position among admitted)."""
    indexes: list[int]
    """For each admitted event, its index in the request (ints stay small while a request waits)."""
    errors: list[dict[str, str]]
    """Pangea-style errors of the events refused at intake (sources point into the body)."""
    refused: int
    total: int
    """Events in the request."""
    pointer_template: str = "/{}"
    """``str.format`` template of an event's JSON pointer from its index, e.g. ``/events/{}/event``."""

    def pointer(self, n: int) -> str:
        """JSON pointer of the ``n``-th admitted event in the request body."""
        return self.pointer_template.format(self.indexes[n])


class Admitter:
    """Normalizes candidates for one source and destination and puts them in the buffer."""

    def __init__(
        self,
        source: str,
        destination: Target,
        metrics: Metrics,
        deadletters: DeadLetterStore,
        check_restrictions: Callable[[dict[str, Any]], list[dict[str, str]]] | None = None,
        dedup: DedupWindow | None = None,
    ) -> None:
        self.dedup = dedup
        self.source = source
        self.destination = destination
        self.metrics = metrics
        self.deadletters = deadletters
        self._check_restrictions = check_restrictions
        self.accounts: list[Account] = [metrics.account(source, name) for name in destination_names(destination)]
        """One account per destination copy (a fan-out source's event counts once in each)."""

    def prepare_values(
        self,
        values: list[bytes | None],
        candidates_of: Callable[[int], list[Candidate]],
        *,
        compiled: bool = True,
    ) -> tuple[list[bytes | None], dict[int, Declined]]:
        """Admission of a batch of raw values (a Kafka poll), each one record's JSON or more.

        With ``compiled`` and neither restrictions nor signing, the destination's compiled
        schema (:meth:`Schema.fast_path`) turns each value it accepts straight into its item,
        list by list; every value it declines (or all, without it) is decoded by
        ``candidates_of(index)`` into candidates and takes :meth:`prepare`.  Returns the item
        of each value that became exactly one event (no dedup key), whichever path made it,
        else ``None`` and, by index in the second part, what :meth:`prepare` made of the
        value's candidates (:data:`Declined`).  Counts the events received and publishes the
        tap points; the caller buffers the items and refuses the invalid candidates
        (:meth:`count_rejected`, :meth:`rejection`).
        """
        fast = self.destination.fast_path() if compiled and self._check_restrictions is None else None
        items: list[bytes | None] = fast.items(values) if fast is not None else [None] * len(values)
        slow: dict[int, Declined] = {}
        n = len(values)
        if not all(items):  # no None (an item is never empty): `None not in` compares, at thrice the cost
            for i, item in enumerate(items):
                if item is None:
                    cands = candidates_of(i)
                    try:
                        valid, invalid = self.prepare(cands)
                    except Exception as exc:  # not bad data for the schema: still never stall a stream on it
                        log.exception("normalization failed", extra={"source": self.source})
                        detail = str(exc) or type(exc).__name__
                        for cand in cands:
                            cand.errors = [{"code": "BadFormat", "detail": detail, "source": cand.pointer}]
                        valid, invalid = [], list(cands)
                    n += len(cands) - 1
                    # Only items and dedup keys are kept, and the common one event of a value in
                    # the item list: a poll's parsed records, events and per-value containers
                    # held until the end of the batch cost more in GC than normalizing them.
                    if len(valid) == 1 and not invalid and valid[0][2].dedup_key is None:
                        items[i] = valid[0][1]
                    else:
                        slow[i] = ([(it, cand.dedup_key) for _i, it, cand in valid], invalid)
        for acct in self.accounts:
            acct.received(n)
        if TAP.active:
            rejected = [c for _v, inv in slow.values() for c in inv]
            one_each = (item for item in items if item is not None)
            more = (item for v, _inv in slow.values() for item, _key in v)
            TAP.admission(self.source, self.destination.name, values, [*one_each, *more], rejected)
        return items, slow

    @property
    def takes_items(self) -> bool:
        """Whether :meth:`admit` may be given ``items`` now: no restrictions to check on the
        normalized events, and the tap off (its points show each record as received)."""
        return self._check_restrictions is None and not TAP.active

    async def admit_mapped(
        self,
        fields: list[dict[str, Any]],
        dedup_keys: list[str | None],
        candidates: Callable[[], Sequence[Candidate]],
    ) -> Admission:
        """:meth:`admit` of a request's records a source mapped, every one of them (none failed
        mapping): ``fields[i]`` and ``dedup_keys[i]`` are record ``i``'s.

        When :attr:`takes_items` and the destination's compiled schema takes every event as it
        is (:meth:`FastPath.fields_items`), they are admitted as their items with their dedup
        keys, with no :class:`Candidate` built per record (issue 18); else ``candidates()``
        (the same records as candidates) take :meth:`admit`, which words every error.  Either
        way the outcome is the same.
        """
        if self.takes_items:
            fast = self.destination.fast_path()
            if fast is not None:
                items = fast.fields_items(fields)  # type: ignore[arg-type]  # list is invariant
                if all(items):  # no None: an item is never empty
                    return await self.admit((), items=items, dedup_keys=dedup_keys)  # type: ignore[arg-type]
        return await self.admit(candidates())

    def prepare(self, candidates: Sequence[Candidate]) -> tuple[list[tuple[int, bytes, Candidate]], list[Candidate]]:
        """Normalize; returns (index, item bytes, candidate) of the valid and the invalid candidates."""
        dest = self.destination
        encode = dest.encode
        check = self._check_restrictions
        valid: list[tuple[int, bytes, Candidate]] = []
        invalid: list[Candidate] = []
        fast = dest.fast_path() if check is None else None
        compiled = _compiled_items(fast, candidates) if fast is not None else None
        for i, cand in enumerate(candidates):
            if cand.fields is None:
                invalid.append(cand)
                continue
            if compiled is not None:
                item = compiled[i]
                if item is not None:  # valid as it is: the compiled schema's item
                    valid.append((i, item, cand))
                    continue
            try:
                if cand.extras:
                    # Signed by the client: normalization may not change a byte of it.
                    normalized = dest.schema.normalize_signed(cand.fields, cand.extras)
                    item = encode_item(normalized, cand.extras)
                elif check is None:
                    item = encode(cand.fields)
                else:
                    normalized = dest.schema.normalize(cand.fields)
                    item = dest.item(normalized)
                if check is not None:
                    forbidden = check(normalized)
                    if forbidden:
                        cand.errors = [_prefixed(e, cand.pointer) for e in forbidden]
                        invalid.append(cand)
                        continue
            except EventInvalid as exc:
                cand.errors = [_prefixed(e, cand.pointer) for e in exc.errors]
                invalid.append(cand)
                continue
            valid.append((i, item, cand))
        return valid, invalid

    async def admit(
        self,
        candidates: Sequence[Candidate],
        *,
        keep_results: bool = False,
        want_envelope: bool = False,
        wait_for_room: bool = False,
        request_key: str | None = None,
        retried_keys: Sequence[str] = (),
        pointer_template: str = "/{}",
        credential: str | None = None,
        v1_members: bytes | None = None,
        items: list[bytes] | None = None,
        dedup_keys: Sequence[str | None] | None = None,
    ) -> Admission:
        """Buffer the valid candidates (raises BufferFull, admitting none) and report the rest.

        ``request_key`` / ``retried_keys``: this request's id and those of earlier attempts of
        the same request (``X-Pangea-Retried-Request-Ids``), for de-duplication.
        ``credential``: the ``Authorization`` to deliver these events with (a pass-through caller's).
        ``v1_members``: deliver each alone to ``/v1/log`` with these members (see ``Event``).
        ``items``: instead of candidates (pass none), a request's events already normalized by
        the destination's compiled path (:meth:`Schema.fast_path`), all valid and without source
        ids (unless ``dedup_keys`` gives each one's): admitted as they are, with no per-event work
        here.  Only when this admitter checks no restrictions and the tap is off (its points show
        the records as received).
        """
        accounts = self.accounts
        if items is not None:
            valid: list[tuple[int, bytes, Candidate]] = []
            invalid: list[Candidate] = []
            for acct in accounts:
                acct.received(len(items))
        else:
            for acct in accounts:
                acct.received(len(candidates))
            valid, invalid = self.prepare(candidates)
            if TAP.active:  # tap points received, normalized, rejected (issue 16): one call per batch
                originals = [cand.original for cand in candidates]
                TAP.admission(self.source, self.destination.name, originals, [item for _i, item, _c in valid], invalid)
        # --- dedup hook (issue 4): duplicates resolve DELIVERED and are not submitted ---
        tracker = self.dedup.tracker(self.source, request_key, retried_keys) if self.dedup is not None else None
        n_valid = len(items) if items is not None else len(valid)
        group = AckGroup(n_valid, keep_results=keep_results, on_done=tracker.done if tracker else None)
        if items is not None:  # C-level maps: no Python loop per event
            acks = map(Ack, repeat(group), range(n_valid))
            keys = repeat(None) if dedup_keys is None else dedup_keys
            extra = (keys, repeat(want_envelope), repeat(v1_members), repeat(credential))
            events = list(map(Event, items, acks, repeat(self.source), *extra))
        else:
            events = [
                Event(item, group.ack(n), self.source, cand.dedup_key, want_envelope, v1_members, credential)
                for n, (_i, item, cand) in enumerate(valid)
            ]
        if tracker is not None:
            screened = await tracker.screen(events, group)
            if len(screened) != len(events):
                for acct in accounts:
                    acct.duplicates(len(events) - len(screened))
            events = screened
        if events:
            try:
                await self.destination.submit(events, wait=wait_for_room)
            except BaseException as exc:
                if tracker is not None:
                    tracker.abandon()
                # Not admitted, invalid ones included (the sender resends the whole request);
                # a fan-out's copies already placed stay and are delivered, counted there.
                destination = self.destination
                unplaced = give_up_unplaced(destination, events)
                credentials = type(exc) is BufferFull and getattr(destination.sink, "credentials_refused", False)
                reason = Reason.CREDENTIALS if credentials else refusal_reason(exc)
                for acct, n in zip(accounts, unplaced, strict=True):
                    self._count_refused(acct, reason, n + len(invalid))
                if credentials:
                    # Full because the upstream refuses the gateway's own credential: our fault, 503.
                    assert isinstance(exc, BufferFull)
                    raise GatewayUnavailable(
                        "the gateway cannot deliver yet (the upstream refuses its credentials); retry later",
                        retry_after_secs=exc.retry_after_secs,
                    ) from None
                raise
        # --- end of dedup hook ---
        errors: list[dict[str, str]] = []
        if invalid:
            errors = [e for cand in invalid for e in cand.errors]
            await self.reject_invalid(invalid)
        if items is not None:
            return Admission(group, list(range(n_valid)), errors, 0, n_valid, pointer_template)
        return Admission(group, [i for i, _item, _c in valid], errors, len(invalid), len(candidates), pointer_template)

    @staticmethod
    def _count_refused(acct: Account, reason: Reason, n: int) -> None:
        """Events not admitted: the sender is answered 429/503 and keeps them."""
        if n:
            acct.refused(reason, n)

    @staticmethod
    def rejection(cand: Candidate) -> tuple[Reason, str]:
        """The dead-letter reason and detail of a candidate refused at intake, wherever it is
        dead-lettered (the dead-letter store, a Kafka source's dead-letter topic); the Pangea
        codes stay in the detail."""
        return _reason_of(cand), orjson.dumps(cand.errors).decode()

    def count_rejected(self, invalid: Iterable[Candidate]) -> None:
        """Count candidates refused at intake, by the vocabulary's reason of their first error."""
        reasons: dict[Reason, int] = {}
        for cand in invalid:
            reason = _reason_of(cand)
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, n in reasons.items():
            for acct in self.accounts:
                acct.rejected("intake", reason, n)

    async def reject_invalid(self, invalid: Sequence[Candidate]) -> None:
        """Dead-letter and count events refused at intake."""
        letters = []
        now = time.time()
        for cand in invalid:
            reason, detail = self.rejection(cand)
            letters.append(
                DeadLetter(
                    source=self.source,
                    destination=self.destination.name,
                    reason=reason.value,
                    detail=detail,
                    payload=_payload_bytes(cand.original),
                    received_at=now,
                )
            )
        self.count_rejected(invalid)
        try:
            await self.deadletters.write(letters)
        except GatewayError:
            # The answer still reports every refused event to the sender; the valid ones are
            # already buffered, so failing the request now would only duplicate them.
            log.exception("refused events not dead-lettered", extra={"source": self.source, "count": len(letters)})


def _compiled_items(fast: FastPath, candidates: Sequence[Candidate]) -> list[bytes | None]:
    """Each unsigned candidate's item through the destination's compiled schema (see
    :meth:`FastPath.fields_items`), or ``None``: what needs more than validation (coercion,
    errors to word) takes :meth:`Schema.normalize`.

    Mapping a vendor's records gives event dicts; msgspec validates and encodes them in C at
    about a third of the cost of ``normalize`` + ``encode_item`` (issue 18).
    """
    return fast.fields_items([None if c.fields is None or c.extras else c.fields for c in candidates])


def _reason_of(cand: Candidate) -> Reason:
    """The vocabulary's reason for a refused candidate: ``decode_error`` for a record that could
    not be read at all (no fields, ``BadFormat``: a Kafka message that is not JSON), else what
    its first error's code says."""
    code = cand.errors[0]["code"] if cand.errors else None
    if cand.fields is None and code == "BadFormat":
        return Reason.DECODE_ERROR
    return rejection_reason(code, Reason.INVALID_EVENT)


def _payload_bytes(original: Any) -> bytes:
    """A refused record's bytes for the dead-letter store, whatever it holds."""
    if isinstance(original, bytes):
        return original
    try:
        return orjson.dumps(original)
    except TypeError:
        # orjson refuses lone surrogates and integers beyond 64 bits; the stdlib escapes them.
        return json.dumps(original, ensure_ascii=True, default=str).encode()


def _prefixed(error: dict[str, str], pointer: str) -> dict[str, str]:
    out = dict(error)
    out["source"] = pointer + error.get("source", "")
    return out
