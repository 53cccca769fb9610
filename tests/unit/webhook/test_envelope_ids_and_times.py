"""The envelope's request ids and times (made twice per request, so made cheaply: issue 18)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

from gateway.sources.webhook.envelope import new_request_id, now_rfc3339


def test_request_ids_are_pangea_shaped_distinct_and_use_the_whole_alphabet_evenly() -> None:
    ids = [new_request_id() for _ in range(4000)]
    assert all(re.fullmatch(r"prq_[a-z2-7]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(i[4:] for i in ids))
    assert set(counts) == set("abcdefghijklmnopqrstuvwxyz234567")
    # 128,000 characters over 32: 4,000 each on average; a skewed mapping would be far off.
    assert max(counts.values()) < 4600 and min(counts.values()) > 3400


def test_now_is_rfc3339_utc_with_microseconds_and_agrees_with_the_clock() -> None:
    before = datetime.now(UTC)
    texts = [now_rfc3339() for _ in range(1000)]
    after = datetime.now(UTC)
    for text in texts:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert before.replace(microsecond=0) <= stamp <= after
    assert texts == sorted(texts)
