"""A crash mid-write: the torn tail is detected and everything acknowledged before it replays."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from gateway.acks import AckGroup, AckStatus
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import DiskBuffer
from gateway.buffer.spool import DB_NAME, Record, Spool
from gateway.event import Event
from gateway.telemetry.metrics import Metrics

WAL_HEADER = 32
FRAME_HEADER = 24


def write_batches(spool: Spool, batches: int, per_batch: int, size: int = 1500, per_record: int = 5) -> None:
    """``batches`` transactions of ``per_batch`` events, in records of ``per_record`` events."""
    nid = 1
    for b in range(batches):
        records = []
        for start in range(0, per_batch, per_record):
            items = [
                orjson.dumps({"event": {"message": f"b{b}-{i}", "pad": "x" * size}})
                for i in range(start, min(per_batch, start + per_record))
            ]
            records.append(Record(nid, "src", items, [None] * len(items)))
            nid += 1
        spool.write(records, [])


def crash_image(src: Path, dst: Path) -> Path:
    """What a power cut leaves: the db and its WAL as fsynced (no checkpoint, no -shm)."""
    dst.mkdir(parents=True)
    shutil.copyfile(src / DB_NAME, dst / DB_NAME)
    shutil.copyfile(src / f"{DB_NAME}-wal", dst / f"{DB_NAME}-wal")
    return dst


async def replay(directory: Path) -> list[str]:
    buf = DiskBuffer("default", directory, BufferConfig(type="disk"), Metrics())
    out: list[str] = []
    while len(out) < buf.events:
        got = await buf.take(10_000, 1 << 30, 0.01)
        out.extend(orjson.loads(e.item)["event"]["message"] for e in got)
        for e in got:
            e.ack.resolve(AckStatus.DELIVERED)
    await buf.aclose()
    return out


def page_size(directory: Path) -> int:
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
async def test_a_torn_wal_tail_loses_only_the_unfinished_write(tmp_path: Path, damage: str) -> None:
    live = tmp_path / "live"
    spool = Spool(live)
    spool.connection.execute("PRAGMA wal_autocheckpoint=0")  # keep every commit in the WAL
    write_batches(spool, batches=5, per_batch=10)
    image = crash_image(live, tmp_path / "image")
    spool.close()

    wal = image / f"{DB_NAME}-wal"
    frame = FRAME_HEADER + page_size(image)
    data = bytearray(wal.read_bytes())
    assert (len(data) - WAL_HEADER) % frame == 0
    if damage == "truncated":
        # The power went out while the last frame (the last batch's commit frame) was written.
        del data[len(data) - frame // 2 :]
    else:
        # The last frame's page was written with garbage: its checksum no longer matches.
        pos = len(data) - frame // 2
        data[pos : pos + 64] = bytes(64)
    wal.write_bytes(bytes(data))

    replayed = await replay(image)
    assert replayed == [f"b{b}-{i}" for b in range(4) for i in range(10)]


async def test_the_spool_keeps_working_after_recovering_a_torn_tail(tmp_path: Path) -> None:
    live = tmp_path / "live"
    spool = Spool(live)
    spool.connection.execute("PRAGMA wal_autocheckpoint=0")
    write_batches(spool, batches=3, per_batch=5)
    image = crash_image(live, tmp_path / "image")
    spool.close()
    wal = image / f"{DB_NAME}-wal"
    wal.write_bytes(wal.read_bytes()[:-100])
    buf = DiskBuffer("default", image, BufferConfig(type="disk"), Metrics())
    assert buf.events == 10
    group = AckGroup(2)
    await buf.put([Event(b'{"event":{"message":"new"}}', group.ack(i), "src") for i in range(2)])
    assert group.status == AckStatus.DELIVERED
    assert buf.events == 12
    await buf.aclose()


async def test_a_spool_file_sqlite_cannot_open_is_set_aside_and_the_spool_starts_afresh(tmp_path: Path) -> None:
    d = tmp_path / "s"
    spool = Spool(d)
    write_batches(spool, batches=2, per_batch=5, size=10)
    spool.close()
    data = bytearray((d / DB_NAME).read_bytes())
    data[0:16] = b"not a database!!"  # the header is gone: SQLite refuses the file
    (d / DB_NAME).write_bytes(bytes(data))
    buf = DiskBuffer("default", d, BufferConfig(type="disk"), Metrics())
    assert buf.events == 0
    assert any(p.name.startswith(f"{DB_NAME}.corrupt-") for p in d.iterdir())
    await buf.aclose()


async def test_a_damaged_page_loses_only_the_rows_on_it(tmp_path: Path) -> None:
    d = tmp_path / "s"
    spool = Spool(d)
    write_batches(spool, batches=20, per_batch=10, size=1500, per_record=1)  # many pages, in id order
    spool.close()  # checkpointed into the db file
    data = bytearray((d / DB_NAME).read_bytes())
    ps = int.from_bytes(data[16:18], "big")
    middle = len(data) // ps // 2
    data[middle * ps : middle * ps + 200] = b"\xff" * 200  # one page in the middle is garbage
    (d / DB_NAME).write_bytes(bytes(data))
    replayed = await replay(d)
    assert 0 < len(replayed) < 200
    everything = [f"b{b}-{i}" for b in range(20) for i in range(10)]
    assert replayed == [m for m in everything if m in set(replayed)]  # in order, nothing invented
    assert any(p.name.startswith(f"{DB_NAME}.corrupt-") for p in d.iterdir())


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import orjson
    from gateway.acks import AckGroup
    from gateway.buffer.config import BufferConfig
    from gateway.buffer.disk import DiskBuffer
    from gateway.event import Event
    from gateway.telemetry.metrics import Metrics

    async def main() -> None:
        buf = DiskBuffer("default", Path(sys.argv[1]), BufferConfig(type="disk", fsync_interval_ms=2), Metrics())
        b = 0
        async def one(b: int) -> None:
            g = AckGroup(50)
            evs = [Event(orjson.dumps({"event": {"message": f"b{b}-{i}", "pad": "x" * 400}}), g.ack(i), "s")
                   for i in range(50)]
            await buf.put(evs)
            print(b, flush=True)   # acknowledged: from now on it must survive
        while True:
            await asyncio.gather(*(one(b + k) for k in range(4)))
            b += 4

    asyncio.run(main())
    """
)


