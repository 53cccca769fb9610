"""De-duplication at admission: a resend of an accepted id is dropped, nothing is ever lost."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from gateway.acks import AckStatus
from gateway.buffer.memory import MemoryBuffer
from gateway.config import DestinationConfig
from gateway.dedup import DedupConfig, DedupWindow
from gateway.errors import BufferFull
from gateway.event import Event
from gateway.normalize.schema import Schema
from gateway.pipeline import Destination
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sources.intake import Admission, Admitter, Candidate
from gateway.telemetry.metrics import Metrics


class NoDeadLetters:
    async def write(self, letters: list[DeadLetter]) -> None:
        raise AssertionError(f"unexpected dead letters: {letters}")

    async def close(self) -> None:
        return None


class Rig:
    """An Admitter over a memory buffer; the test plays the sink by resolving what it takes."""

    def __init__(self, window: DedupWindow, metrics: Metrics, max_events: int = 10_000) -> None:
        self.metrics = metrics
        self.buffer = MemoryBuffer("default", max_events, 10_000_000, metrics)
        dest = Destination(
            "default",
            DestinationConfig(),
            self.buffer,
            None,
            Schema.standard(),
            metrics,
            0,  # type: ignore[arg-type]
        )
        self.window = window
        self.admitters: dict[str, Admitter] = {}
        self.dest = dest

    def admitter(self, source: str = "auth0") -> Admitter:
        if source not in self.admitters:
            self.admitters[source] = Admitter(source, self.dest, self.metrics, NoDeadLetters(), dedup=self.window)
        return self.admitters[source]

    async def send(self, ids: list[str | None], source: str = "auth0", **kw: object) -> Admission:
        cands = [Candidate({"message": f"m-{i}"}, f"/{n}", b"{}", dedup_key=i) for n, i in enumerate(ids)]
        return await self.admitter(source).admit(cands, **kw)  # type: ignore[arg-type]

    async def upstream(self, status: AckStatus = AckStatus.DELIVERED) -> list[Event]:
        """Take everything buffered and resolve it as the upstream would."""
        taken = self.buffer.drain_nowait()
        for e in taken:
            e.ack.resolve(status, {"hash": "h"} if status == AckStatus.DELIVERED else "failed")
        return taken

    def duplicates(self, source: str = "auth0") -> float:
        return (
            self.metrics.registry.get_sample_value(
                "gateway_duplicates_dropped_total", {"source": source, "destination": self.dest.name}
            )
            or 0.0
        )


@pytest.fixture
async def window(tmp_path: Path) -> DedupWindow:
    w = DedupWindow(tmp_path / "dedup.db", DedupConfig(pending_wait_secs=2), Metrics())
    await w.start()
    yield w  # type: ignore[misc]
    await w.close()


@pytest.fixture
def rig(window: DedupWindow) -> Rig:
    return Rig(window, window.metrics)


async def test_a_resent_event_whose_first_copy_was_delivered_is_dropped_and_answered_delivered(rig: Rig) -> None:
    first = await rig.send(["log-1", "log-2"])
    assert len(await rig.upstream()) == 2
    assert first.group.status == AckStatus.DELIVERED

    again = await rig.send(["log-1", "log-2", "log-3"])
    assert again.group.pending == 1  # the two duplicates are resolved already
    taken = await rig.upstream()
    assert [e.dedup_key for e in taken] == ["log-3"]
    assert again.group.done and again.group.status == AckStatus.DELIVERED
    assert rig.duplicates() == 2


async def test_an_event_whose_first_copy_failed_gets_through_on_the_resend(rig: Rig) -> None:
    first = await rig.send(["log-1"])
    await rig.upstream(AckStatus.ERRORED)
    assert first.group.status == AckStatus.ERRORED
    await rig.send(["log-1"])
    assert [e.dedup_key for e in await rig.upstream()] == ["log-1"]
    assert rig.duplicates() == 0


async def test_a_rejected_event_is_not_recorded(rig: Rig) -> None:
    await rig.send(["log-1"])
    await rig.upstream(AckStatus.REJECTED)
    await rig.send(["log-1"])
    assert len(await rig.upstream()) == 1


async def test_events_without_an_id_are_never_dropped(rig: Rig) -> None:
    await rig.send([None, None])
    await rig.upstream()
    await rig.send([None, None])
    assert len(await rig.upstream()) == 2


async def test_the_same_id_twice_in_one_request_is_sent_once(rig: Rig) -> None:
    adm = await rig.send(["log-1", "log-1"])
    assert len(await rig.upstream()) == 1
    assert adm.group.status == AckStatus.DELIVERED


async def test_a_request_whose_events_partly_failed_records_only_the_delivered_ids(rig: Rig) -> None:
    await rig.send(["a", "b", "c"])  # all new: the tracker's list of ids, no dict of them
    for e in rig.buffer.drain_nowait():
        delivered = e.dedup_key != "b"
        e.ack.resolve(AckStatus.DELIVERED if delivered else AckStatus.ERRORED, {"hash": "h"} if delivered else "failed")
    await rig.send(["a", "b", "c"])
    assert [e.dedup_key for e in await rig.upstream()] == ["b"]
    assert rig.duplicates() == 2


async def test_ids_are_kept_per_source(rig: Rig) -> None:
    await rig.send(["42"], source="okta")
    await rig.upstream()
    await rig.send(["42"], source="github")
    assert len(await rig.upstream()) == 1


async def test_a_resend_while_the_first_copy_is_in_flight_waits_for_its_outcome(rig: Rig) -> None:
    await rig.send(["log-1"])
    resend = asyncio.create_task(rig.send(["log-1"]))
    await asyncio.sleep(0.05)
    assert not resend.done()  # it waits for the first copy's outcome
    await rig.upstream(AckStatus.DELIVERED)
    adm = await asyncio.wait_for(resend, 5)
    assert adm.group.status == AckStatus.DELIVERED and rig.buffer.events == 0
    assert rig.duplicates() == 1


async def test_a_resend_while_the_first_copy_is_in_flight_is_admitted_if_that_copy_fails(rig: Rig) -> None:
    await rig.send(["log-1"])
    resend = asyncio.create_task(rig.send(["log-1"]))
    await asyncio.sleep(0.05)
    await rig.upstream(AckStatus.ERRORED)
    await asyncio.wait_for(resend, 5)
    assert [e.dedup_key for e in await rig.upstream()] == ["log-1"]


async def test_a_refused_request_leaves_no_id_behind(window: DedupWindow) -> None:
    rig = Rig(window, window.metrics, max_events=1)
    await rig.send([None])  # the buffer is now full
    with pytest.raises(BufferFull):
        await rig.send(["log-1"])
    await rig.upstream()
    await rig.send(["log-1"])  # the sender's retry
    assert [e.dedup_key for e in await rig.upstream()] == ["log-1"]


async def test_a_retried_sdk_request_is_dropped_when_its_first_attempt_was_delivered(rig: Rig) -> None:
    first = await rig.send([None, None], source="sdk", request_key="prq_first")
    await rig.upstream()
    assert first.group.status == AckStatus.DELIVERED
    retry = await rig.send([None, None], source="sdk", request_key="prq_second", retried_keys=["prq_first"])
    assert retry.group.done and retry.group.status == AckStatus.DELIVERED
    assert rig.buffer.events == 0 and rig.duplicates("sdk") == 2


async def test_a_retried_sdk_request_gets_through_when_its_first_attempt_failed(rig: Rig) -> None:
    await rig.send([None], source="sdk", request_key="prq_first")
    await rig.upstream(AckStatus.ERRORED)
    await rig.send([None], source="sdk", request_key="prq_second", retried_keys=["prq_first"])
    assert len(await rig.upstream()) == 1


async def test_the_window_survives_a_restart(tmp_path: Path) -> None:
    metrics = Metrics()
    w1 = DedupWindow(tmp_path / "dedup.db", DedupConfig(), metrics)
    await w1.start()
    rig = Rig(w1, metrics)
    await rig.send(["log-1", "log-2"])
    await rig.upstream()
    await w1.close()

    w2 = DedupWindow(tmp_path / "dedup.db", DedupConfig(), metrics)
    await w2.start()
    rig2 = Rig(w2, metrics)
    await rig2.send(["log-1", "log-3"])
    assert [e.dedup_key for e in await rig2.upstream()] == ["log-3"]
    await w2.close()


async def test_the_window_forgets_the_oldest_ids_beyond_max_entries(tmp_path: Path) -> None:
    metrics = Metrics()
    w = DedupWindow(tmp_path / "dedup.db", DedupConfig(max_entries=3), metrics)
    await w.start()
    rig = Rig(w, metrics)
    await rig.send(["a", "b", "c", "d"])
    await rig.upstream()
    assert len(w) == 3
    await rig.send(["a", "d"])
    assert [e.dedup_key for e in await rig.upstream()] == ["a"]
    await w.close()
    w2 = DedupWindow(tmp_path / "dedup.db", DedupConfig(max_entries=3), metrics)
    await w2.start()
    assert len(w2) <= 3
    await w2.close()


async def test_the_window_forgets_ids_older_than_max_age(tmp_path: Path) -> None:
    metrics = Metrics()
    now = [1_800_000_000.0]
    w = DedupWindow(tmp_path / "dedup.db", DedupConfig(max_age_secs=60), metrics, clock=lambda: now[0])
    await w.start()
    rig = Rig(w, metrics)
    await rig.send(["a"])
    await rig.upstream()
    now[0] += 59  # still inside the window: a duplicate
    await rig.send(["a"])
    assert await rig.upstream() == []
    now[0] += 2  # past it: forgotten, delivered again
    await rig.send(["a"])
    assert len(await rig.upstream()) == 1
    await w.close()


async def test_without_a_window_nothing_is_deduplicated() -> None:
    metrics = Metrics()
    buffer = MemoryBuffer("default", 100, 1_000_000, metrics)
    dest = Destination("default", DestinationConfig(), buffer, None, Schema.standard(), metrics, 0)  # type: ignore[arg-type]
    adm = Admitter("auth0", dest, metrics, NoDeadLetters())
    for _ in range(2):
        await adm.admit([Candidate({"message": "m"}, "/0", b"{}", dedup_key="x")])
    assert buffer.events == 2


async def sdk_send(rig: Rig, messages: list[str], request_key: str, retried: list[str] | None = None) -> Admission:
    """An SDK request's events (no per-event ids), with its request id and the ids it retries."""
    cands = [Candidate({"message": m}, f"/events/{n}/event", b"{}") for n, m in enumerate(messages)]
    return await rig.admitter("sdk").admit(cands, request_key=request_key, retried_keys=retried or [])


