"""A vendor route's batch admission (:meth:`Admitter.admit_mapped`, issue 18) against the full path.

The route maps every record with one ``map`` and admits lists of fields and dedup ids, with no
``Candidate`` per record, when each record maps and the compiled schema takes every event; else
it takes the full path (a ``Candidate`` per record, :meth:`Admitter.admit`), which words every
error.  Either way the buffered events, the answer's errors and the dead letters must be those
the full path gives alone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.acks import AckStatus
from gateway.bench import auth0_body
from gateway.buffer.memory import MemoryBuffer
from gateway.config import DestinationConfig
from gateway.dedup import DedupConfig, DedupWindow
from gateway.normalize.schema import Schema
from gateway.pipeline import Destination
from gateway.sinks.deadletter.local import LocalDeadLetterStore
from gateway.sources.intake import Admission, Admitter
from gateway.sources.webhook.config import WebhookSourceConfig
from gateway.sources.webhook.vendor_routes import VendorRoute
from gateway.telemetry.metrics import Metrics


class Side:
    """One route over its own memory buffer, dedup window and dead-letter file."""

    def __init__(self, tmp: Path, fmt: str, spec: dict[str, Any]) -> None:
        self.metrics = Metrics()
        self.buffer = MemoryBuffer("default", 10_000, 100_000_000, self.metrics)
        dest = Destination("default", DestinationConfig(), self.buffer, None, Schema.standard(), self.metrics, 0)  # type: ignore[arg-type]
        self.window = DedupWindow(None, DedupConfig(), self.metrics)
        self.dlq_path = tmp / "dlq.db"
        self.dlq = LocalDeadLetterStore(self.dlq_path, self.metrics)
        admitter = Admitter("vendor", dest, self.metrics, self.dlq, dedup=self.window)
        config = WebhookSourceConfig.model_validate(
            {"type": "webhook", "format": fmt, "destination": "default", **spec}
        )
        self.route = VendorRoute("vendor", config, admitter)
        self.candidates_built = 0
        full = self.route._candidates

        def counted(*args: Any) -> Any:
            self.candidates_built += 1
            return full(*args)

        self.route._candidates = counted  # type: ignore[method-assign,assignment]

    async def outcome(self, body: bytes, *, full_path: bool) -> tuple[Any, ...]:
        request = make_mocked_request("POST", "/hook", headers={"Content-Type": "application/json"})
        if full_path:
            records = self.route._records(request, body)
            adm: Admission = await self.route.admitter.admit(self.route._candidates(records))
        else:
            adm = await self.route._admit(request, body)
        events = self.buffer.drain_nowait()
        buffered = [(orjson.loads(e.item), e.dedup_key, e.source, e.want_envelope, e.credential) for e in events]
        for e in events:
            e.ack.resolve(AckStatus.DELIVERED, None)
        await self.dlq.close()
        db = sqlite3.connect(self.dlq_path)
        letters = db.execute(
            "SELECT source, destination, reason, detail, payload FROM deadletters ORDER BY id"
        ).fetchall()
        db.close()
        answer = (adm.indexes, adm.errors, adm.refused, adm.total, adm.pointer_template, adm.group.done)
        return answer, buffered, letters, sorted(self.window._seen)


def _auth0_records(n: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads(auth0_body(n, 7))
    return records


def _with(records: list[dict[str, Any]], i: int, **data: Any) -> bytes:
    records[i]["data"].update(data)
    return orjson.dumps(records)


CASES: dict[str, tuple[str, dict[str, Any], bytes]] = {
    "auth0, every record valid": ("auth0", {}, auth0_body(20, 1)),
    "auth0 {logs: [...]}, one id twice": (
        "auth0",
        {},
        orjson.dumps({"logs": _auth0_records(3) + _auth0_records(1)}),
    ),
    "auth0, a record that cannot be mapped": ("auth0", {}, orjson.dumps([*_auth0_records(3), {"log_id": "x"}])),
    "auth0, a date the compiled schema declines": (
        "auth0",
        {},
        _with(_auth0_records(4), 2, date="not a date"),
    ),
    "auth0, a date the full path coerces": ("auth0", {}, _with(_auth0_records(4), 1, date=1700622245)),
    "okta": (
        "okta",
        {},
        orjson.dumps(
            {
                "data": {
                    "events": [
                        {
                            "uuid": f"u-{i}",
                            "published": "2026-01-01T00:00:00.000Z",
                            "eventType": "user.session.start",
                            "displayMessage": "User login",
                            "outcome": {"result": "SUCCESS"},
                            "actor": {"alternateId": "a@example.com"},
                        }
                        for i in range(3)
                    ]
                }
            }
        ),
    ),
    "json with a map (full path only)": (
        "json",
        {"map": {"message": "msg", "actor": "who"}},
        orjson.dumps([{"msg": "hello", "who": "me"}, {"msg": "again", "who": "you"}]),
    ),
    "json records as events, one without a message": (
        "json",
        {},
        orjson.dumps([{"message": "hello"}, {"actor": "me"}, {"message": "x", "timestamp": "2026-01-01T00:00:00Z"}]),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_vendor_route_admits_what_the_full_path_admits_and_words_the_same_errors(
    tmp_path: Path, case: str
) -> None:
    fmt, spec, body = CASES[case]
    fast, full = Side(tmp_path / "fast", fmt, spec), Side(tmp_path / "full", fmt, spec)
    assert await fast.outcome(body, full_path=False) == await full.outcome(body, full_path=True)


async def test_a_body_of_valid_records_is_admitted_without_a_candidate_per_record(tmp_path: Path) -> None:
    side = Side(tmp_path, "auth0", {})
    (indexes, errors, *_), buffered, letters, seen = await side.outcome(auth0_body(5, 3), full_path=False)
    assert side.candidates_built == 0
    assert indexes == [0, 1, 2, 3, 4] and errors == [] and letters == []
    assert [key for _item, key, *_ in buffered] == [r["log_id"] for r in orjson.loads(auth0_body(5, 3))]
    assert len(seen) == 5  # delivered: their ids recorded
