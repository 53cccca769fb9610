"""Issue 17: every vendor mapping keeps the vendor's event id in ``new``, whole, whatever its size."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.normalize.schema import Schema
from gateway.normalize.vendors import VENDORS, new_with_ids
from gateway.normalize.vendors import firehose as firehose_vendor

STANDARD = Schema.standard()
HUGE = {"blob": 'x\n"' * 20_000}  # escapes make its JSON longer than its text

RECORDS: dict[str, tuple[Any, str, str]] = {
    # format: (record, member of `new`, id)
    "auth0": ({"log_id": "L-1", "data": {"type": "s", "details": HUGE}}, "log_id", "L-1"),
    "okta": ({"uuid": "U-1", "eventType": "user.session.start", "outcome": HUGE}, "uuid", "U-1"),
    "github": (
        {"event": "repository", "delivery": "D-1", "payload": {"action": "edited", "hook": HUGE}},
        "X-GitHub-Delivery",
        "D-1",
    ),
    "gitlab": ({"id": 17, "event_type": "member_created", "details": HUGE}, "id", "17"),
    "cloudtrail": (
        {"eventID": "E-1", "eventSource": "iam.amazonaws.com", "eventName": "CreateUser", "requestParameters": HUGE},
        "eventID",
        "E-1",
    ),
    "onepassword": ({"uuid": "P-1", "action": "grant", "object_type": "gm", "aux_details": HUGE}, "uuid", "P-1"),
    "splunk_hec": ({"event": {"action": "repo.create", "_document_id": "G-1", **HUGE}}, "_document_id", "G-1"),
}


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_the_vendor_id_is_kept_whole_in_new_even_when_the_rest_is_cut(fmt: str) -> None:
    record, member, vendor_id = RECORDS[fmt]
    fields, _ = VENDORS[fmt].to_event(record)
    out = STANDARD.normalize(fields)  # the default policy rejects oversize: nothing is over
    new = json.loads(out["new"])  # still JSON
    assert new[member] == vendor_id
    assert len(out["new"]) <= 32766 and isinstance(new["truncated"], str)


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_a_small_record_keeps_its_id_beside_the_rest(fmt: str) -> None:
    record, member, vendor_id = RECORDS[fmt]
    small = json.loads(json.dumps(record).replace(json.dumps(HUGE["blob"]), '"b"'))
    fields, _ = VENDORS[fmt].to_event(small)
    new = json.loads(STANDARD.normalize(fields)["new"])
    assert new[member] == vendor_id and "truncated" not in new


def test_firehose_log_lines_keep_cloudwatchs_event_id() -> None:
    record = firehose_vendor.FirehoseRecord(
        "log", {"id": "CW-1", "timestamp": 1718095844000, "message": "m"}, "r:0", {"logGroup": "g", "id": "CW-1"}
    )
    fields, key = firehose_vendor.to_event(record)
    assert key == "r:0" and json.loads(fields["new"]) == {"id": "CW-1", "logGroup": "g"}


def test_new_with_ids_keeps_nothing_it_was_not_given() -> None:
    assert new_with_ids({}, {"id": None}) is None
    assert new_with_ids({"a": 1}, {"id": None}) == '{"a":1}'