def messages(events: list[Event]) -> list[str]:
    return [orjson.loads(e.item)["event"]["message"] for e in events]


async def test_a_request_naming_a_delivered_request_but_carrying_other_events_is_new(rig: Rig) -> None:
    await sdk_send(rig, ["a", "b"], "prq_first")
    await rig.upstream()
    await sdk_send(rig, ["c", "d"], "prq_second", ["prq_first"])
    assert messages(await rig.upstream()) == ["c", "d"]
    assert rig.duplicates("sdk") == 0
    # The first request's own retry (the same events) is still recognised, naming either attempt.
    retry = await sdk_send(rig, ["a", "b"], "prq_third", ["prq_second", "prq_first"])
    assert retry.group.status == AckStatus.DELIVERED and rig.buffer.events == 0
    assert rig.duplicates("sdk") == 2


async def test_a_request_naming_one_in_flight_but_carrying_other_events_does_not_wait_for_it(rig: Rig) -> None:
    await sdk_send(rig, ["a"], "prq_first")  # left in flight
    other = asyncio.create_task(sdk_send(rig, ["b"], "prq_second", ["prq_first"]))
    await asyncio.sleep(0)  # one turn of the loop: admission does not wait on "prq_first"
    assert other.done()
    assert messages(await rig.upstream()) == ["a", "b"]


