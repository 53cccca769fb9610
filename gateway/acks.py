"""Acknowledgements: how a source learns what became of its events.

Every :class:`~gateway.event.Event` carries an :class:`Ack`.  An ``Ack`` points at an
:class:`AckReceiver` (the thing that waits: a webhook request's :class:`AckGroup`, a Kafka
partition's offset tracker, a spool's row deleter) and a ``key`` the receiver understands
(the event's index in its request, its Kafka offset, its spool row id).

The rules, as in Vector's ``finalization.rs``:

* an ``Ack`` resolves **exactly once**; a second resolution is ignored and reported;
* the batcher merges acks into a :class:`BatchAck`; the sink resolves the batch, or single
  events of it when the upstream rejects only some;
* statuses order by severity, ``DELIVERED < ERRORED < REJECTED``; a group reports the worst;
* a dropped event (revoked partition, shutdown) still resolves its ack (``ERRORED``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise, repeat
from operator import attrgetter, is_not
from typing import Any, Protocol

import msgspec

from gateway.deadlines import deadlines, wake

log = logging.getLogger(__name__)

exhaust: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend
"""Runs an iterator of side effects (a C-level ``map`` over a batch) to its end, keeping nothing."""


class AckStatus(enum.IntEnum):
    """What happened to an event; larger is worse, and the worst wins when merging."""

    DELIVERED = 0  # the upstream accepted it (or it was written durably, for a spool)
    ERRORED = 1  # not delivered, may succeed later: the source should let it be resent
    REJECTED = 2  # refused for good (invalid, forbidden): it goes to the dead-letter path


class AckReceiver(Protocol):
    """Something that waits for acks: it is told once per event.

    A receiver may also define ``ack_resolved_many(keys, status, details)`` (``details`` a
    list beside ``keys``, or ``None``), the same as ``ack_resolved`` for each key; a batch
    then tells it of a run of its acks in one call.  And it may say, with a false
    ``wants_delivery_details``, that it keeps nothing of a DELIVERED detail (the upstream's
    hash): :meth:`BatchAck.resolve_many` then never asks for the details.
    """

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        """``detail`` is the upstream's per-event result when delivered, a reason when not."""


def _tell(receiver: Any, keys: list[int], status: AckStatus, details: list[Any] | None) -> None:
    """Tell ``receiver`` of a run of its acks: in one call if it can take them together
    (``ack_resolved_many(keys, status, details)``, optional), else one by one."""
    many = getattr(receiver, "ack_resolved_many", None)
    if many is not None:
        many(keys, status, details)
        return
    one = receiver.ack_resolved
    if details is None:
        for k in keys:
            one(k, status, None)
    else:
        for k, d in zip(keys, details, strict=True):
            one(k, status, d)


class Ack(msgspec.Struct, eq=False, gc=False):
    """One event's acknowledgement handle: ``Ack(receiver, key)``.

    Small on purpose, as there is one per buffered event: a msgspec ``Struct`` is built in C,
    at half the cost of a slotted class (a Kafka poll makes thousands at once).  ``eq=False``:
    two acks are the same only if they are one object.  ``gc=False``: the cyclic collector
    does not track acks (nor events), which took its share of a Kafka gateway's CPU from
    about 9% to 5%.  The collector cannot free a cycle that runs through an untracked
    object, so none may outlive its event: the cycles there are (ack -> receiver -> source ->
    buffer -> the event) are broken when the event leaves the buffer, which every event does
    (delivered, dropped, or drained at shutdown).
    """

    receiver: AckReceiver
    key: int
    _done: bool = False

    @property
    def resolved(self) -> bool:
        return self._done

    def resolve(self, status: AckStatus, detail: Any = None) -> bool:
        """Resolve this ack; returns False (and changes nothing) if it was resolved before."""
        if self._done:
            log.warning("ack resolved twice", extra={"key": self.key, "status": status.name})
            return False
        self._done = True
        self.receiver.ack_resolved(self.key, status, detail)
        return True


_done_of = attrgetter("_done")
_receiver_of = attrgetter("receiver")
_key_of = attrgetter("key")