async def test_sigkill_during_writes_keeps_every_acknowledged_batch_whole(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(d)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[3],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        )
        assert proc.stdout is not None
        acked: list[int] = []
        deadline = time.monotonic() + 30
        while len(acked) < 40 + 20 * round_ and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        acked.extend(int(x) for x in proc.stdout.read().split())
        proc.stdout.close()
        assert acked, "the writer acknowledged nothing"

        spool = Spool(d)  # what the restarted gateway finds
        records, _last = spool.read(0, 1_000_000)
        spool.close()
        per_batch: dict[str, int] = {}
        for rec in records:
            for item in rec.items:
                b = orjson.loads(item)["event"]["message"].split("-")[0]
                per_batch[b] = per_batch.get(b, 0) + 1
        assert all(f"b{b}" in per_batch for b in acked)  # nothing acknowledged is lost
        assert set(per_batch.values()) == {50}  # and no write is half there
        shutil.rmtree(d)


async def test_a_spool_of_the_first_layout_is_migrated_and_replayed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    db = sqlite3.connect(d / DB_NAME)
    db.execute("CREATE TABLE spool (id INTEGER PRIMARY KEY, source TEXT NOT NULL, dedup_key TEXT, item BLOB NOT NULL)")
    db.executemany(
        "INSERT INTO spool VALUES (?,?,?,?)",
        [(i, "src", f"k{i}", orjson.dumps({"event": {"message": f"old-{i}"}})) for i in range(1, 4)],
    )
    db.commit()
    db.close()
    assert await replay(d) == ["old-1", "old-2", "old-3"]
