"""Issue 18: ``run --workers 2``: two worker processes behind one intake port and in one consumer group.

Real processes throughout: the supervisor and its workers, the embedded local audit log (run by
the supervisor), the Kafka-protocol broker.  A worker is SIGKILLed under webhook load: every
request answered 200 must be stored, and the supervisor starts the worker again.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from tests.integration.kafka.harness import pangea_values
from tests.kafka_broker import create_topic, kafka_source_yaml, produce
from tests.support.procs import Proc, start_gateway, stored_messages

TOKEN = "pts_workers_local_token"
PARTITIONS = 6
KAFKA_EVENTS = 600


def write_config(tmp: Path, bootstrap: str, topic: str, group: str) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: 10
destinations:
  default:
    schema: standard
    batch: {{max_events: 200, timeout_secs: 0.02}}
sources:
  sdk:
    type: webhook
    format: pangea
    destination: default
{kafka_source_yaml("app", bootstrap, topic, group)}"""
    )
    return cfg


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` on ``port`` as ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


SDK_RECEIVED = 'gateway_events_received_total{destination="default",source="sdk"}'


def owned_partitions(m: dict[str, float]) -> set[str]:
    """Partitions with a lag gauge: the ones a worker owns."""
    return {k.split('partition="')[1].split('"')[0] for k in m if k.startswith("gateway_kafka_consumer_lag{")}


def started_workers(gw: Proc) -> list[dict[str, int]]:
    """The supervisor's ``worker started`` lines: index, pid, admin port (a restart adds one)."""
    return [json.loads(ln) for ln in gw.log().splitlines() if ln.startswith("{") and '"message":"worker started"' in ln]


class Sender:
    """Threads POSTing one unique event per request on a fresh connection; remembers the 200s."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.acked: set[str] = set()
        self.failed = 0
        self._seq = 0
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def one(self) -> None:
        with self._lock:
            self._seq += 1
            message = f"{self.prefix}{self._seq}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/v1/log", json.dumps({"event": {"message": message}}), {"Connection": "close"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                with self._lock:
                    self.acked.add(message)
                return
        except OSError:  # the SIGKILLed worker's connections: reset, never answered 200
            pass
        finally:
            conn.close()
        with self._lock:
            self.failed += 1

    def run(self, requests: int, threads: int = 4) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                with self._lock:
                    if self._seq >= requests:
                        return
                self.one()

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()


def wait_for(what: str, predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_workers_share_one_port_and_one_consumer_group_and_a_sigkilled_worker_loses_nothing_acknowledged(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic, group = f"audit.events.{uuid.uuid4().hex[:10]}", f"audit-gateway-{uuid.uuid4().hex[:10]}"
    asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
    asyncio.run(produce(kafka_bootstrap, topic, pangea_values(KAFKA_EVENTS, "k"), partitions=PARTITIONS))
    cfg = write_config(tmp_path, kafka_bootstrap, topic, group)
    db = tmp_path / "data" / "local-audit.db"  # the supervisor's embedded local audit log
    gw = start_gateway(tmp_path, config=cfg, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}, run_args=["--workers", "2"])
    try:
        workers = started_workers(gw)
        assert [w["worker"] for w in workers] == [0, 1], gw.log()[-3000:]
        admin = [w["admin_port"] for w in workers]

        # One consumer group: the two workers split the six partitions between them.
        def split() -> bool:
            a, b = owned_partitions(scrape(admin[0])), owned_partitions(scrape(admin[1]))
            return bool(a and b and a.isdisjoint(b) and len(a | b) == PARTITIONS)

        wait_for("both workers to own partitions", split)

        # One port: new connections reach both workers.
        sender = Sender(gw.ports["intake"], "w")
        sender.run(200)
        per_worker = [scrape(p).get(SDK_RECEIVED, 0.0) for p in admin]
        assert all(n > 0 for n in per_worker), per_worker
        assert sum(per_worker) == len(sender.acked) == 200 and sender.failed == 0
        # The admin port's /metrics is the workers' summed.
        assert scrape(gw.ports["admin"])[SDK_RECEIVED] == sum(per_worker)

        # SIGKILL worker 0 under load.
        load = threading.Thread(target=sender.run, args=(1400,))
        load.start()
        wait_for("load on both workers", lambda: len(sender.acked) >= 400)
        os.kill(workers[0]["pid"], signal.SIGKILL)
        load.join()
        # The survivor kept serving the port, and the supervisor started worker 0 again.
        wait_for("worker 0 restarted", lambda: len(started_workers(gw)) == 3)
        assert started_workers(gw)[2]["worker"] == 0
        assert len(sender.acked) > 1000, (len(sender.acked), sender.failed)
        assert "worker died; starting it again" in gw.log()
        restarted = started_workers(gw)[2]["admin_port"]
        wait_for("the restarted worker to rejoin the group", lambda: bool(owned_partitions(scrape(restarted))))
        kafka = {f"k{i}" for i in range(KAFKA_EVENTS)}
        wait_for("every Kafka record stored", lambda: kafka <= set(stored_messages(db)))
    finally:
        code = gw.terminate()
    assert code == 0, gw.log()[-3000:]
    stored = set(stored_messages(db))
    missing = sender.acked - stored
    assert not missing, f"{len(missing)} acknowledged events not stored: {sorted(missing)[:10]}"
    # Each worker had its own state directory.
    assert sorted(p.name for p in (tmp_path / "data").glob("worker-*")) == ["worker-0", "worker-1"]
    assert re.search(r'"message":"worker exited","worker":1,"exit_code":0', gw.log())


def test_each_worker_has_its_own_spool_under_an_explicit_buffer_path(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cfg = tmp_path / "disk.yaml"
    cfg.write_text(
        f"""
buffer: {{type: disk, path: {spool}, fsync_interval_ms: 5}}
destinations:
  default:
    schema: standard
    batch: {{max_events: 50, timeout_secs: 0.02}}
sources:
  sdk:
    type: webhook
    format: pangea
    destination: default
"""
    )
    gw = start_gateway(tmp_path, config=cfg, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}, run_args=["--workers", "2"])
    try:
        sender = Sender(gw.ports["intake"], "d")
        sender.run(100)
        assert len(sender.acked) == 100 and sender.failed == 0
    finally:
        code = gw.terminate()
    assert code == 0, gw.log()[-3000:]
    # Two spools, one per worker, never one shared by both processes.
    assert sorted(p.name for p in spool.iterdir()) == ["worker-0", "worker-1"]
    assert all((spool / w / "default").exists() for w in ("worker-0", "worker-1"))
    assert sender.acked <= set(stored_messages(tmp_path / "data" / "local-audit.db"))
