"""Issue 3, end to end: `audit-gateway run` with a Kafka source, a real broker, the local audit log.

Every gateway and the local audit log are real processes on loopback; the broker is tansu (or
``KAFKA_BOOTSTRAP_SERVERS``).  Delivery is checked in the local audit log's own SQLite file and
committed offsets against the partitions' high watermarks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.kafka.deadletter import HEADER_OFFSET, HEADER_REASON, HEADER_TOPIC
from tests.integration.kafka.harness import pangea_values
from tests.kafka_broker import (
    committed_and_end_offsets,
    kafka_source_yaml,
    produce,
    read_topic,
)
from tests.support.accounting import scrape_and_check
from tests.support.procs import Proc, free_port, local_audit, start_gateway, stored_messages

TOKEN = "pts_kafka_e2e_token"


def write_config(tmp: Path, upstream: str, bootstrap: str, topic: str, group: str, extra: str = "") -> Path:
    cfg = tmp / f"gateway-{group}.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: 10
log_level: info
upstream:
  url: {upstream}
  token: ${{UPSTREAM_TOKEN}}
  max_in_flight: 4
  retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 1.0}}
  poll: {{initial_delay_secs: 0.05, max_delay_secs: 0.5}}
destinations:
  default:
    schema: standard
    batch: {{max_events: 1000, timeout_secs: 0.05}}
sources:
{kafka_source_yaml("app", bootstrap, topic, group)}{extra}
"""
    )
    return cfg


def run_gateway(tmp: Path, cfg: Path, name: str) -> Proc:
    ports = {"intake": free_port(), "admin": free_port(), "local_audit": free_port()}
    return start_gateway(tmp, config=cfg, env={"UPSTREAM_TOKEN": TOKEN}, ports=ports, data_dir=tmp / f"data-{name}")