async def test_a_retry_with_the_same_events_waits_for_the_attempt_in_flight_and_is_dropped(rig: Rig) -> None:
    await sdk_send(rig, ["a"], "prq_first")  # left in flight
    retry = asyncio.create_task(sdk_send(rig, ["a"], "prq_second", ["prq_first"]))
    await asyncio.sleep(0)
    assert not retry.done()  # it waits for the first attempt's outcome
    assert messages(await rig.upstream()) == ["a"]
    adm = await asyncio.wait_for(retry, 5)
    assert adm.group.status == AckStatus.DELIVERED and rig.buffer.events == 0
    assert rig.duplicates("sdk") == 1


async def test_a_request_sent_twice_at_once_keeps_the_second_copy_awaited_after_the_first_fails(rig: Rig) -> None:
    # Two copies of one SDK request (same id, same events) in flight: the second's registration
    # replaced the first's, and the first failing must not take it away (issue 18's unregister).
    await sdk_send(rig, ["a"], "prq_same")
    await sdk_send(rig, ["a"], "prq_same")
    first, second = rig.buffer.drain_nowait()
    first.ack.resolve(AckStatus.ERRORED, "failed")
    retry = asyncio.create_task(sdk_send(rig, ["a"], "prq_retry", ["prq_same"]))
    await asyncio.sleep(0)
    assert not retry.done()  # it waits for the copy still in flight
    second.ack.resolve(AckStatus.DELIVERED, {"hash": "h"})
    adm = await asyncio.wait_for(retry, 5)
    assert adm.group.status == AckStatus.DELIVERED and rig.buffer.events == 0
    assert rig.duplicates("sdk") == 1


