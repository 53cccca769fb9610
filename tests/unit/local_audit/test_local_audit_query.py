"""Search query syntax and DateTimeRel parsing of the local audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.local_audit.query import QueryError, Term, is_rfc3339, parse_query, parse_time

FIELDS = {"actor", "action", "message", "target"}


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("", []),
        ("   ", []),
        ("sent", [Term(None, "sent")]),
        ("actor:alice", [Term("actor", "alice")]),
        ('actor:"Jane Doe" target:cosmos', [Term("actor", "Jane Doe"), Term("target", "cosmos")]),
        ('"viewed x-ray"', [Term(None, "viewed x-ray")]),
        ("actor:alice target:bob sent", [Term("actor", "alice"), Term("target", "bob"), Term(None, "sent")]),
        (r'message:"say \"hi\" \\ there"', [Term("message", 'say "hi" \\ there')]),
        ('""', []),
        (":colon", [Term(None, ":colon")]),
        ("actor:a:b", [Term("actor", "a:b")]),
        ('message:""', [Term("message", "")]),
        ('actor:"" sent', [Term("actor", ""), Term(None, "sent")]),
    ],
)
def test_queries_split_into_terms(query: str, terms: list[Term]) -> None:
    assert parse_query(query, FIELDS) == terms


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("colour:red", "unknown field"),
        ('actor:"Jane', "unterminated"),
        ('"open', "unterminated"),
        ("actor:", "empty value"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(query: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(query, FIELDS)


NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("1day", NOW - timedelta(days=1)),
        ("120min", NOW - timedelta(minutes=120)),
        ("2h", NOW - timedelta(hours=2)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2months", NOW - timedelta(days=60)),
        ("1w", NOW - timedelta(days=7)),
        ("2022-01-02T01:02:03Z", datetime(2022, 1, 2, 1, 2, 3, tzinfo=UTC)),
        ("2022-01-02T01:02:03", datetime(2022, 1, 2, 1, 2, 3, tzinfo=UTC)),
        ("2022-01-02T01:02:03.5+02:00", datetime(2022, 1, 1, 23, 2, 3, 500000, tzinfo=UTC)),
        ("2022-1-2T1:2:3-0130", datetime(2022, 1, 2, 2, 32, 3, tzinfo=UTC)),
    ],
)
def test_times_parse_as_absolute_or_relative_to_now(value: str, expected: datetime) -> None:
    assert parse_time(value, NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "7 days", "2022-13-01T00:00:00Z", "2022-01-02", "-1d"])
def test_unparseable_times_are_refused(value: str) -> None:
    with pytest.raises(QueryError):
        parse_time(value, NOW)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-11-22T03:04:05.123456Z", True),
        ("2026-11-22t03:04:05z", True),
        ("2024-02-29T00:00:00+01:00", True),
        ("2026-12-31T23:59:60-23:59", True),
        ("2026-02-29T00:00:00Z", False),
        ("2026-04-31T00:00:00Z", False),
        ("2026-13-01T00:00:00Z", False),
        ("2026-01-01T24:00:00Z", False),
        ("2026-01-01 00:00:00Z", False),
        ("2026-01-01T00:00:00", True),  # naive: taken as UTC, as the service does
        ("2026-01-01T00:00:00+2400", False),
        ("not a date", False),
    ],
)
def test_event_timestamps_must_be_rfc3339_date_times_with_naive_ones_as_utc(value: str, ok: bool) -> None:
    assert is_rfc3339(value) is ok
