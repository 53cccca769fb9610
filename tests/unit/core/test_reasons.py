"""One reason vocabulary and one place that counts the accounting equation (issue 16)."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway.buffer.disk import SpoolUnavailable
from gateway.errors import AuthError, BufferFull, Draining, GatewayUnavailable, PayloadTooLarge, ValidationFailed
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.reasons import Reason, refusal_reason, rejection_reason, request_refusal_reason
from gateway.telemetry.stats import figures
from tests.support.accounting import assert_accounting

GATEWAY = Path(__file__).resolve().parents[3] / "gateway"
ACCOUNTING = {
    "events_received",
    "events_recovered",
    "events_forwarded",
    "events_handed_off",
    "events_rejected",
    "events_refused",
    "events_dropped",
    "events_in_flight",
    "duplicates",
}
REASON_LABELLED = {"requests_refused", "deadletters", "kafka_deadlettered"}


def test_every_reason_is_snake_case_and_its_own_value() -> None:
    for r in Reason:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", r.value), r
        assert r.name.lower() == r.value


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("InvalidObject", Reason.INVALID_EVENT),
        ("ValidationError", Reason.INVALID_EVENT),
        ("FieldRequired", Reason.INVALID_EVENT),
        ("ForbiddenFieldValue", Reason.FORBIDDEN_FIELD_VALUE),
        ("DecodeError", Reason.DECODE_ERROR),
        ("invalid_event", Reason.INVALID_EVENT),
        ("HTTP_400", Reason.UPSTREAM_REJECTED),
        ("SomethingNew", Reason.UPSTREAM_REJECTED),
        (None, Reason.UPSTREAM_REJECTED),
    ],
)
def test_pangea_codes_map_to_the_vocabulary_in_one_place(code: str | None, reason: Reason) -> None:
    assert rejection_reason(code) is reason


def test_refusals_name_their_cause_in_the_vocabulary() -> None:
    assert refusal_reason(BufferFull("full")) is Reason.BUFFER_FULL
    assert refusal_reason(Draining("draining")) is Reason.DRAINING
    assert refusal_reason(GatewayUnavailable("spool")) is Reason.UNAVAILABLE
    assert refusal_reason(SpoolUnavailable("disk full, or a Kafka buffer's brokers away")) is Reason.UNAVAILABLE
    assert refusal_reason(asyncio.CancelledError()) is Reason.CANCELLED
    assert request_refusal_reason(AuthError("no")) is Reason.AUTH
    assert request_refusal_reason(PayloadTooLarge("big")) is Reason.TOO_LARGE
    assert request_refusal_reason(ValidationFailed("bad")) is Reason.BAD_REQUEST


def _labels_calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """``<...>.<metric>.labels(...)`` calls: (metric attribute name, call)."""
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "labels"
            and isinstance(node.func.value, ast.Attribute)
        ):
            out.append((node.func.value.attr, node))
    return out


def test_the_accounting_terms_are_counted_only_by_account_and_reason_labels_come_from_the_vocabulary() -> None:
    """A term counted elsewhere could skip the in-flight gauge; a free-text reason could leave the vocabulary."""
    stray: list[str] = []
    free_text: list[str] = []
    for path in sorted(GATEWAY.rglob("*.py")):
        rel = path.relative_to(GATEWAY.parent)
        for metric, call in _labels_calls(ast.parse(path.read_text(), str(path))):
            where = f"{rel}:{call.lineno} {metric}"
            if metric in ACCOUNTING and rel.as_posix() != "gateway/telemetry/metrics.py":
                stray.append(where)
            if metric in REASON_LABELLED and call.args:
                reason = call.args[-1]
                literal = isinstance(reason, ast.Constant) and reason.value in {r.value for r in Reason}
                from_vocabulary = isinstance(reason, ast.Attribute) and reason.attr in ("value", "reason")
                if not (literal or from_vocabulary):
                    free_text.append(where)
    assert stray == [], "count through Metrics.account(...) instead"
    assert free_text == [], "reason labels must be Reason values"


def test_the_equation_check_names_a_reason_outside_the_vocabulary() -> None:
    m = Metrics()
    acct = m.account("sdk", "default")
    acct.received(5)
    acct.forwarded(3)
    acct.rejected("upstream", Reason.INVALID_EVENT, 1)
    m.requests_refused.labels("sdk", "BufferFull").inc()  # the old exception-name label
    with pytest.raises(AssertionError, match=r"(?s)outside the vocabulary: \['BufferFull'\].*in_flight"):
        assert_accounting(generate_latest(m.registry).decode())
    acc = assert_accounting(generate_latest(m.registry).decode().replace("BufferFull", "buffer_full"))
    assert acc[("sdk", "default")]["in_flight"] == 1  # 5 received, 3 forwarded, 1 rejected


def test_status_and_the_stats_line_show_events_handed_off_to_a_kafka_buffer_per_destination() -> None:
    m = Metrics()
    m.account("sdk", "default").received(4)
    m.account("sdk", "default").handed_off(3)
    m.account("accepted", "default").received(3)
    m.account("accepted", "default").forwarded(3)
    report = figures(m.registry, ["sdk", "accepted"], ["default"])
    assert report["destinations"]["default"]["handed_off"] == 3
    assert report["destinations"]["default"]["delivered"] == 3
    assert report["sources"]["sdk"]["received"] == 4
    acc = assert_accounting(generate_latest(m.registry).decode())
    assert acc[("sdk", "default")]["in_flight"] == 1  # 4 received, 3 handed off
