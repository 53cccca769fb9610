"""A full disk under the spool (issue 12, case 2).

Mostly a real full filesystem: a 6 MiB tmpfs mounted for the test (the tests run as root, as
CI does), so SQLite gets the same ``SQLITE_FULL`` / ENOSPC it gets on a full production
volume, for the database, its WAL and everything else in the directory.  One test uses
SQLite's own ``PRAGMA max_page_count`` instead (a full *database*, with room on the disk).

The end-to-end scenario: an upstream outage fills the disk until intake answers 503; the
upstream comes back; intake recovers by itself (no restart) and ``/readyz`` follows; every
event answered 2xx is stored upstream once; a restart replays nothing that was delivered.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.acks import AckStatus
from gateway.bench import metric_sum
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import DELETE_FLUSH_SECS, FAILED_LOG_SECS, ROOM_PROBE_SECS, DiskBuffer, SpoolUnavailable
from gateway.buffer.spool import RESERVE_NAME, Record, Spool, SpoolError
from gateway.telemetry.metrics import Metrics
from tests.integration.spool.test_disk_buffer import disk, make_events, messages, spooled_rows, take_all
from tests.integration.spool.test_spool_gateway import TOKEN, config, faults, ports, post, stored, wait_stored
from tests.support.clock import ManualClock, eventually
from tests.support.procs import Proc, local_audit, start_gateway

FS_SIZE = "6m"
MESSAGE = "x" * 2000  # ~2 KB per event: a few hundred requests fill the filesystem


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs: a filesystem that really fills up."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def disk_config(**kw: object) -> BufferConfig:
    return BufferConfig.model_validate({"type": "disk", "max_bytes": 1 << 30, **kw})


def fill_up(directory: Path) -> Path:
    """Take every byte the filesystem has left (as another process writing there would)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            os.write(fd, bytes(512))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def fill_spool(spool: Spool) -> int:
    """Write records until the disk is full; the number written."""
    rid = 0
    while True:
        try:
            spool.write([Record(rid + 1, "src", [os.urandom(2000) for _ in range(10)], [None] * 10)], [])
        except SpoolError as exc:
            assert exc.disk_full
            return rid
        rid += 1


def test_deliveries_commit_on_a_full_filesystem_by_giving_the_reserve_back_then_the_room_returns(
    small_fs: Path,
) -> None:
    spool = Spool(small_fs / "spool", reserve_bytes=2 * 1024 * 1024)
    assert (small_fs / "spool" / RESERVE_NAME).stat().st_size == 2 * 1024 * 1024
    written = fill_spool(spool)
    assert written > 0
    filler = fill_up(small_fs)  # not one byte left for the WAL to grow by
    assert free_bytes(small_fs) == 0

    spool.write([], list(range(1, written + 1)))  # every record delivered: they must go

    assert spool.stats().records == 0
    # The freed pages went back to the filesystem and the reserve is in place again.
    assert (small_fs / "spool" / RESERVE_NAME).stat().st_size == 2 * 1024 * 1024 and spool.reserved
    assert free_bytes(small_fs) > 1024 * 1024
    filler.unlink()
    spool.write([Record(1, "src", [b"after"], [None])], [])  # and the spool writes again
    spool.close()
    again = Spool(small_fs / "spool")
    assert [r.items for r in again.read(0, 10)[0]] == [[b"after"]]
    again.close()


def spool_with_records(directory: Path, n: int) -> None:
    spool = Spool(directory, reserve_bytes=1024 * 1024)
    spool.write([Record(i, "src", [os.urandom(2000) for _ in range(10)], [None] * 10) for i in range(1, n + 1)], [])
    spool.close()


def test_a_start_on_a_full_disk_opens_the_spool_with_the_reserve_and_replays_it(small_fs: Path) -> None:
    spool_with_records(small_fs / "spool", 80)  # 1.6 MB: delivered, they make room for the reserve again
    fill_up(small_fs)  # a WAL-mode open needs room for its -shm and -wal files

    spool = Spool(small_fs / "spool", reserve_bytes=1024 * 1024)

    assert spool.stats().records == 80
    assert [p.name for p in (small_fs / "spool").iterdir() if "corrupt" in p.name] == []
    spool.write([], list(range(1, 81)))  # delivered: recorded, and the reserve is made again
    assert spool.stats().records == 0 and spool.reserved
    spool.close()


