"""Per-partition offset tracking: which offsets may be committed.

A :class:`PartitionTracker` is the :class:`~gateway.acks.AckReceiver` of one assigned
partition.  The source registers each consumed message with :meth:`PartitionTracker.track`
(in offset order, with the number of events it became) and hands one
:class:`~gateway.acks.Ack` per event, keyed by the message's offset, to the pipeline.

* An offset is *done* when every one of its events was DELIVERED or REJECTED: whoever
  rejects an event has dead-lettered it before resolving its ack (the delivery driver writes
  it to the destination's dead-letter store), so it is not dead-lettered again here.  A
  message the source itself cannot read is dead-lettered to the source's dead-letter topic,
  which calls :meth:`PartitionTracker.dead_lettered` once the dead letter is written.
* :meth:`PartitionTracker.committable` is the offset after the longest done prefix of the
  registered offsets (Kafka's "next offset to read"): a commit never passes an offset that
  is not done, whatever order the acks arrive in.
* An ERRORED ack (shutdown, dropped, retries exhausted) leaves its offset not done for
  ever: the commit position stops there and the next reader of the partition (this
  process after a seek, or the partition's next owner) reads it again.  ``errored`` tells
  the source it happened.

A tracker lives as long as one assignment of its partition.  When the partition is
revoked (or re-read after an error) the source *discards* the tracker: acks of its events
that are still in the buffer resolve into it later and change nothing that is committed.
Memory is one dict entry per outstanding message (what the dead-letter topic would need:
the value bytes, shared with the consumed record, or ``(key, value, headers)`` when it has a
key or headers), plus a count for a message that became several events, so it is bounded by
the buffer; the consumed record itself is not kept, which spares the garbage collector.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, TypeAlias

from gateway.acks import Ack, AckStatus, exhaust

Kept: TypeAlias = bytes | tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]] | None
"""What a tracker keeps of a message while it is open: the value alone when the message has
no key and no headers (no container for the GC to walk), else ``(key, value, headers)``."""


class PartitionTracker:
    """Outstanding offsets of one partition assignment; see the module docstring."""

    wants_delivery_details = False  # an offset is done or not: the upstream's hash is not kept

    __slots__ = (
        "_errored",
        "_next",
        "_open",
        "_units",
        "busy",
        "committed",
        "committed_looked_up",
        "discarded",
        "last_tracked",
        "partition",
        "revoking",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        *,
        committed: int | None = None,
        expect: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.committed: int | None = committed
        """The offset last committed (by us, or found when the partition was assigned)."""
        self.committed_looked_up = committed is not None
        """Whether the group's committed offset was asked for (for the lag of an idle partition)."""
        self._next: int | None = expect if expect is not None else committed
        """Committable position before anything is tracked (after that: the first open offset, or
        the last tracked one + 1)."""
        self.last_tracked: int | None = None if expect is None else expect - 1
        self._open: dict[int, Kept] = {}
        """offset -> the message given to :meth:`track`, for each registered offset that is
        not done.  Offsets are registered in increasing order and only ever removed (never
        re-inserted), so the dict's first key is the lowest offset not done: the commit
        position."""
        self._units: dict[int, int] = {}
        """offset -> units not yet done, for the open offsets that have more than one left
        (a message that became several events); an open offset not in it has one left."""
        self._errored: int | None = None
        self.busy = 0
        """Acks not yet resolved plus dead letters not yet written."""
        self.discarded = False
        """Given up (revoked, or re-read after an error): its acks no longer matter."""
        self.revoking = False
        """Being revoked: its events not yet in the buffer are dropped."""

    # -- registering --------------------------------------------------------------------

    def track(self, offset: int, units: int, message: Kept = None) -> None:
        """Register ``offset`` (in increasing order) that became ``units`` units of work.

        A unit is an event (give each its own ``Ack(tracker, offset)``, see :meth:`ack`)
        or a dead letter to write (finished by :meth:`dead_lettered`).  With ``units`` 0 the
        offset is done at once.  ``message`` is kept until the offset is done, for the
        dead-letter topic.
        """
        self.last_tracked = offset
        if self.committed is None:
            # The assignment's starting position: what the group had committed (or the reset).
            self.committed = offset
        if units <= 0:
            return  # done at once: the commit position passes it once everything before is done
        self._open[offset] = message
        if units > 1:
            self._units[offset] = units
        self.busy += units

    def track_many(self, offsets: list[int], messages: Sequence[Kept]) -> None:
        """``track(offset, 1, message)`` for each pair, in one go (a run of one-event messages)."""
        if not offsets:
            return
        if self.committed is None:
            self.committed = offsets[0]
        self.last_tracked = offsets[-1]
        self._open.update(zip(offsets, messages, strict=True))
        self.busy += len(offsets)

    def ack(self, offset: int) -> Ack:
        """A new ack for one event of ``offset``."""
        return Ack(self, offset)

    # -- resolving ----------------------------------------------------------------------

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        self.busy -= 1
        if status != AckStatus.ERRORED:  # delivered, or rejected (and so already dead-lettered)
            self._done(key)
        else:
            self._mark_errored(key)

    def ack_resolved_many(self, keys: list[int], status: AckStatus, details: list[Any] | None) -> None:
        """``ack_resolved`` for each key; DELIVERED ones, while no offset has several events
        open (the usual case), in one C-level pass: each key's offset is done (or was)."""
        if status == AckStatus.DELIVERED and not self._units:
            self.busy -= len(keys)
            exhaust(map(self._open.pop, keys, repeat(None)))
            return
        for j, k in enumerate(keys):
            self.ack_resolved(k, status, None if details is None else details[j])

    def dead_lettered(self, offset: int) -> None:
        """The dead letter of one event of ``offset`` is written: that event is done."""
        self.busy -= 1
        self._done(offset)

    def dead_letter_failed(self, offset: int) -> None:
        """A dead letter of ``offset`` could not be written (shutdown): leave it uncommitted."""
        self.busy -= 1
        self._mark_errored(offset)

    def _mark_errored(self, offset: int) -> None:
        if self._errored is None or offset < self._errored:
            self._errored = offset

    def _done(self, offset: int) -> None:
        left = self._units.get(offset)
        if left is not None:
            # Several events of the offset were open: it stays open (in its place) for the rest.
            if left > 2:
                self._units[offset] = left - 1
            else:
                del self._units[offset]
            return
        self._open.pop(offset, None)

    # -- reading ------------------------------------------------------------------------

    @property
    def errored(self) -> int | None:
        """The lowest offset that resolved ERRORED (the commit position stops at or below it)."""
        return self._errored

    @property
    def outstanding(self) -> int:
        """Registered offsets not yet done."""
        return len(self._open)

    def committable(self) -> int | None:
        """Offset to commit: the first registered offset not done (or last done + 1)."""
        for first in self._open:
            return first
        if self.last_tracked is not None:
            return self.last_tracked + 1
        return self._next

    def to_commit(self) -> int | None:
        """``committable()`` when it is ahead of what is committed, else None."""
        c = self.committable()
        if c is None or (self.committed is not None and c <= self.committed):
            return None
        return c
