"""Issue 16: sizes and durations with units in config, and the tap hub's filters, redaction and cost."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from gateway.config import parse_config
from gateway.configbase import parse_duration_secs, parse_size
from gateway.errors import ConfigError
from gateway.telemetry.redact import register
from gateway.telemetry.tap import QUEUE_LINES, TapHub, Watcher


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1GiB", 1024**3), ("512KiB", 512 * 1024), ("4MB", 4_000_000), ("1000", 1000), ("1.5 KiB", 1536), ("2k", 2000)],
)
def test_sizes_with_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h30m", 5400.0), ("2d", 172800.0), ("10", 10.0), ("1.5s", 1.5)],
)
def test_durations_with_units(text: str, expected: float) -> None:
    assert parse_duration_secs(text) == expected


@pytest.mark.parametrize("text", ["1 lot", "GiB", "1GiBs", "-1s", "1 s 2"])
def test_what_is_not_a_size_or_duration_is_left_to_the_field(text: str) -> None:
    assert parse_size(text) is None
    assert parse_duration_secs(text) is None


BASE: dict[str, Any] = {
    "destinations": {"audit": {}},
    "sources": {"a": {"type": "webhook", "format": "auth0", "destination": "audit"}},
}


def test_units_convert_before_the_bounds_apply() -> None:
    cfg = parse_config({**BASE, "buffer": {"max_bytes": "1GiB"}, "shutdown_timeout_secs": "1m"}, env={})
    assert cfg.buffer.max_bytes == 1024**3 and cfg.shutdown_timeout_secs == 60.0
    with pytest.raises(ConfigError, match=r"shutdown_timeout_secs: Input should be greater than 0"):
        parse_config({**BASE, "shutdown_timeout_secs": "0s"}, env={})


def test_unknown_keys_get_the_closest_known_one_at_any_depth() -> None:
    bad = {**BASE, "destinations": {"audit": {"batch": {"max_event": 5}}}, "upstreem": {}}
    with pytest.raises(ConfigError) as err:
        parse_config(bad, env={})
    assert "destinations.audit.batch.max_event: Extra inputs are not permitted; did you mean 'max_events'?" in str(
        err.value
    )
    assert "upstreem: Extra inputs are not permitted; did you mean 'upstream'?" in str(err.value)


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "upstream": {"url": "${U}", "token": "${T}"}, "listen": "${L:-127.0.0.1:1}"}, env={})
    assert str(err.value) == (
        "upstream.url: environment variable U is not set; upstream.token: environment variable T is not set"
    )


@dataclass
class Cand:
    original: Any
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Ev:
    item: bytes
    source: str


def lines(w: Watcher) -> list[dict[str, Any]]:
    out = []
    while not w.queue.empty():
        line = w.queue.get_nowait()
        assert line is not None
        out.append(orjson.loads(line))
    return out


async def test_the_hub_is_inactive_without_watchers_and_filters_redacts_and_samples() -> None:
    hub = TapHub()
    assert not hub.active
    hub.configure(["actor", "new.password"])
    register("sk_TAPUNIT_SECRET_91")
    w = hub.watch(Watcher(source="a", stage="normalized"))
    everything = hub.watch(Watcher())
    assert hub.active and hub.watching == 2
    item = orjson.dumps(
        {"event": {"actor": "eve", "new": {"password": "p4ss", "k": 1}, "message": "sk_TAPUNIT_SECRET_91"}}
    )
    hub.admission("a", "audit", [b'{"x": 1}'], [item], [Cand({"y": 2}, [{"code": "BadFormat"}])])
    hub.admission("b", "audit", [], [item], [])
    hub.delivered("audit", [Ev(item, "a")])
    got = lines(w)
    assert [(x["stage"], x["source"]) for x in got] == [("normalized", "a")]
    assert got[0]["event"] == {"actor": "***", "new": {"password": "***", "k": 1}, "message": "***"}
    stages = [(x["stage"], x["source"]) for x in lines(everything)]
    assert stages == [
        ("received", "a"),
        ("normalized", "a"),
        ("rejected", "a"),
        ("normalized", "b"),
        ("delivered", "a"),
    ]
    # a reader that falls behind skips events: none is waited for
    for _ in range(QUEUE_LINES + 5):
        hub.delivered("audit", [Ev(item, "a")])
    assert everything.queue.qsize() == QUEUE_LINES and everything.skipped == 5
    hub.end_all()
    assert not hub.active
    await asyncio.sleep(0)