def test_a_full_disk_at_start_without_a_reserve_is_an_error_not_damage(small_fs: Path) -> None:
    spool_with_records(small_fs / "spool", 40)
    (small_fs / "spool" / RESERVE_NAME).unlink()
    filler = fill_up(small_fs)

    with pytest.raises(SpoolError) as info:
        Spool(small_fs / "spool")
    assert info.value.disk_full
    # The file was not taken for damaged and set aside: once there is room it is all there.
    assert [p.name for p in (small_fs / "spool").iterdir() if "corrupt" in p.name] == []
    filler.unlink()
    spool = Spool(small_fs / "spool")
    assert spool.stats().records == 40
    spool.close()


async def test_a_write_refused_for_a_full_database_still_records_the_deliveries_it_carried(tmp_path: Path) -> None:
    buf = disk(tmp_path, max_bytes=1 << 30)
    await buf.put(make_events(5))
    taken = await take_all(buf, 5)
    db = buf._spool.connection
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL: the database cannot grow
    for t in taken:
        t.ack.resolve(AckStatus.DELIVERED)
    # The deletes ride with the next write, which cannot commit: they are committed alone.
    with pytest.raises(SpoolUnavailable):
        await buf.put(make_events(200, tag="big", size=2000))
    assert spooled_rows(tmp_path / "spool") == 0
    assert buf.refusal == "spool disk full"
    db.execute("PRAGMA max_page_count=1073741823")
    await buf.put(make_events(3, tag="later"))
    assert buf.refusal is None
    await buf.aclose()
    again = disk(tmp_path)
    assert messages(await take_all(again, 3)) == ["later-0", "later-1", "later-2"]
    await again.aclose()


async def test_a_full_disk_is_logged_once_with_a_count_not_once_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    buf = disk(tmp_path, clock=clock, max_bytes=1 << 30)
    await buf.put(make_events(5))
    db = buf._spool.connection
    db.execute(f"PRAGMA max_page_count={int(db.execute('PRAGMA page_count').fetchone()[0])}")

    def lines() -> list[Any]:
        return [r for r in caplog.records if r.getMessage() == "spool write failed; requests refused with 503"]

    for i in range(20):
        with pytest.raises(SpoolUnavailable):
            await buf.put(make_events(50, tag=f"r{i}", size=2000))
        await clock.advance(FAILED_LOG_SECS / 20 - 0.01)
    assert len(lines()) == 1 and lines()[0].__dict__["events"] == 50 and lines()[0].__dict__["disk_full"]
    # The next line comes once FAILED_LOG_SECS have passed, with the count of what was refused meanwhile.
    await clock.advance(1)
    with pytest.raises(SpoolUnavailable):
        await buf.put(make_events(50, tag="later", size=2000))
    assert len(lines()) == 2 and lines()[1].__dict__["events"] == 20 * 50
    db.execute("PRAGMA max_page_count=1073741823")
    await buf.aclose()


async def test_nothing_more_is_sent_while_deliveries_cannot_be_recorded(small_fs: Path) -> None:
    other = small_fs / "other-data"
    other.write_bytes(bytes(1024 * 1024))  # someone else's megabyte, deleted later
    clock = ManualClock()
    buf = DiskBuffer("default", small_fs / "spool", disk_config(reserve_bytes=0), Metrics(), clock=clock)
    accepted = 0
    with pytest.raises(SpoolUnavailable):
        while True:
            await buf.put(make_events(10, tag=f"p{accepted}", size=2000))
            accepted += 10
    filler = fill_up(small_fs)
    first = await buf.take(10, 10_000_000, 0.01)
    assert first
    for t in first:
        t.ack.resolve(AckStatus.DELIVERED)
    # The committer tries the deletes alone DELETE_FLUSH_SECS later; they cannot commit either.
    await clock.run_until(lambda: buf.refusal != "spool disk full", DELETE_FLUSH_SECS, "the deletes were not tried")
    assert buf.refusal == "spool disk full: deliveries cannot be recorded"
    nxt = asyncio.create_task(buf.take(1, 10_000_000, 0.01))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not nxt.done()  # sending more would only make more deliveries that cannot be recorded
    filler.unlink()  # room returns: the deletes commit, and sending goes on
    other.unlink()
    await clock.run_until(nxt.done, DELETE_FLUSH_SECS, "sending did not go on")
    assert len(await nxt) == 1
    assert buf.refusal is None
    await buf.aclose()
    assert spooled_rows(small_fs / "spool") == accepted - len(first)


