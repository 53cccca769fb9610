import asyncio
from typing import Any

from gateway.acks import Ack, AckGroup, AckStatus, BatchAck


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, AckStatus, Any]] = []

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        self.calls.append((key, status, detail))


def test_ack_resolves_exactly_once_and_ignores_the_second_resolution() -> None:
    rec = Recorder()
    ack = Ack(rec, 7)
    assert ack.resolve(AckStatus.DELIVERED, {"hash": "h"}) is True
    assert ack.resolve(AckStatus.REJECTED, "late") is False
    assert rec.calls == [(7, AckStatus.DELIVERED, {"hash": "h"})]


async def test_group_reports_the_worst_status_once_all_events_resolve() -> None:
    group = AckGroup(3, keep_results=True)
    a, b, c = group.ack(0), group.ack(1), group.ack(2)
    a.resolve(AckStatus.DELIVERED, {"hash": "x"})
    b.resolve(AckStatus.REJECTED, [{"code": "MaxLength"}])
    assert not group.done
    c.resolve(AckStatus.ERRORED, "shutdown")
    assert await group.wait() == AckStatus.REJECTED
    assert group.results == [{"hash": "x"}, None, None]
    assert group.reasons == {1: [{"code": "MaxLength"}], 2: "shutdown"}


async def test_empty_group_is_done_immediately() -> None:
    assert await AckGroup(0).wait() == AckStatus.DELIVERED


def test_batch_ack_resolves_only_open_acks_with_per_index_details() -> None:
    rec = Recorder()
    batch = BatchAck([Ack(rec, i) for i in range(3)])
    batch.resolve_one(1, AckStatus.REJECTED, "bad")
    batch.resolve(AckStatus.DELIVERED, ["d0", "d1", "d2"])
    assert rec.calls == [(1, AckStatus.REJECTED, "bad"), (0, AckStatus.DELIVERED, "d0"), (2, AckStatus.DELIVERED, "d2")]
    assert batch.open_count == 0


def test_worst_wins_ordering() -> None:
    assert AckStatus.DELIVERED < AckStatus.ERRORED < AckStatus.REJECTED