async def test_a_resend_is_admitted_when_the_first_copy_is_still_in_flight_at_the_end_of_the_wait(
    tmp_path: Path,
) -> None:
    # pending_wait_secs: 0 is the end of the wait at once, so the test neither sleeps nor races.
    w = DedupWindow(tmp_path / "dedup.db", DedupConfig(pending_wait_secs=0), Metrics())
    await w.start()
    try:
        rig = Rig(w, w.metrics)
        await rig.send(["log-1"])
        resend = await asyncio.wait_for(rig.send(["log-1"]), 5)  # the first copy is still open
        assert not resend.group.done  # admitted, not answered as a duplicate
        assert [e.dedup_key for e in await rig.upstream()] == ["log-1", "log-1"]
        assert rig.duplicates() == 0
    finally:
        await w.close()


def test_record_many_leaves_the_window_as_recording_each_key_in_turn() -> None:
    """The batch form the trackers use (issue 18) against one :meth:`DedupWindow.record` per key:
    same ids, same order (so the same ones are forgotten first), same rows to write."""
    config = DedupConfig(max_entries=5)
    now = [1000.0]
    one, many = (DedupWindow(Path("unused.db"), config, Metrics(), clock=lambda: now[0]) for _ in range(2))
    batches = [["a", "b", "c"], ["d", "a"], [], ["e", "f", "b"]]
    for batch in batches:
        now[0] += 1
        for key in batch:
            one.record(key)
        many.record_many(batch)
    assert [(k, a.at) for k, a in many._seen.items()] == [(k, a.at) for k, a in one._seen.items()]
    assert [(k, at) for at, keys in many._to_write for k in keys] == [
        (k, at) for at, keys in one._to_write for k in keys
    ]
    assert len(many) == 5 and not many.seen("c") and many.seen("a")


def test_events_digest_is_128_bits_of_the_sha256_of_the_count_the_lengths_and_the_items_in_order() -> None:
    """The digest built by C calls (issue 18) against hashing the count, each item's length and
    then each item, one update at a time; no two different lists of items share a digest."""
    from hashlib import sha256

    from gateway.acks import Ack
    from gateway.dedup import events_digest

    cases = (
        [b'{"event":{}}'],
        [b"ab", b"c"],
        [b"a", b"bc"],
        [b"abc"],
        [b""] * 3,
        [b""] * 2,
        [bytes(range(256)) * 3, b"x"],
    )
    digests = set()
    for items in cases:
        h = sha256(len(items).to_bytes(8, "little"))
        for item in items:
            h.update(len(item).to_bytes(8, "little"))
        for item in items:
            h.update(item)
        events = [Event(i, Ack(None, 0), "s") for i in items]  # type: ignore[arg-type]
        digest = events_digest(events)
        assert digest == h.hexdigest()[:32]
        digests.add(digest)
    assert len(digests) == len(cases)


async def test_the_file_keeps_each_ids_last_time_legacy_rows_included_and_forgets_past_max_entries(
    tmp_path: Path,
) -> None:
    """Ids are written one row per flush (issue 18); a file of the former one row per id still loads."""
    path, now, config, db = await created_file(tmp_path, max_entries=4)
    db.executemany("INSERT INTO seen(key, at) VALUES (?, ?)", [("old-kept", now[0] - 50), ("old-gone", now[0] - 150)])
    db.commit()
    db.close()
    w = DedupWindow(path, config, Metrics(), clock=lambda: now[0])
    await w.start()
    assert w.seen("old-kept") and not w.seen("old-gone")
    now[0] += 1
    w.record_many(["a", "b\ud800"])  # an id orjson cannot write is written all the same
    await w.close()  # flushes one batch
    w = DedupWindow(path, config, Metrics(), clock=lambda: now[0])
    await w.start()
    assert w.seen("a") and w.seen("b\ud800") and w.seen("old-kept")
    now[0] += 60  # "old-kept" is 111 s old now, "a" 60 s
    w.record_many(["a"])  # recorded again: counts from now
    await w.close()
    now[0] += 60
    w = DedupWindow(path, config, Metrics(), clock=lambda: now[0])
    await w.start()
    assert w.seen("a") and not w.seen("b\ud800") and not w.seen("old-kept")
    w.record_many(["c", "d", "a", "e"])  # "a" again: in two batches of the file
    await w.close()  # the prune at close leaves the newest 4 ids' batches
    w = DedupWindow(path, config, Metrics(), clock=lambda: now[0])
    await w.start()
    assert list(w._seen) == ["c", "d", "a", "e"]  # oldest first, "a" where it was last recorded
    await w.close()