async def test_readiness_comes_back_when_room_does_without_waiting_for_a_request(small_fs: Path) -> None:
    clock = ManualClock()
    buf = DiskBuffer("default", small_fs / "spool", disk_config(reserve_bytes=1024 * 1024), Metrics(), clock=clock)
    filler = fill_up(small_fs)  # someone else filled the disk; the spool holds nothing
    with pytest.raises(SpoolUnavailable):
        await buf.put(make_events(10, size=2000))
    assert buf.refusal == "spool disk full"
    await clock.when_waiting()  # the committer probes for room every ROOM_PROBE_SECS
    await clock.advance(ROOM_PROBE_SECS)
    await eventually(lambda: clock.waiting > 0, "the committer did not probe again")
    assert buf.refusal == "spool disk full"  # probed: still no room
    filler.unlink()
    # No request comes (a load balancer heeding /readyz sends none): the spool finds the room itself.
    await clock.advance(ROOM_PROBE_SECS)
    await eventually(lambda: buf.refusal is None, "the spool did not find the room")
    await buf.put(make_events(10, tag="later", size=2000))
    await buf.aclose()
    assert spooled_rows(small_fs / "spool") == 10


def readyz(gw: Proc) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(gw.url("admin") + "/readyz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def metric(gw: Proc, line_start: str) -> float:
    with urllib.request.urlopen(gw.url("admin") + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def send(gw: Proc, tag: str) -> tuple[int, list[str], dict[str, str]]:
    """One SDK request of 10 events; the messages it carried."""
    msgs = [f"{tag}-{i}-{MESSAGE}" for i in range(10)]
    status, _, headers = post(gw.url() + "/v2/log", {"events": [{"event": {"message": m}} for m in msgs]})
    return status, msgs, headers


class Sender:
    """An SDK sender: 10 events a request, trying a refused request again after a short back-off."""

    def __init__(self, gw: Proc) -> None:
        self.gw = gw
        self.answered: list[str] = []  # every message answered 2xx
        self.refused = 0  # requests answered 503 by this gateway process

    def once(self, tag: str) -> tuple[int, dict[str, str]]:
        status, msgs, headers = send(self.gw, tag)
        if status == 200:
            self.answered += msgs
        else:
            assert status == 503, status
            self.refused += 1
        return status, headers

    def until_accepted(self, tag: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while self.once(tag)[0] != 200:
            assert time.monotonic() < end, f"intake still refuses {tag} after {timeout}s"
            time.sleep(0.1)  # the sender's back-off, not a test wait


def test_a_full_disk_recovers_by_itself_and_a_restart_replays_nothing_delivered(tmp_path: Path, small_fs: Path) -> None:
    up_dir = tmp_path / "upstream"
    up_dir.mkdir()
    db = up_dir / "local-audit.db"
    with local_audit(up_dir, TOKEN, "--enable-test-faults") as upstream:
        faults(upstream, outage=True)
        cfg = config(tmp_path, upstream, path=str(small_fs / "spool"), max_bytes=64 * 1024 * 1024)
        p = ports()
        gw = start_gateway(tmp_path, config=cfg, ports=p)
        sender = Sender(gw)
        try:
            # 1. The outage fills the filesystem: intake answers 503 + Retry-After, /readyz says why.
            for n in range(2000):
                status, headers = sender.once(f"outage{n}")
                if status != 200:
                    break
            assert status == 503 and int(headers["Retry-After"]) >= 1, "the filesystem never filled"
            assert sender.answered
            status, body = readyz(gw)
            assert status == 503 and "default: spool disk full" in body["reasons"], body

            # 2. The upstream comes back; the sender goes on.  Intake recovers by itself, without a
            # restart (the disk is small: a request may still meet a 503 while deliveries make room).
            faults(upstream, reset=True)
            sender.until_accepted("after", timeout=60)
            for k in range(20):
                sender.until_accepted(f"more{k}")
            assert sorted(wait_stored(db, len(sender.answered))) == sorted(sender.answered)
            end = time.monotonic() + 30
            while readyz(gw)[0] != 200 and time.monotonic() < end:
                time.sleep(0.1)
            assert readyz(gw) == (200, {"status": "ready"})
            # Every refused request was counted.
            with urllib.request.urlopen(gw.url("admin") + "/metrics", timeout=10) as r:
                assert metric_sum(r.read().decode(), "gateway_intake_requests_refused_total") == sender.refused
            assert gw.terminate() == 0
        finally:
            gw.kill()

        # 3. A restart replays nothing: what was delivered is gone from the spool for good.
        gw = start_gateway(tmp_path, config=cfg, ports=p)
        sender.gw = gw
        try:
            assert metric(gw, 'gateway_buffer_events{destination="default"}') == 0
            sender.until_accepted("marker")
            wait_stored(db, len(sender.answered))
            assert gw.terminate() == 0
        finally:
            gw.kill()
        assert "spool replays what was left" not in gw.log()
        dups = {m[:20]: c for m, c in collections.Counter(stored(db)).items() if c > 1}
        assert not dups, f"stored more than once: {dups}"
        assert sorted(stored(db)) == sorted(sender.answered)