class BulkRecorder(Recorder):
    """A receiver that takes runs of its acks in one call."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[list[int]] = []

    def ack_resolved_many(self, keys: list[int], status: AckStatus, details: list[Any] | None) -> None:
        self.runs.append(list(keys))
        for j, k in enumerate(keys):
            self.calls.append((k, status, None if details is None else details[j]))


def test_batch_ack_tells_each_receiver_of_its_consecutive_acks_in_one_call() -> None:
    a, b, plain = BulkRecorder(), BulkRecorder(), Recorder()
    acks = [Ack(a, 0), Ack(a, 1), Ack(b, 5), Ack(plain, 9), Ack(a, 2)]
    batch = BatchAck(acks)
    acks[1].resolve(AckStatus.ERRORED, "dropped")  # already resolved: skipped, and splits nothing
    batch.resolve_many([0, 1, 2, 3, 4], AckStatus.DELIVERED, ["h0", "h1", "h5", "h9", "h2"])
    assert a.runs == [[0], [2]] and b.runs == [[5]]
    assert a.calls == [
        (1, AckStatus.ERRORED, "dropped"),
        (0, AckStatus.DELIVERED, "h0"),
        (2, AckStatus.DELIVERED, "h2"),
    ]
    assert b.calls == [(5, AckStatus.DELIVERED, "h5")] and plain.calls == [(9, AckStatus.DELIVERED, "h9")]
    assert batch.open_count == 0


async def test_group_takes_a_run_of_acks_with_results_and_reasons() -> None:
    group = AckGroup(4, keep_results=True)
    batch = BatchAck([group.ack(i) for i in range(4)])
    batch.resolve_many([0, 2], AckStatus.DELIVERED, [{"hash": "a"}, {"hash": "c"}])
    assert not group.done
    batch.resolve_many([1, 3], AckStatus.REJECTED, ["bad 1", "bad 3"])
    assert await group.wait() == AckStatus.REJECTED
    assert group.results == [{"hash": "a"}, None, {"hash": "c"}, None]
    assert group.reasons == {1: "bad 1", 3: "bad 3"}


def test_an_index_given_twice_resolves_its_ack_once_with_the_first_detail() -> None:
    rec = BulkRecorder()
    batch = BatchAck([Ack(rec, 0), Ack(rec, 1)])
    batch.resolve_many([1, 0, 1], AckStatus.DELIVERED, ["first", "zero", "second"])
    assert sorted(rec.calls) == [(0, AckStatus.DELIVERED, "zero"), (1, AckStatus.DELIVERED, "first")]
    assert batch.open_count == 0


def test_resolving_all_of_a_batch_skips_the_resolved_and_tells_each_receiver_its_runs() -> None:
    a, b = BulkRecorder(), BulkRecorder()
    acks = [Ack(a, 0), Ack(a, 1), Ack(b, 7), Ack(a, 2)]
    batch = BatchAck(acks)
    acks[2].resolve(AckStatus.ERRORED, "dropped")
    batch.resolve_many(None, AckStatus.DELIVERED, ["h0", "h1", "h7", "h2"])
    assert a.runs == [[0, 1, 2]] and b.runs == []
    assert a.calls == [(0, AckStatus.DELIVERED, "h0"), (1, AckStatus.DELIVERED, "h1"), (2, AckStatus.DELIVERED, "h2")]
    assert b.calls == [(7, AckStatus.ERRORED, "dropped")]
    assert batch.open_count == 0


def test_delivery_details_are_asked_for_once_and_only_when_a_receiver_keeps_them() -> None:
    from gateway.sources.kafka.offsets import PartitionTracker

    asked: list[int] = []

    def results() -> list[Any]:
        asked.append(1)
        return [{"hash": "a"}, {"hash": "b"}, {"hash": "c"}]

    tracker = PartitionTracker("audit", 0)
    tracker.track_many([0, 1, 2], [b"a", b"b", b"c"])
    BatchAck([Ack(tracker, 0), Ack(tracker, 1)]).resolve_many(None, AckStatus.DELIVERED, results)
    assert asked == [] and tracker.committable() == 2

    answering, rec = AckGroup(1, keep_results=True), Recorder()
    batch = BatchAck([Ack(tracker, 2), answering.ack(0), Ack(rec, 9)])
    batch.resolve_many(None, AckStatus.DELIVERED, results)
    assert asked == [1]
    assert answering.results == [{"hash": "b"}] and rec.calls == [(9, AckStatus.DELIVERED, {"hash": "c"})]
    assert tracker.committable() == 3

    quiet = AckGroup(1)  # answers without hashes
    BatchAck([quiet.ack(0)]).resolve_many(None, AckStatus.DELIVERED, results)
    assert asked == [1] and quiet.done


async def test_settled_answers_none_when_the_time_runs_out_and_the_status_once_resolved() -> None:
    group = AckGroup(2)
    a, b = group.ack(0), group.ack(1)
    a.resolve(AckStatus.DELIVERED)
    assert await group.settled(0) is None  # one still open: the wait timed out, nothing resolved
    assert not group.done and not b.resolved
    waiting = asyncio.ensure_future(group.settled(60))
    cancelled = asyncio.ensure_future(group.settled(60))
    await asyncio.sleep(0)
    cancelled.cancel()  # a caller gone away: the others still get their answer
    b.resolve(AckStatus.REJECTED, [{"code": "X"}])
    assert await waiting == AckStatus.REJECTED
    assert cancelled.cancelled()
    assert await group.settled(0) == AckStatus.REJECTED  # settled already: no wait at all
    assert await group.wait() == AckStatus.REJECTED


def test_a_group_keeping_results_holds_no_list_until_a_result_arrives() -> None:
    group = AckGroup(3, keep_results=True)
    assert group.results is None and group.wants_delivery_details  # buffered: nothing held per event yet
    group.ack(1).resolve(AckStatus.ERRORED, "upstream away")
    assert group.results is None
    group.ack(0).resolve(AckStatus.DELIVERED, {"hash": "a"})
    assert group.results == [{"hash": "a"}, None, None]
    assert not AckGroup(2).wants_delivery_details