async def la_stats(session: aiohttp.ClientSession, la: Proc) -> dict[str, object]:
    async with session.get(la.url("local_audit") + "/_stats", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        body = await r.json()
        result: dict[str, object] = body["result"]
        return result


async def wait_stored(session: aiohttp.ClientSession, la: Proc, n: int, timeout: float, *procs: Proc) -> int:
    end = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < end:
        stored = int(la_stats_value(await la_stats(session, la), "stored_events"))
        if stored >= n:
            return stored
        for p in procs:
            assert p.popen.poll() is None or p.popen.returncode in (0, -9), p.log()[-3000:]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{stored} of {n} events stored after {timeout}s")


def la_stats_value(stats: dict[str, object], key: str) -> float:
    v = stats[key]
    assert isinstance(v, int | float)
    return float(v)


async def metrics(session: aiohttp.ClientSession, gw: Proc) -> dict[str, float]:
    """The gateway's /metrics as ``{'name{labels}': value}``."""
    async with session.get(gw.url("admin") + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def metric_sum(m: dict[str, float], name: str) -> float:
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def owned_partitions(m: dict[str, float]) -> set[str]:
    """Partitions with a lag gauge: the ones this gateway owns (revoked ones are removed)."""
    return {k.split('partition="')[1].split('"')[0] for k in m if k.startswith("gateway_kafka_consumer_lag{")}


async def wait_committed_to_end(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Until the group's committed offsets equal the high watermarks (an empty partition: none)."""
    end_at = time.monotonic() + timeout
    while True:
        committed, end = await committed_and_end_offsets(bootstrap, group, topic)
        done = {p: c or 0 for p, c in committed.items()}
        if done == end or time.monotonic() > end_at:
            assert done == end, (committed, end)
            return end
        await asyncio.sleep(0.2)


@pytest.fixture
def la(tmp_path: Path) -> Iterator[Proc]:
    with local_audit(tmp_path, TOKEN) as proc:
        yield proc


async def test_100k_events_across_six_partitions_arrive_exactly_once_and_are_committed_to_the_end(
    tmp_path: Path, la: Proc, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 100_000
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
    cfg = write_config(tmp_path, la.url("local_audit"), kafka_bootstrap, topic, group_id)
    gw = run_gateway(tmp_path, cfg, "one")
    try:
        async with aiohttp.ClientSession() as s:
            await wait_stored(s, la, n, 150, gw)
            end = await wait_committed_to_end(kafka_bootstrap, group_id, topic)
            m = await metrics(s, gw)
            acc = await scrape_and_check(gw.url("admin"), quiescent=True)
        assert acc[("app", "default")]["forwarded"] == n
        assert sum(end.values()) == n
        assert metric_sum(m, "gateway_kafka_messages_consumed_total") == n
        assert metric_sum(m, "gateway_kafka_consumer_lag") == 0
        assert gw.terminate() == 0
    finally:
        gw.kill()
    counts = Counter(stored_messages(tmp_path / "local-audit.db"))
    assert len(counts) == n and set(counts.values()) == {1}


async def kill_and_restart(tmp: Path, bootstrap: str, topic: str, group: str, n: int, kills: int) -> None:
    """Under 5xx/429/202 faults, SIGKILL the gateway ``kills`` times mid-stream; nothing may be lost."""
    faults = ["--fault-5xx-ratio", "0.2", "--fault-429-ratio", "0.1", "--fault-retry-after-secs", "1"]
    faults += ["--fault-202-every", "4", "--fault-seed", "7"]
    await produce(bootstrap, topic, pangea_values(n), partitions=6)
    with local_audit(tmp, TOKEN, "--enable-test-faults", *faults) as la:
        cfg = write_config(tmp, la.url("local_audit"), bootstrap, topic, group)
        async with aiohttp.ClientSession() as s:
            for k in range(kills):
                gw = run_gateway(tmp, cfg, f"killed-{k}")
                try:
                    await wait_stored(s, la, n * (k + 1) // (kills + 1), 120, gw)
                finally:
                    gw.kill()  # SIGKILL mid-stream: batches in flight, offsets not committed
            last = run_gateway(tmp, cfg, "last")
            try:
                await wait_stored(s, la, n, 180, last)
                await wait_committed_to_end(bootstrap, group, topic, timeout=120)
                stats = await la_stats(s, la)
                # What the last run read again (uncommitted by the killed ones), all accounted for.
                await scrape_and_check(last.url("admin"), quiescent=True, pairs={("app", "default")})
            finally:
                assert last.terminate() == 0
    got = Counter(stored_messages(tmp / "local-audit.db"))
    duplicates = sum(got.values()) - len(got)
    print(f"{kills} SIGKILL(s) + restart under faults: {n} events, {len(got)} distinct, {duplicates} duplicates")
    print(f"faults injected: {stats['faults_injected']}")
    assert set(got) == {f"m{i}" for i in range(n)}


async def test_sigkill_mid_stream_with_a_failing_upstream_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    await kill_and_restart(tmp_path, kafka_bootstrap, topic, group_id, 30_000, kills=1)


@pytest.mark.slow
async def test_repeated_sigkills_of_100k_events_under_faults_lose_nothing(
    tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    await kill_and_restart(tmp_path, kafka_bootstrap, topic, group_id, 100_000, kills=4)


async def test_two_gateways_split_the_partitions_and_the_survivor_takes_over(
    tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    first, n = 600, 30_000
    await produce(kafka_bootstrap, topic, pangea_values(first, "warm"), partitions=6)
    # A slow upstream (small batches, 100 ms each) keeps the stream flowing while one gateway leaves.
    with local_audit(tmp_path, TOKEN, "--enable-test-faults", "--fault-latency-ms", "100") as la:
        extra = "buffer: {max_events: 3000}\n"
        cfg = write_config(tmp_path, la.url("local_audit"), kafka_bootstrap, topic, group_id, extra)
        cfg.write_text(cfg.read_text().replace("max_events: 1000,", "max_events: 100,"))
        a = run_gateway(tmp_path, cfg, "a")
        b = run_gateway(tmp_path, cfg, "b")
        try:
            async with aiohttp.ClientSession() as s:
                end = time.monotonic() + 60
                while True:  # both own partitions once the group settled (each committed some)
                    pa, pb = owned_partitions(await metrics(s, a)), owned_partitions(await metrics(s, b))
                    if pa and pb and len(pa | pb) == 6 and pa.isdisjoint(pb):
                        break
                    assert time.monotonic() < end, (pa, pb)
                    await asyncio.sleep(0.2)
                await wait_stored(s, la, first, 30, a, b)
                await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
                await wait_stored(s, la, first + 2000, 60, a, b)
                assert a.terminate() == 0  # a leaves mid-stream: its partitions move to b
                stored = int(la_stats_value(await la_stats(s, la), "stored_events"))
                assert stored < first + n, "the stream should still be flowing when a leaves"
                await wait_stored(s, la, first + n, 120, b)
                await wait_committed_to_end(kafka_bootstrap, group_id, topic)
                mb = await metrics(s, b)
                assert owned_partitions(mb) == {str(p) for p in range(6)}
                revoked = [
                    v for k, v in mb.items() if k.startswith("gateway_kafka_rebalances_total{") and "revoked" in k
                ]
                assert sum(revoked) >= 1
                # The survivor balances, revoked-partition drops included (exact with in-flight events).
                await scrape_and_check(b.url("admin"), pairs={("app", "default")})
        finally:
            a.kill()
            b.terminate()
    got = Counter(stored_messages(tmp_path / "local-audit.db"))
    dups = sum(got.values()) - len(got)
    print(f"two gateways: split {sorted(pa)} / {sorted(pb)}; {len(got)} distinct stored, {dups} duplicates")
    assert set(got) == {f"warm{i}" for i in range(first)} | {f"m{i}" for i in range(n)}


async def test_a_poison_message_lands_on_the_dead_letter_topic_and_its_partition_keeps_flowing(
    tmp_path: Path, la: Proc, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    good = pangea_values(200)
    values = [*good[:100], b'{"event": {"message": 42, "actor": {"deeply": ["nested"]}', *good[100:]]
    await produce(kafka_bootstrap, topic, values, keys=[b"k"] * len(values))  # all on one partition
    cfg = write_config(tmp_path, la.url("local_audit"), kafka_bootstrap, topic, group_id)
    gw = run_gateway(tmp_path, cfg, "poison")
    try:
        async with aiohttp.ClientSession() as s:
            await wait_stored(s, la, 200, 60, gw)
            await wait_committed_to_end(kafka_bootstrap, group_id, topic)
            m = await metrics(s, gw)
            acc = await scrape_and_check(gw.url("admin"), quiescent=True)
        # The poison message counts as rejected at intake, under the dead-letter topic's reason.
        assert acc[("app", "default")]["rejected"] == 1 and acc[("app", "default")]["forwarded"] == 200
        rejected = {k: v for k, v in m.items() if k.startswith("gateway_events_rejected_total{") and v}
        assert [('reason="decode_error"' in k and 'stage="intake"' in k, v) for k, v in rejected.items()] == [(True, 1)]
        dlq = await read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
        assert len(dlq) == 1
        msg = dlq[0]
        headers = dict(msg.headers)  # type: ignore[attr-defined]
        assert headers[HEADER_REASON] == b"decode_error"
        assert headers[HEADER_TOPIC] == topic.encode() and headers[HEADER_OFFSET] == b"100"
        assert msg.value == values[100] and msg.key == b"k"  # type: ignore[attr-defined]
        assert metric_sum(m, "gateway_kafka_deadlettered_total") == 1
    finally:
        gw.terminate()
    assert sorted(stored_messages(tmp_path / "local-audit.db")) == sorted(f"m{i}" for i in range(200))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


RSS_BOUND_MIB = 150


async def test_a_stalled_upstream_pauses_the_consumer_and_rss_stays_bounded(
    tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 100_000
    big = [orjson.dumps({"event": {"message": f"m{i} " + "x" * 400, "actor": "rss"}}) for i in range(n)]
    await produce(kafka_bootstrap, topic, big, partitions=6)  # ~45 MB waiting in the topic
    with local_audit(tmp_path, TOKEN, "--enable-test-faults", "--fault-outage") as la:
        cfg = write_config(
            tmp_path, la.url("local_audit"), kafka_bootstrap, topic, group_id, "buffer: {max_events: 5000}\n"
        )
        gw = run_gateway(tmp_path, cfg, "stall")
        try:
            async with aiohttp.ClientSession() as s:
                end = time.monotonic() + 60
                while metric_sum(await metrics(s, gw), "gateway_kafka_paused_partitions") < 6:
                    assert time.monotonic() < end, "partitions never paused"
                    await asyncio.sleep(0.2)
                peak = 0.0
                for _ in range(15):  # stays paused and small while the upstream is down
                    peak = max(peak, rss_mib(gw.popen.pid))
                    await asyncio.sleep(0.2)
                m = await metrics(s, gw)
                consumed = metric_sum(m, "gateway_kafka_messages_consumed_total")
                assert metric_sum(m, "gateway_kafka_paused_partitions") == 6
                assert metric_sum(m, "gateway_buffer_events") <= 5000
                # buffer + batches in flight + one poll, not the 100k waiting in the topic
                assert consumed <= 5000 + 4 * 1000 + 2000, consumed
                print(f"stalled upstream: consumed {consumed:.0f} of {n}, peak RSS {peak:.1f} MiB")
                assert peak < RSS_BOUND_MIB, peak
                # Mid-stall, exact with what is in flight: every consumed event buffered or retrying.
                acc = await scrape_and_check(gw.url("admin"))
                assert acc[("app", "default")]["in_flight"] > 0
                # the upstream comes back: the partitions resume
                async with s.post(
                    la.url("local_audit") + "/_faults",
                    json={"outage": False},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as r:
                    assert r.status == 200
                await wait_stored(s, la, 20_000, 60, gw)
        finally:
            gw.kill()
