"""The partition offset tracker: commits only past contiguous delivered/dead-lettered offsets."""

from __future__ import annotations

from gateway.acks import Ack, AckStatus
from gateway.sources.kafka.offsets import PartitionTracker


def track(t: PartitionTracker, *offsets: int) -> dict[int, Ack]:
    acks = {}
    for o in offsets:
        t.track(o, 1, f"msg{o}")
        acks[o] = t.ack(o)
    return acks


def test_committable_advances_only_over_a_contiguous_delivered_prefix() -> None:
    t = PartitionTracker("t", 0)
    acks = track(t, 10, 11, 12, 13)
    assert t.committed == 10 and t.to_commit() is None
    acks[12].resolve(AckStatus.DELIVERED)
    acks[13].resolve(AckStatus.DELIVERED)
    assert t.committable() == 10
    acks[10].resolve(AckStatus.DELIVERED)
    assert t.committable() == 11
    acks[11].resolve(AckStatus.DELIVERED)
    assert t.committable() == 14 and t.to_commit() == 14 and t.busy == 0


def test_gaps_between_offsets_are_skipped_in_order() -> None:
    t = PartitionTracker("t", 0)
    acks = track(t, 5, 9, 20)
    acks[9].resolve(AckStatus.DELIVERED)
    acks[5].resolve(AckStatus.DELIVERED)
    assert t.committable() == 20
    acks[20].resolve(AckStatus.DELIVERED)
    assert t.committable() == 21


def test_an_errored_offset_is_never_committed_past() -> None:
    t = PartitionTracker("t", 0)
    acks = track(t, 0, 1, 2)
    acks[0].resolve(AckStatus.DELIVERED)
    acks[1].resolve(AckStatus.ERRORED, "shutdown")
    acks[2].resolve(AckStatus.DELIVERED)
    assert t.committable() == 1 and t.errored == 1 and t.busy == 0


def test_a_rejected_offset_is_done_at_once_as_its_rejecter_dead_lettered_it() -> None:
    t = PartitionTracker("t", 3)
    acks = track(t, 0, 1)
    acks[0].resolve(AckStatus.REJECTED, "bad")
    assert t.committable() == 1 and t.busy == 1
    acks[1].resolve(AckStatus.DELIVERED)
    assert t.committable() == 2 and t.busy == 0


def test_a_message_with_several_events_is_done_when_all_are() -> None:
    t = PartitionTracker("t", 0)
    t.track(7, 3, "m")
    a, b, c = t.ack(7), t.ack(7), t.ack(7)
    a.resolve(AckStatus.DELIVERED)
    b.resolve(AckStatus.DELIVERED)
    assert t.committable() == 7
    c.resolve(AckStatus.DELIVERED)
    assert t.committable() == 8


def test_a_message_with_no_events_is_done_at_once_but_waits_its_turn() -> None:
    t = PartitionTracker("t", 0)
    acks = track(t, 0)
    t.track(1, 0)
    assert t.committable() == 0
    acks[0].resolve(AckStatus.DELIVERED)
    assert t.committable() == 2


def test_a_tracker_after_a_seek_skips_refetched_offsets_below_its_start() -> None:
    t = PartitionTracker("t", 0, committed=40, expect=42)
    assert t.committable() == 42 and t.to_commit() == 42
    assert t.last_tracked == 41  # a re-fetched offset at or below it is skipped by the source


def test_a_run_tracked_at_once_commits_as_its_acks_are_delivered_in_bulk() -> None:
    t = PartitionTracker("t", 0)
    t.track_many([4, 5, 6, 7], ["m4", "m5", "m6", "m7"])
    assert t.committed == 4 and t.last_tracked == 7 and t.busy == 4
    t.ack_resolved_many([5, 6], AckStatus.DELIVERED, ["h5", "h6"])
    assert t.committable() == 4
    t.ack_resolved_many([4], AckStatus.DELIVERED, None)
    assert t.committable() == 7
    t.ack_resolved_many([7], AckStatus.REJECTED, ["refused"])
    assert t.committable() == 8 and t.busy == 0


def test_bulk_delivery_beside_a_message_of_several_events_waits_for_all_of_them() -> None:
    t = PartitionTracker("t", 0)
    t.track(3, 3, "m3")
    t.track_many([4, 5], ["m4", "m5"])
    t.ack_resolved_many([3, 4, 5], AckStatus.DELIVERED, None)
    assert t.committable() == 3 and t.busy == 2
    t.ack_resolved_many([3], AckStatus.REJECTED, ["refused"])
    assert t.committable() == 3 and t.busy == 1
    t.ack_resolved_many([3], AckStatus.DELIVERED, None)
    assert t.committable() == 6 and t.busy == 0 and t.outstanding == 0