class BatchAck:
    """The merged acks of a batch: resolve them all, or some individually, each once."""

    __slots__ = ("acks",)

    def __init__(self, acks: Iterable[Ack]) -> None:
        self.acks: list[Ack] = list(acks)

    def __len__(self) -> int:
        return len(self.acks)

    def resolve(self, status: AckStatus, details: Sequence[Any] | None = None) -> None:
        """Resolve every still-open ack with ``status`` (and per-index ``details`` if given)."""
        for i, ack in enumerate(self.acks):
            if not ack.resolved:
                ack.resolve(status, details[i] if details is not None else None)

    def resolve_many(
        self,
        indexes: Sequence[int] | None,
        status: AckStatus,
        details: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
    ) -> None:
        """Resolve the open acks at ``indexes`` (``None``: all of them, in order), ``details[j]``
        going with ``indexes[j]``.

        ``details`` may also be a function giving them, called (once) for DELIVERED only if a
        receiver of these acks keeps them (see :class:`AckReceiver`): a sink need not read the
        upstream's answer for nobody.

        A 1000-event batch resolves here once per delivery, so the usual case (none of them
        resolved yet) is done with C-level maps, and each receiver is told of its consecutive
        acks in one call (a Kafka batch is a few runs of one partition each).
        """
        acks = self.acks
        chosen = acks if indexes is None else list(map(acks.__getitem__, indexes))
        lazy: Callable[[], Sequence[Any]] | None = None
        if callable(details):
            if status == AckStatus.DELIVERED:
                lazy, details = details, None
            else:
                details = details()  # reasons of a failure: every receiver keeps them
        dets = list(details) if details is not None else None
        if indexes is not None and len(set(indexes)) != len(chosen):  # an index given twice: the first counts
            if lazy is not None:
                dets, lazy = list(lazy()), None
            firsts = list({i: j for j, i in reversed(list(enumerate(indexes)))}.values())
            firsts.sort()
            chosen = [chosen[j] for j in firsts]
            dets = [dets[j] for j in firsts] if dets is not None else None
        if any(map(_done_of, chosen)):
            if lazy is not None:
                dets, lazy = list(lazy()), None
            still = [j for j, ack in enumerate(chosen) if not ack._done]
            chosen = [chosen[j] for j in still]
            dets = [dets[j] for j in still] if dets is not None else None
        if not chosen:
            return
        exhaust(map(setattr, chosen, repeat("_done"), repeat(True)))
        receivers = list(map(_receiver_of, chosen))
        keys = list(map(_key_of, chosen))
        runs = [0]  # where each receiver's run of consecutive acks starts
        if receivers.count(receivers[0]) != len(receivers):
            changes = list(map(is_not, receivers[1:], receivers[:-1]))
            at = 0
            while True:
                try:
                    at = changes.index(True, at) + 1
                except ValueError:
                    break
                runs.append(at)
        runs.append(len(chosen))
        for start, end in pairwise(runs):
            receiver = receivers[start]
            if lazy is not None and getattr(receiver, "wants_delivery_details", True):
                dets, lazy = list(lazy()), None
            _tell(receiver, keys[start:end], status, dets[start:end] if dets is not None else None)

    def resolve_one(self, index: int, status: AckStatus, detail: Any = None) -> None:
        ack = self.acks[index]
        if not ack.resolved:
            ack.resolve(status, detail)

    @property
    def open_count(self) -> int:
        return list(map(_done_of, self.acks)).count(False)


class AckGroup:
    """Waits for the acks of one source unit (a webhook request of N events).

    ``status`` is the worst status seen; ``results`` holds each event's upstream result
    (hash, envelope) when delivered, and ``reasons`` each non-delivered event's reason, so
    a Pangea-compatible endpoint can answer with hashes or per-event errors.
    """

    __slots__ = ("_future", "_keep", "_on_done", "_waiters", "pending", "reasons", "results", "size", "status")

    def __init__(
        self,
        size: int,
        *,
        keep_results: bool = False,
        on_done: Callable[[AckGroup], None] | None = None,
    ) -> None:
        self.size = size
        self.pending = size
        self.status = AckStatus.DELIVERED
        self._keep = keep_results
        # Made at the first delivered result: a request still buffered (an upstream away)
        # holds no list of its own, 8 bytes per buffered event (issue 18).
        self.results: list[Any] | None = None
        self.reasons: dict[int, Any] = {}
        self._on_done = on_done
        self._future: asyncio.Future[AckStatus] | None = None
        self._waiters: list[asyncio.Future[AckStatus | None]] | None = None
        if size == 0:
            self._finish()

    def ack(self, index: int) -> Ack:
        """The ack for the event at ``index`` of this unit."""
        return Ack(self, index)

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        self.ack_resolved_many([key], status, [detail])

    def ack_resolved_many(self, keys: list[int], status: AckStatus, details: list[Any] | None) -> None:
        if status > self.status:
            self.status = status
        if details is not None:
            if status == AckStatus.DELIVERED:
                if self._keep:
                    results = self.results
                    if results is None:
                        results = self.results = [None] * self.size
                    n = len(keys)
                    if len(details) != n:
                        raise ValueError("keys and details differ in length")
                    k0 = keys[0] if n else 0
                    if k0 + n <= len(results) and keys == list(
                        range(k0, k0 + n)
                    ):  # the usual run: a slice, no Python loop
                        results[k0 : k0 + n] = details
                    else:
                        for k, d in zip(keys, details, strict=True):
                            results[k] = d
            else:
                self.reasons.update(zip(keys, details, strict=True))
        elif status != AckStatus.DELIVERED:
            self.reasons.update(dict.fromkeys(keys))
        self.pending -= len(keys)
        if self.pending == 0:
            self._finish()

    def _finish(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(self.status)
        if self._waiters is not None:
            for waiter in self._waiters:
                if not waiter.done():  # timed out or cancelled: nobody waits on it any more
                    waiter.set_result(self.status)
        if self._on_done is not None:
            self._on_done(self)

    @property
    def wants_delivery_details(self) -> bool:
        """Only a unit answering with hashes (``keep_results``) keeps them."""
        return self._keep

    @property
    def done(self) -> bool:
        return self.pending == 0

    async def settled(self, timeout_secs: float) -> AckStatus | None:
        """Wait up to ``timeout_secs`` for every event of the unit: the worst status, or None
        when the time ran out first (the events stay where they are).

        A webhook request waits here: one future of its own and a deadline on a queue shared
        by every wait of this duration (:mod:`gateway.deadlines`), where ``wait_for(wait())``
        made a task, a shield and a timer per request (issue 18).
        """
        if self.pending == 0:
            return self.status
        waiter: asyncio.Future[AckStatus | None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        deadline = deadlines(timeout_secs).add(wake, waiter)
        try:
            return await waiter
        finally:
            deadline.cancel()

    async def wait(self) -> AckStatus:
        """Wait until every event of the unit is resolved; returns the worst status."""
        if self.pending == 0:
            return self.status
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._future)