def test_the_window_forgets_as_an_ordered_window_of_each_ids_last_time_would() -> None:
    """The dict and queue of arrivals (issue 18) against the plain model of the module docstring:
    ids in order of their last recording (an id twice in one call where it first is), the oldest
    forgotten beyond ``max_entries``, none older than ``max_age_secs``.  Random calls mix new ids,
    ids recorded again (whose older arrival must not forget them), ids twice in one call, lookups
    that expire an id, and time passing."""
    import random
    from collections import OrderedDict

    now = [0.0]
    for seed in range(40):
        rnd = random.Random(seed)
        config = DedupConfig(max_entries=rnd.choice([1, 3, 8, 20]), max_age_secs=50)
        now[0] = 1000.0
        w = DedupWindow(None, config, Metrics(), clock=lambda: now[0])
        model: OrderedDict[str, float] = OrderedDict()
        for _ in range(200):
            now[0] += rnd.choice([0, 0, 1, 5, 20])
            if rnd.random() < 0.2:
                key = f"k{rnd.randrange(30)}"
                at = model.get(key)
                expected = at is not None and now[0] - at <= config.max_age_secs
                if at is not None and not expected:
                    del model[key]
                assert w.seen(key) == expected
                continue
            keys = [f"k{rnd.randrange(30)}" for _ in range(rnd.randrange(0, 6))]
            w.record_many(keys)
            if not keys:
                continue
            for key in dict.fromkeys(keys):
                model.pop(key, None)
                model[key] = now[0]
            while len(model) > config.max_entries:
                model.popitem(last=False)
            while model and next(iter(model.values())) < now[0] - config.max_age_secs:
                model.popitem(last=False)
            assert [(k, a.at) for k, a in w._seen.items()] == list(model.items()), seed
            assert len(w) <= config.max_entries


def test_an_id_recorded_again_outlives_the_eviction_of_its_older_arrival() -> None:
    config = DedupConfig(max_entries=3)
    w = DedupWindow(None, config, Metrics())
    w.record_many(["a", "b", "c"])
    w.record_many(["a"])  # "a" again: its first arrival is now the oldest without it
    w.record_many(["d"])  # one too many: "b" goes, not "a"
    assert list(w._seen) == ["c", "a", "d"]
    w.record_many(["e", "e", "f"])  # "e" twice in one call: one id
    assert list(w._seen) == ["d", "e", "f"] and len(w) == 3
    w.record_many(["g"])
    assert list(w._seen) == ["e", "f", "g"]


async def test_files_of_the_former_batch_format_load_beside_this_ones_flushes(tmp_path: Path) -> None:
    """A ``seen_batches`` row (``[[id, at], ...]``, the format before this one) and ``seen`` rows
    still load; an id's last time wins across the formats, and the oldest arrivals go first."""
    path, now, config, db = await created_file(tmp_path, max_entries=10)
    db.execute("INSERT INTO seen(key, at) VALUES (?, ?)", ("row", now[0] - 50))
    former = [["b1", now[0] - 40], ["b2", now[0] - 40], ["b1", now[0] - 30], ["b-old", now[0] - 200]]
    db.execute("INSERT INTO seen_batches(at, n, ids) VALUES (?, ?, ?)", (now[0] - 30, 4, orjson.dumps(former)))
    db.commit()
    db.close()
    w = DedupWindow(path, config, Metrics(), clock=lambda: now[0])
    await w.start()
    assert list(w._seen) == ["row", "b2", "b1"]
    now[0] += 1
    w.record_many(["new-1", "b2"])
    await w.close()
    for most, expected in ((10, ["row", "b1", "new-1", "b2"]), (3, ["b1", "new-1", "b2"]), (2, ["new-1", "b2"])):
        w = DedupWindow(path, DedupConfig(max_age_secs=100, max_entries=most), Metrics(), clock=lambda: now[0])
        await w.start()
        assert list(w._seen) == expected, most
        assert w._seen["b2"].at == now[0]
        assert "b1" not in expected or w._seen["b1"].at == now[0] - 31
        await w.close()


async def created_file(
    tmp_path: Path, *, max_entries: int
) -> tuple[Path, list[float], DedupConfig, sqlite3.Connection]:
    """A window file as a start and a close leave it (its tables, no ids), opened to write rows
    of the earlier formats into; with the test's clock reading (a list, to move it) and config."""
    path = tmp_path / "dedup.db"
    now = [1_800_000_000.0]
    config = DedupConfig(max_age_secs=100, max_entries=max_entries)
    w = DedupWindow(path, config, Metrics(), clock=lambda: now[0])
    await w.start()
    await w.close()
    return path, now, config, sqlite3.connect(path)
